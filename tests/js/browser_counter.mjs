// Headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) opens the demo's
// live counter page and checks that a change made outside the browser shows up.
//   node browser_counter.mjs URL SCREENSHOT.png
// Steps:
//   "page-live" {value}  -> the test POSTs /api/counter/increment -> reply {value, delivered}
//   then the page must show reply.value; then the page's own +1 button is clicked and the
//   page must show reply.value + 1;
//   "clicked" {value}    -> the test checks the server's counter -> reply {value}
import { launchChromium } from "./browser.mjs";
import { extraArgs, log, run, serverUrl, step, withTimeout } from "./lib.mjs";


run(async (context) => {
  const url = serverUrl();
  const screenshot = extraArgs()[0];
  if (!screenshot) throw new Error("usage: node browser_counter.mjs URL SCREENSHOT.png");
  const problems = [];
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
    page.setDefaultTimeout(10000);
    page.on("console", (msg) => {
      log(`[console.${msg.type()}] ${msg.text()}`);
      if (msg.type() === "error") problems.push(`console.error: ${msg.text()}`);
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    context.partial.problems = problems;

    const started = Date.now();
    const response = await page.goto(`${url}/`, { waitUntil: "load", timeout: 15000 });
    if (!response || response.status() !== 200) throw new Error(`GET / answered ${response && response.status()}`);
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 10000 });
    const liveMs = Date.now() - started;
    const initial = (await page.locator("#value").textContent()).trim();
    context.partial.initial = initial;

    const outside = await step("page-live", { value: initial });
    const changeAsked = Date.now();
    await page.waitForFunction(
      (expected) => document.getElementById("value").textContent.trim() === expected,
      String(outside.value),
      { timeout: 5000, polling: 20 },
    );
    const outsideMs = Date.now() - changeAsked;
    await page.screenshot({ path: screenshot, timeout: 10000 });

    await page.locator("#increment").click();
    await page.waitForFunction(
      (expected) => document.getElementById("value").textContent.trim() === expected,
      String(outside.value + 1),
      { timeout: 5000, polling: 20 },
    );
    const afterClick = (await page.locator("#value").textContent()).trim();
    const server = await step("clicked", { value: afterClick });

    return {
      initial,
      liveMs,
      outsideValue: outside.value,
      outsideDelivered: outside.delivered,
      outsideMs,
      afterClick,
      serverAfterClick: server.value,
      status: (await page.locator("#status").textContent()).trim(),
      screenshot,
      problems,
    };
  } finally {
    await withTimeout(browser.close(), 10000, "closing the browser").catch((error) => log(String(error)));
  }
}, { limitMs: 90000 });
