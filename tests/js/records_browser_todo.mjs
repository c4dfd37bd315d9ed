// Headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) opens the todo example
// as alice and checks that rows changed by someone else show up, and go away, live.
//   node records_browser_todo.mjs URL SCREENSHOT.png
// Steps:
//   "page-live"  -> the test adds a shared and a private todo as bob -> reply {shared, private}
//   "shown"      -> the test unshares bob's shared todo                -> reply {}
//   "added" {title} -> the test reads alice's todos through the API  -> reply {titles}
import { launchChromium } from "./browser.mjs";
import { extraArgs, log, run, serverUrl, sleep, step, withTimeout } from "./lib.mjs";

run(async (context) => {
  const url = serverUrl();
  const screenshot = extraArgs()[0];
  if (!screenshot) throw new Error("usage: node records_browser_todo.mjs URL SCREENSHOT.png");
  const problems = [];
  context.partial.problems = problems;
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 800, height: 700 } });
    page.setDefaultTimeout(10000);
    page.on("console", (msg) => {
      log(`[console.${msg.type()}] ${msg.text()}`);
      if (msg.type() === "error") problems.push(`console.error: ${msg.text()}`);
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    const titles = () => page.locator("#todos .title").allTextContents();
    const row = (id) => page.locator(`#todos li[data-id="${id}"]`);

    const response = await page.goto(`${url}/?user=alice`, { waitUntil: "load", timeout: 15000 });
    if (!response || response.status() !== 200) throw new Error(`GET / answered ${response && response.status()}`);
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 10000 });
    const user = (await page.locator("#user").textContent()).trim();
    const loginFormShown = await page.locator("#login").isVisible();
    const initial = await titles();

    const bob = await step("page-live");
    let asked = Date.now();
    await row(bob.shared).waitFor({ state: "visible", timeout: 5000 });
    const appearedMs = Date.now() - asked;
    await sleep(300); // bob's private todo would have arrived by now
    const afterBob = await titles();
    const privateShown = await row(bob.private).count();
    await page.screenshot({ path: screenshot, timeout: 10000 });

    await step("shown");
    asked = Date.now();
    await row(bob.shared).waitFor({ state: "detached", timeout: 5000 });
    const removedMs = Date.now() - asked;

    await page.locator("#title").fill("from alice's page");
    await page.locator("#add button[type=submit]").click();
    await page.locator("#todos .title", { hasText: "from alice's page" }).waitFor({ timeout: 5000 });
    const server = await step("added", { title: "from alice's page" });

    return {
      user,
      loginFormShown,
      initial,
      afterBob,
      privateShown,
      appearedMs,
      removedMs,
      final: await titles(),
      serverTitles: server.titles,
      status: (await page.locator("#status").textContent()).trim(),
      problems,
    };
  } finally {
    await withTimeout(browser.close(), 10000, "closing the browser").catch((error) => log(String(error)));
  }
}, { limitMs: 90000 });
