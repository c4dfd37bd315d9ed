// Launching the machine's headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM_PATH)
// through playwright-core, for the browser scenario scripts.
import { chromium } from "playwright-core";
import { withTimeout } from "./lib.mjs";

export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

// No sandbox (tests run as root), no GPU, and none of Chromium's background connections: the
// machine has no network besides loopback.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Start Chromium, bounded in time; the caller closes it. */
export function launchChromium() {
  return withTimeout(
    chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: 30000 }),
    35000,
    `launching ${CHROMIUM}`,
  );
}
