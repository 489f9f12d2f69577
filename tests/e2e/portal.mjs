// The customer portal in a real browser (Debian's chromium through playwright-core), against
// a running `omi` with a fake Postmark; both addresses, the customer's email and one of its
// keys come from the environment; it creates, revokes and rotates keys. Launched by
// tests/api/portal.rs. Fails on any request to another host, any CSP violation or page error,
// and any step that does not show what it should.
import { chromium } from "playwright-core";
import path from "node:path";

const base = process.env.OMI_BASE_URL;
const postmark = process.env.OMI_POSTMARK_URL;
const email = process.env.OMI_CUSTOMER_EMAIL;
const key = process.env.OMI_CUSTOMER_KEY;
const shots = process.env.OMI_SCREENSHOTS;
if (!base || !postmark || !email || !key || !shots) {
  console.error("set OMI_BASE_URL, OMI_POSTMARK_URL, OMI_CUSTOMER_EMAIL, OMI_CUSTOMER_KEY and OMI_SCREENSHOTS");
  process.exit(2);
}
const origin = new URL(base).origin;
const problems = [];

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
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
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().includes("status of 410")) {
      problems.push(`console error (a CSP violation?): ${message.text()}`);
    }
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  console.log(`screenshot ${name}.png`);
}

function chat(withKey) {
  return fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${withKey}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello" }] }),
  });
}

/// The sign-in link in the newest email the fake Postmark received for `to`.
async function linkFromPostmark(to, already) {
  for (let i = 0; i < 100; i++) {
    const sent = await (await fetch(`${postmark}/sent`)).json();
    const links = sent.filter((m) => m.To === to).map((m) => m.TextBody.match(/https?:\/\/\S+\/portal\/login\/[0-9a-f]{64}/)?.[0]);
    const fresh = links.filter((l) => l && !already.includes(l));
    if (fresh.length > 0) {
      return fresh[fresh.length - 1];
    }
    await sleep(100);
  }
  throw new Error(`no sign-in email for ${to}`);
}

/// Whether the fake Postmark received the rotation email handing `newKey` to `to`.
async function emailedKey(to, newKey) {
  for (let i = 0; i < 100; i++) {
    const sent = await (await fetch(`${postmark}/sent`)).json();
    if (sent.some((m) => m.To === to && m.Subject === "Your OMI API key was replaced" && m.TextBody.includes(newKey))) {
      return true;
    }
    await sleep(100);
  }
  return false;
}

async function requestLink(page, to) {
  await page.goto(`${base}/portal/login`);
  await page.fill("#email", to);
  await page.click("button[type=submit]");
  check((await page.textContent("main")).includes("if that address has an account, a link is on its way"), "the same answer");
}

try {
  // Three requests through the mock upstream, which the usage page must show.
  for (let i = 0; i < 3; i++) {
    const response = await chat(key);
    check(response.status === 200, `a chat request: ${response.status}`);
  }

  const page = await newPage({ width: 1280, height: 900 });
  await page.goto(`${base}/portal`);
  check(page.url().endsWith("/portal/login"), `no session: expected the sign-in page, got ${page.url()}`);
  await shot(page, "portal-login");
  await requestLink(page, email);
  await shot(page, "portal-link-sent");
  // The email links to the operator's public URL; here the server listens elsewhere.
  const link = `${base}${new URL(await linkFromPostmark(email, [])).pathname}`;
  await page.goto(link);
  check(page.url() === `${base}/portal`, `the link signs in: ${page.url()}`);

  // Usage: the three requests (the accountant books in batches: reload until they are in).
  let tiles = "";
  for (let i = 0; i < 50 && !tiles.includes("Requests3"); i++) {
    if (i > 0) {
      await sleep(200);
      await page.reload();
    }
    tiles = (await page.textContent("dl.tiles")).replace(/\s+/g, "");
  }
  check(tiles.includes("Requests3"), `usage shows the three requests: ${tiles}`);
  check(await page.locator("tbody >> text=gpt-4o-mini").count() === 1, "usage by model lists the model");
  check(await page.locator("svg.chart-svg path.line").count() >= 2, "the daily charts are drawn");
  await shot(page, "portal-usage");

  // Keys: create one (shown once), it works; revoke it, the gateway refuses it.
  await page.click("nav >> text=Keys");
  await page.fill("#name", "browser test");
  await page.click("text=Create a pro key");
  const created = (await page.textContent("#new-key")).trim();
  check(/^omi_[0-9A-Za-z]{38}$/.test(created), `a new key is shown: ${created}`);
  await shot(page, "portal-key-created");
  check((await chat(created)).status === 200, "the new key works");
  await page.click("text=Back to your keys");
  const prefix = created.slice(0, 12);
  await Promise.all([page.waitForURL(`${base}/portal/keys`), page.click(`button[aria-label="Revoke ${prefix}"]`)]);
  await shot(page, "portal-keys");
  const refused = (await chat(created)).status;
  check(refused === 401 || refused === 403, `the revoked key is refused: ${refused}`);
  check((await chat(key)).status === 200, "the other key still works");

  // Rotate the first key, its old self refused now: the new key is shown once and works.
  const keyPrefix = key.slice(0, 12);
  await page.selectOption(`select[aria-label="When the old key ${keyPrefix} stops working"]`, "0");
  await Promise.all([page.waitForURL(`${base}/portal/keys/**/rotate`), page.click(`button[aria-label="Rotate ${keyPrefix}"]`)]);
  const rotated = (await page.textContent("#new-key")).trim();
  check(/^omi_[0-9A-Za-z]{38}$/.test(rotated) && rotated !== key, `a replacement key is shown: ${rotated}`);
  check((await page.textContent("#replaced")).includes(`${keyPrefix}…, which stops working now`), "it names the key it replaces");
  await shot(page, "portal-key-rotated");
  check((await chat(rotated)).status === 200, "the replacement key works");
  const old = (await chat(key)).status;
  check(old === 401, `the rotated-away key is refused: ${old}`);
  check(await emailedKey(email, rotated), "the rotation is emailed with the replacement key");
  await page.click("text=Back to your keys");

  // Quickstart names the working key by its prefix; billing lists what is on record.
  await page.click("nav >> text=Quickstart");
  check((await page.textContent("main")).includes(`${rotated.slice(0, 12)}…`), "the quickstart shows the key prefix");
  await shot(page, "portal-quickstart");
  await page.click("nav >> text=Billing");
  check(await page.locator("text=No purchases on record.").count() === 1, "billing: nothing bought in this test");
  await shot(page, "portal-billing");

  // A phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/portal`);
  await shot(page, "portal-phone-usage");

  // Sign out: the session is gone, and the used link is refused.
  await Promise.all([page.waitForURL(`${base}/portal/login`), page.click("text=Sign out")]);
  await page.goto(`${base}/portal/keys`);
  check(page.url().endsWith("/portal/login"), "signed out");
  await page.goto(link);
  check((await page.textContent("main")).includes("used or has expired"), "a used link is refused");
} catch (error) {
  problems.push(error.stack || String(error));
} finally {
  await browser.close();
}

if (problems.length > 0) {
  console.error(`FAILED:\n - ${problems.join("\n - ")}`);
  process.exit(1);
}
console.log("portal e2e: ok");
