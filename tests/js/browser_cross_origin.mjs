// A page on one origin subscribes, with the SDK it loaded, to a broker on another origin (a
// different port): the browser's CORS checks apply to the EventSource GET and to the
// subscription POST (a JSON POST, so preceded by an OPTIONS preflight).
//   node browser_cross_origin.mjs PAGE_URL BROKER_URL
// Steps (only when the subscription succeeded):
//   "subscribed" {clientId} -> test notifies "example" on the broker -> reply {delivered}
import { launchChromium } from "./browser.mjs";
import { extraArgs, log, run, serverUrl, step, withTimeout } from "./lib.mjs";


run(async (context) => {
  const pageUrl = serverUrl();
  const brokerUrl = extraArgs()[0];
  if (!brokerUrl) throw new Error("usage: node browser_cross_origin.mjs PAGE_URL BROKER_URL");
  const consoleErrors = [];
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(10000);
    page.on("console", (msg) => {
      log(`[console.${msg.type()}] ${msg.text()}`);
      if (msg.type() === "error") consoleErrors.push(msg.text());
    });
    context.partial.consoleErrors = consoleErrors;
    await page.goto(`${pageUrl}/`, { waitUntil: "load", timeout: 15000 });

    // A second SDK client in the page, pointed at the other origin.
    const subscription = await withTimeout(
      page.evaluate(async (url) => {
        window.crossGot = [];
        window.crossPb = new PocketBase(url);
        try {
          await window.crossPb.realtime.subscribe("example", (data) => window.crossGot.push(data));
          return { ok: true, clientId: window.crossPb.realtime.clientId };
        } catch (error) {
          return { ok: false, status: error.status, message: String(error.message) };
        }
      }, brokerUrl),
      20000,
      "the cross-origin subscribe in the page",
    );
    const result = { pageOrigin: await page.evaluate(() => window.location.origin), subscription, consoleErrors };
    if (!subscription.ok) return result;

    const { delivered } = await step("subscribed", { clientId: subscription.clientId });
    await page.waitForFunction(() => window.crossGot.length >= 1, null, { timeout: 5000, polling: 20 });
    result.delivered = delivered;
    result.received = await page.evaluate(() => window.crossGot);
    await page.evaluate(() => window.crossPb.realtime.unsubscribe());
    return result;
  } finally {
    await withTimeout(browser.close(), 10000, "closing the browser").catch((error) => log(String(error)));
  }
}, { limitMs: 90000 });
