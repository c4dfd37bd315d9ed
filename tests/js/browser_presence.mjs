// Headless Chromium opens the "who's here" page of examples/presence twice (two browser
// contexts: two guests). The first page must list itself, then the second one, then only itself
// again once the second page is closed. Result: the lists seen and how long each change took.
import { launchChromium } from "./browser.mjs";
import { log, run, serverUrl } from "./lib.mjs";

// Every console error and uncaught page error of the browser context is a problem.
function collectProblems(context, problems) {
  context.on("console", (message) => {
    log(`[console.${message.type()}] ${message.text()}`);
    if (message.type() === "error") problems.push(`console.error: ${message.text()}`);
  });
  context.on("weberror", (webError) => problems.push(`page error: ${webError.error().message}`));
}

async function openPage(browser, url, problems) {
  const context = await browser.newContext();
  collectProblems(context, problems);
  context.setDefaultTimeout(10000);
  const page = await context.newPage();
  const response = await page.goto(`${url}/`, { waitUntil: "load", timeout: 15000 });
  if (!response || response.status() !== 200) throw new Error(`GET / answered ${response && response.status()}`);
  return { context, page };
}

const listed = (page) => page.locator("#here li").allTextContents();

async function waitForCount(page, count) {
  const started = Date.now();
  await page.waitForFunction((n) => document.querySelectorAll("#here li").length === n, count, { timeout: 10000, polling: 20 });
  return Date.now() - started;
}

run(async (context) => {
  const url = serverUrl();
  const problems = [];
  context.partial.problems = problems;
  const browser = await launchChromium();
  try {
    const first = await openPage(browser, url, problems);
    const selfMs = await waitForCount(first.page, 1);
    const alone = await listed(first.page);
    const second = await openPage(browser, url, problems);
    const joinMs = await waitForCount(first.page, 2);
    await waitForCount(second.page, 2);
    const together = await listed(first.page);
    await second.context.close();
    const leaveMs = await waitForCount(first.page, 1);
    const after = await listed(first.page);
    await first.context.close();
    return { alone, together, after, selfMs, joinMs, leaveMs, problems };
  } finally {
    await browser.close();
  }
}, { limitMs: 60000 });
