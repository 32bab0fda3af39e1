// Drives the mcp-status dashboard through Traefik in Debian's Chromium. Run by
// tests/tests/browser.rs, which starts the stack (demo MCP polled every 100 ms).
//
//  1. admin token pasted into the form: counters from initial_status, "last check" moving with
//     health_check messages, row changes on a flip, Disable/Enable buttons, no console errors
//     (favicon included);
//  2. token in the URL fragment, exchanged for a one-time ticket; the fragment is cleared;
//  3. a garbage token: "token rejected" with the server's reason, and no retry loop;
//  4. a viewer token: "your role may not view MCP status", no retry loop; a new token recovers;
//  5. /api/v1/me answering 429 (Retry-After: 2) then 503, mocked in the browser: the page waits
//     out Retry-After, then backs off, then connects;
//  6. a session revoked while connected (an admin's POST /auth/revocations naming the token's
//     jti): closed 4001 Token revoked within 1 s, "session revoked", and no reconnect loop.
import { chromium } from "playwright-core";

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
const url = need("DASHBOARD_URL");
const token = need("TOKEN");
const viewer = need("VIEWER_TOKEN");
const down = need("FLIP_DOWN_URL");
const up = need("FLIP_UP_URL");
const revokedToken = need("REVOKED_TOKEN");
const revokedJti = need("REVOKED_JTI");
const admin = need("ADMIN_TOKEN");
const origin = new URL(url).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const row = (state) => `tr[data-mcp="demo_mcp"] td.${state}`;
const cell = (col) => `tr[data-mcp="demo_mcp"] td[data-col="${col}"]`;
const check = (cond, what) => { if (!cond) throw new Error(what); };

// A page that counts its WebSocket attempts and /api/v1/me fetches, and keeps console errors.
async function watched() {
  const page = await browser.newPage();
  const seen = { sockets: 0, me: [], errors: [] };
  page.on("websocket", () => { seen.sockets += 1; });
  page.on("request", (r) => { if (new URL(r.url()).pathname === "/api/v1/me") seen.me.push(Date.now()); });
  page.on("console", (m) => {
    console.error(`console.${m.type()}:`, m.text());
    if (m.type() === "error") seen.errors.push(m.text());
  });
  page.on("pageerror", (e) => { console.error("pageerror:", e.message); seen.errors.push(e.message); });
  return { page, seen };
}

// For refused tokens: the message stays, and nothing is retried while we watch (a bounded
// observation: absence can't be waited for). By default the page never got a socket.
async function noRetryLoop(page, seen, what, { sockets = 0, state = "refused" } = {}) {
  await page.waitForTimeout(2500);
  check(seen.sockets === sockets, `${what}: ${seen.sockets} WebSocket attempt(s), want ${sockets}`);
  check(seen.me.length === 1, `${what}: ${seen.me.length} /api/v1/me fetches`);
  const shown = await page.getAttribute("#conn", "data-state");
  check(shown === state, `${what}: shown as ${shown}, not ${state}`);
}

