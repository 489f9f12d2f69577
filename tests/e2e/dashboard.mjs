// The dashboard in a real browser (Debian's chromium through playwright-core), against a
// running `omi` whose address and admin key come from the environment. Launched by
// tests/api/dashboard.rs. Fails on any request to another host, any CSP violation or
// page error, and any step that does not show what it should.
import { chromium } from "playwright-core";
import path from "node:path";

const base = process.env.OMI_BASE_URL;
const adminKey = process.env.OMI_ADMIN_KEY;
const shots = process.env.OMI_SCREENSHOTS;
if (!base || !adminKey || !shots) {
  console.error("set OMI_BASE_URL, OMI_ADMIN_KEY and OMI_SCREENSHOTS");
  process.exit(2);
}
const origin = new URL(base).origin;
const problems = [];

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});

async function newPage(viewport) {
  const context = await browser.newContext({ viewport });
  // Every request must stay on the server under test: no CDN, font or tracker.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("data:") || new URL(url).origin === origin) {
      return route.continue();
    }
    problems.push(`request to another host: ${url}`);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("dialog", (dialog) => dialog.accept());
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") {
      problems.push(`console error (a CSP violation?): ${message.text()}`);
    }
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  console.log(`screenshot ${name}.png`);
}

async function signIn(page) {
  await page.goto(`${base}/admin`);
  check(page.url().endsWith("/admin/login"), `no session: expected the sign-in page, got ${page.url()}`);
  await page.fill("#key", adminKey);
  await Promise.all([page.waitForURL(`${base}/admin`), page.click("button[type=submit]")]);
}

try {
  const page = await newPage({ width: 1280, height: 900 });
  await page.goto(`${base}/admin/login`);
  await shot(page, "login");
  await signIn(page);

  // The overview: the health table and charts drawn from the seeded usage.
  const lines = await page.locator("svg.chart-svg path.line").count();
  check(lines >= 4, `overview: expected chart lines, found ${lines}`);
  const drawn = await page.locator("svg.chart-svg path.line").first().getAttribute("d");
  check(drawn && drawn.includes("L"), "overview: the requests chart has a line");
  check(await page.getByRole("cell", { name: "Latency p95" }).count() === 0, "measures are row headers");
  check(await page.getByRole("rowheader", { name: "Latency p95" }).count() === 1, "health table has p95");
  check(await page.locator(".alerts .notice.error").count() === 1, "the firing alert tops the overview");
  await shot(page, "overview");
  await page.click("text=Last 24 hours, by hour");
  await page.waitForURL(`${base}/admin?range=day`);
  await shot(page, "overview-day");

  // Create a key: it is shown once.
  await page.click("nav >> text=Keys & customers");
  await page.fill("input[name=email]", "e2e@example.com");
  await page.fill("input[name=name]", "browser test");
  await page.click("text=Create key");
  const key = (await page.textContent("#new-key")).trim();
  check(/^omi_[0-9A-Za-z]{38}$/.test(key), `a new key is shown: ${key}`);
  await shot(page, "key-created");
  let models = await fetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  check(models.status === 200, `the new key works: ${models.status}`);

  // Revoke it (the confirmation dialog is accepted); the gateway refuses it.
  await page.goto(`${base}/admin/keys?q=e2e%40example.com`);
  const prefix = key.slice(0, 12);
  await Promise.all([page.waitForURL(/done=revoke/), page.click(`button[aria-label="Revoke ${prefix}"]`)]);
  check((await page.textContent(".notice.success")).includes(`Revoked ${prefix}`), "revocation is confirmed");
  check(await page.locator("tbody .badge.revoked").count() === 1, "the key shows as revoked");
  await shot(page, "keys");
  models = await fetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  check(models.status === 403, `the revoked key is refused: ${models.status}`);

  // Money: the margins chart and table, sorted by cost.
  await page.click("nav >> text=Money");
  const bars = await page.locator("svg.chart-svg rect.bar").count();
  check(bars >= 2, `money: expected revenue and cost bars, found ${bars}`);
  await page.click("thead >> text=Upstream cost");
  check(page.url().includes("sort=cost"), "sorting is a link");
  await shot(page, "money");

  // A customer, and the webhook deliveries.
  await page.click("tbody >> text=grace@example.com");
  check(await page.locator("text=Recent requests").count() === 1, "customer page");
  await shot(page, "customer");
  await page.click("nav >> text=Webhooks");
  check(await page.locator("tbody >> text=order_created").count() >= 1, "the order delivery is listed");
  await shot(page, "webhooks");

  // The Hawk's alerts, the Sentinel's findings and the shield's removals.
  await page.click("nav >> text=Alerts");
  check(await page.locator("tbody tr.firing").count() === 1, "the firing alert stands out");
  await shot(page, "alerts");
  await page.click("nav >> text=Sentinel findings");
  check(await page.locator("tbody >> text=ignore previous instructions").count() === 1, "the finding is listed");
  await shot(page, "findings");
  await page.click("nav >> text=Shield removals");
  check(await page.locator("tbody >> text=aws_key x1").count() === 1, "the removal is listed");
  await shot(page, "shield");

  // Keyboard: the skip link is the first stop and leads to the content.
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.textContent) === "Skip to content", "skip link first");

  // A phone.
  const phone = await newPage({ width: 390, height: 844 });
  await signIn(phone);
  await shot(phone, "phone-overview");
  await phone.goto(`${base}/admin/money`);
  await shot(phone, "phone-money");

  // Sign out: the session is gone.
  await Promise.all([page.waitForURL(`${base}/admin/login`), page.click("text=Sign out")]);
  await page.goto(`${base}/admin/keys`);
  check(page.url().endsWith("/admin/login"), "signed out");
} catch (error) {
  problems.push(error.stack || String(error));
} finally {
  await browser.close();
}

if (problems.length > 0) {
  console.error(`FAILED:\n - ${problems.join("\n - ")}`);
  process.exit(1);
}
console.log("dashboard e2e: ok");
