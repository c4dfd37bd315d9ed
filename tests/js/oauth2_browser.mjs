// Headless Chromium clicks "Sign in" on examples/oauth2_login.py's page: the unmodified SDK
// opens a real popup (window.open), the stand-in provider approves and sends the popup to
// /api/oauth2-redirect, the @oauth2 event reaches the page's realtime client and the page
// shows the signed-in record.
//   node oauth2_browser.mjs URL SCREENSHOT.png
import { launchChromium } from "./browser.mjs";
import { extraArgs, log, run, serverUrl } from "./lib.mjs";

run(async (context) => {
  const url = serverUrl();
  const screenshot = extraArgs()[0];
  if (!screenshot) throw new Error("usage: node oauth2_browser.mjs URL SCREENSHOT.png");
  const problems = [];
  const popupRequests = [];
  context.partial.problems = problems;
  context.partial.popupRequests = popupRequests;
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
    page.setDefaultTimeout(10000);
    page.on("console", (msg) => {
      log(`[console.${msg.type()}] ${msg.text()}`);
      if (msg.type() === "error") problems.push(`console.error: ${msg.text()}`);
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    const response = await page.goto(`${url}/`, { waitUntil: "load", timeout: 15000 });
    if (!response || response.status() !== 200) throw new Error(`GET / answered ${response && response.status()}`);

    page.context().on("request", (request) => {
      if (request.frame().page() === page) return;
      for (let hop = request; hop; hop = hop.redirectedFrom()) popupRequests.push(hop.url());
    });
    const popupOpened = page.waitForEvent("popup", { timeout: 10000 });
    await page.locator("#signin").click();
    await popupOpened;
    await page.locator('#result[data-state]').waitFor({ timeout: 15000 });
    const state = await page.locator("#result").getAttribute("data-state");
    const text = await page.locator("#result").textContent();
    await page.screenshot({ path: screenshot, timeout: 10000 });
    return {
      state,
      auth: state === "signed-in" ? JSON.parse(text) : text,
      popupRequests,
      problems,
    };
  } finally {
    await browser.close();
  }
}, { limitMs: 80000 });