try {
  // 1. Token pasted into the form: subprotocols ["jwt-auth", token].
  {
    const { page, seen } = await watched();
    await page.goto(url);
    await page.fill("#token", token);
    await page.click("button[type=submit]");
    await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
    await page.waitForSelector(row("CLOSED"), { timeout: 15000 });
    // The counters come with initial_status (system_metrics is every 30 s): read at once.
    const counters = await page.evaluate(() =>
      ["m-active", "m-total", "m-open"].map((id) => document.getElementById(id).textContent));
    check(JSON.stringify(counters) === '["1","1","0"]', `header counters after connect: ${counters}`);
    check(await page.isVisible(`tr[data-mcp="demo_mcp"] button[data-action=disable]`), "no Disable button for an admin");
    check(await page.textContent("#whoami") !== "", "no user shown");

    // "Last check" moves with every health_check (second resolution, polled every 100 ms).
    await page.waitForFunction((sel) => document.querySelector(sel).dataset.at !== "", cell("last"), { timeout: 5000 });
    const first = { at: await page.getAttribute(cell("last"), "data-at"), text: await page.textContent(cell("last")) };
    await page.waitForFunction(([sel, at, text]) => {
      const td = document.querySelector(sel);
      return td.dataset.at !== at && td.textContent !== text;
    }, [cell("last"), first.at, first.text], { timeout: 5000 });
    await page.waitForSelector(row("healthy"), { timeout: 5000 });

    await fetch(down, { method: "POST" });
    await page.waitForSelector(row("OPEN"), { timeout: 15000 });
    await page.waitForSelector(row("unhealthy"), { timeout: 5000 });
    await page.waitForFunction(() => document.getElementById("m-open").textContent === "1", null, { timeout: 5000 });
    await page.waitForSelector("#log li", { timeout: 5000 });
    await fetch(up, { method: "POST" });
    await page.waitForSelector(row("CLOSED"), { timeout: 15000 });
    await page.waitForSelector(row("healthy"), { timeout: 5000 });
    await page.waitForSelector(row("active"), { timeout: 15000 });

    // Admin controls: Disable, then Enable, through Traefik (gatepass allows admins).
    await page.click(`tr[data-mcp="demo_mcp"] button[data-action=disable]`);
    await page.waitForSelector(row("inactive"), { timeout: 10000 });
    await page.waitForSelector(`#notice[data-kind=ok]:has-text("demo_mcp disabled")`, { timeout: 5000 });
    // The socket brings the change too, with its reason.
    await page.waitForSelector(`#log li:has-text("active → inactive (Manually disabled")`, { timeout: 5000 });
    await page.waitForFunction(() => document.getElementById("m-active").textContent === "0", null, { timeout: 5000 });
    check(await page.isDisabled(`tr[data-mcp="demo_mcp"] button[data-action=disable]`), "Disable still enabled");
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    await page.click(`tr[data-mcp="demo_mcp"] button[data-action=enable]`);
    await page.waitForSelector(row("active"), { timeout: 10000 });
    await page.waitForSelector(`#notice[data-kind=ok]:has-text("demo_mcp enabled")`, { timeout: 5000 });
    await page.waitForFunction(() => document.getElementById("m-active").textContent === "1", null, { timeout: 5000 });
    check(seen.errors.length === 0, `console errors: ${seen.errors.join(" | ")}`);
    await page.close();
  }

  // 2. Token in the URL fragment, exchanged for a one-time ticket; the fragment is cleared.
  {
    const { page } = await watched();
    await page.goto(`${url}#token=${encodeURIComponent(token)}&ticket=1`);
    await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
    await page.waitForSelector(`tr[data-mcp="demo_mcp"]`, { timeout: 15000 });
    if (page.url().includes("token=")) throw new Error("token left in the URL");
    await page.close();
  }

  // 3. A garbage token: refused with gatepass's reason, never retried.
  {
    const { page, seen } = await watched();
    await page.goto(`${url}#token=not-a-jwt`);
    await page.waitForSelector(`#notice[data-kind=error]:has-text("token rejected")`, { timeout: 10000 });
    const text = await page.textContent("#notice");
    check(/token rejected: \S/.test(text), `no reason in "${text}"`);
    await noRetryLoop(page, seen, "garbage token");
    await page.close();
  }

  // 4. A viewer token: forbidden, never retried; a new token recovers.
  {
    const { page, seen } = await watched();
    await page.goto(`${url}#token=${encodeURIComponent(viewer)}`);
    await page.waitForSelector(`#notice[data-kind=error]:has-text("your role may not view MCP status")`, { timeout: 10000 });
    await noRetryLoop(page, seen, "viewer token");
    check(!(await page.isVisible("button[data-action]")), "admin buttons shown to a viewer");
    await page.fill("#token", token);
    await page.click("button[type=submit]");
    await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
    check(await page.textContent("#notice") === "", "the refusal message outlived the new token");
    await page.close();
  }

  // 5. 429 with Retry-After, then 503, then the real answer (mocked in the browser).
  {
    const { page, seen } = await watched();
    let calls = 0;
    await page.route("**/api/v1/me", (route) => {
      calls += 1;
      if (calls === 1) {
        return route.fulfill({ status: 429, headers: { "Retry-After": "2" }, contentType: "application/json",
          body: '{"error":"rate_limited","error_description":"too many failed attempts from this address"}' });
      }
      if (calls === 2) return route.fulfill({ status: 503, contentType: "application/json", body: '{"error":"temporarily_unavailable"}' });
      return route.continue();
    });
    await page.goto(`${url}#token=${encodeURIComponent(token)}`);
    await page.waitForSelector(`#notice[data-kind=warn]:has-text("too many attempts, retry in 2 s")`, { timeout: 10000 });
    check(seen.sockets === 0, "connected despite 429");
    await page.waitForSelector(`#notice[data-kind=warn]:has-text("service not ready, retrying")`, { timeout: 10000 });
    check(seen.me[1] - seen.me[0] >= 1900, `retried ${seen.me[1] - seen.me[0]} ms after a 429 with Retry-After: 2`);
    await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
    check(seen.me.length === 3 && seen.sockets === 1, `${seen.me.length} fetches, ${seen.sockets} sockets`);
    await page.close();
  }
  // 6. Revoked while connected: the server closes 4001 Token revoked; no reconnect.
  {
    const { page, seen } = await watched();
    await page.goto(`${url}#token=${encodeURIComponent(revokedToken)}`);
    await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
    const r = await fetch(`${origin}/auth/revocations`, {
      method: "POST",
      headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" },
      body: JSON.stringify({ jti: revokedJti }),
    });
    const revokedAt = Date.now();
    const body = await r.json();
    check(r.status === 200 && body.kind === "jti" && body.value === revokedJti,
      `revocation answered ${r.status} ${JSON.stringify(body)}`);
    await page.waitForSelector(`#notice[data-kind=error]:has-text("session revoked: sign in again for a new token")`, { timeout: 5000 });
    const took = Date.now() - revokedAt;
    console.error(`revocation -> "session revoked" shown: ${took} ms`);
    check(took < 1000, `"session revoked" shown ${took} ms after the revocation`);
    const conn = await page.textContent("#conn");
    check(conn === "closed 4001 Token revoked", `connection shown as "${conn}"`);
    await noRetryLoop(page, seen, "revoked session", { sockets: 1, state: "closed" });
    await page.close();
  }
  console.log("ok: dashboard connected, row changed on flip, ticket path works, refusals shown, admin controls work, revocation shown");
} finally {
  await browser.close();
}
