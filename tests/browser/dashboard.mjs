// Opens the mcp-status dashboard through Traefik in Debian's Chromium, supplies a token, and
// waits for the demo MCP's row to change when its health flips. Run by tests/tests/browser.rs.
import { chromium } from "playwright-core";

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
const url = need("DASHBOARD_URL");
const token = need("TOKEN");
const down = need("FLIP_DOWN_URL");
const up = need("FLIP_UP_URL");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const row = (state) => `tr[data-mcp="demo_mcp"] td.${state}`;
try {
  // 1. Token pasted into the form: subprotocols ["jwt-auth", token].
  const page = await browser.newPage();
  page.on("console", (m) => console.error("console:", m.text()));
  await page.goto(url);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
  await page.waitForSelector(row("CLOSED"), { timeout: 15000 });
  await fetch(down, { method: "POST" });
  await page.waitForSelector(row("OPEN"), { timeout: 15000 });
  await page.waitForSelector("#log li", { timeout: 5000 });
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  await fetch(up, { method: "POST" });
  await page.waitForSelector(row("CLOSED"), { timeout: 15000 });
  await page.close();

  // 2. Token in the URL fragment, exchanged for a one-time ticket; the fragment is cleared.
  const second = await browser.newPage();
  await second.goto(`${url}#token=${encodeURIComponent(token)}&ticket=1`);
  await second.waitForSelector("#conn[data-state=connected]", { timeout: 15000 });
  await second.waitForSelector(`tr[data-mcp="demo_mcp"]`, { timeout: 15000 });
  if (second.url().includes("token=")) throw new Error("token left in the URL");
  console.log("ok: dashboard connected, row changed on flip, ticket path works");
} finally {
  await browser.close();
}
