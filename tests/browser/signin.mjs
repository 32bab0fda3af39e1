// Signing in to the mcp-status dashboard in Debian's Chromium, through the real Traefik stack,
// gatepass with [signin] and the real OpenID Provider of tests/oidc. Run by
// tests/tests/browser.rs. Each step is saved as a screenshot in $SCREENSHOTS.
//
//  1. open / : the provider's login page; sign in as alice: back on the dashboard, connected,
//     the MCP rows there, a circuit event arrives, the page names alice;
//  2. Sign out: the provider's logout page, confirmed; back at / the login page again;
//  3. bob (viewer): the dashboard says his role may not view, with a Sign-out link;
//  4. alice again; a back-channel logout from the provider while her dashboard is open: the
//     page says "signed out" within 2 s, with a Sign-in link, and does not reconnect.
import { chromium } from "playwright-core";

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
const url = need("DASHBOARD_URL");
const issuer = need("OIDC_ISSUER");
const down = need("FLIP_DOWN_URL");
const up = need("FLIP_UP_URL");
const shots = need("SCREENSHOTS");
const users = JSON.parse(need("USERS"));
const check = (cond, what) => { if (!cond) throw new Error(what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = 0;
const shot = async (page, name) => {
  step += 1;
  await page.screenshot({ path: `${shots}/${String(step).padStart(2, "0")}-${name}.png`, fullPage: true });
};

// A fresh browser profile (no cookies), its console errors kept.
async function fresh() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = { sockets: 0, errors: [] };
  page.on("websocket", () => { seen.sockets += 1; });
  // The dashboard's own errors (the provider's pages are not ours to judge).
  const ours = () => page.url().startsWith(new URL(url).origin);
  page.on("console", (m) => {
    if (m.type() === "error") {
      console.error("console:", page.url(), m.text());
      if (ours()) seen.errors.push(m.text());
    }
  });
  page.on("pageerror", (e) => { console.error("pageerror:", e.message); seen.errors.push(e.message); });
  return { context, page, seen };
}

// At the provider's login page: signs in as `user`, lands back on the dashboard.
async function login(page, user) {
  await page.waitForURL((u) => u.href.startsWith(`${issuer}/interaction/`), { timeout: 15000 });
  check((await page.title()).includes("Sign in"), `the provider's login page: ${await page.title()}`);
  await page.fill("#username", user);
  await page.fill("#password", users[user]);
  await shot(page, `login-${user}`);
  await page.click("#submit");
  await page.waitForURL((u) => u.href === url, { timeout: 15000 });
}

try {
  // 1. alice signs in; the live dashboard.
  const { context, page, seen } = await fresh();
  await page.goto(url);
  await login(page, "alice");
  await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
  await page.waitForSelector(`tr[data-mcp="demo_mcp"] td.CLOSED`, { timeout: 15000 });
  check((await page.textContent("#whoami")).includes("alice"), `the page names ${await page.textContent("#whoami")}`);
  check(await page.isVisible("#signout"), "no Sign-out link");
  check(!(await page.isVisible("#login")), "the token form is shown to a signed-in person");
  await fetch(down, { method: "POST" });
  await page.waitForSelector(`tr[data-mcp="demo_mcp"] td.OPEN`, { timeout: 15000 });
  await page.waitForSelector(`#log li:has-text("circuit_open")`, { timeout: 5000 });
  await fetch(up, { method: "POST" });
  await shot(page, "dashboard-alice");
  await page.waitForSelector(`tr[data-mcp="demo_mcp"] td.CLOSED`, { timeout: 15000 });
  check(seen.errors.length === 0, `console errors: ${seen.errors.join(" | ")}`);

  // 2. Sign out: the provider's logout page, then back at / the login page again.
  await page.click("#signout");
  await page.waitForSelector("#logout-confirm", { timeout: 15000 });
  await shot(page, "provider-logout");
  await page.click("#logout-confirm");
  await page.waitForURL((u) => u.href.startsWith(`${issuer}/interaction/`), { timeout: 15000 });
  check((await page.title()).includes("Sign in"), "not the login page after signing out");
  await shot(page, "signed-out-login-page");
  await context.close();

  // 3. bob may not view: said in words, with a way out.
  {
    const { context, page } = await fresh();
    await page.goto(url);
    await login(page, "bob");
    await page.waitForSelector(`#notice[data-kind=error]:has-text("your role may not view MCP status")`, { timeout: 15000 });
    check((await page.textContent("#notice")).includes("bob (viewer)"), `"${await page.textContent("#notice")}"`);
    check(await page.isVisible(`#notice a:has-text("Sign out")`), "no Sign-out link for bob");
    await shot(page, "bob-may-not-view");
    await context.close();
  }

  // 4. A back-channel logout from the provider while alice's dashboard is open.
  {
    const { context, page, seen } = await fresh();
    await page.goto(url);
    await login(page, "alice");
    await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
    const sockets = seen.sockets;
    const r = await fetch(`${issuer}/test/backchannel`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ sub: "alice", end_session: true }),
    });
    const sent = await r.json();
    const at = Date.now();
    check(r.ok && sent.statuses && sent.statuses.every((s) => s === 200), `back-channel logout: ${JSON.stringify(sent)}`);
    await page.waitForSelector(`#notice[data-kind=error]:has-text("You were signed out")`, { timeout: 5000 });
    const took = Date.now() - at;
    console.error(`back-channel logout -> "signed out" shown: ${took} ms`);
    check(took < 2000, `"signed out" shown ${took} ms after the back-channel logout`);
    check(await page.isVisible(`#notice a:has-text("Sign in")`), "no Sign-in link");
    await shot(page, "signed-out-by-the-provider");
    await page.waitForTimeout(2000); // a bounded look for a reconnect loop (absence can't be awaited)
    check(seen.sockets === sockets, `reconnected ${seen.sockets - sockets} time(s) after signing out`);
    await context.close();
  }
  console.log("ok: signed in, live dashboard, signed out, viewer refused in words, back-channel logout shown");
} finally {
  await browser.close();
}
