// Shared plumbing for the Node scenario scripts run by tests/test_js_sdk.py and
// tests/test_browser.py.
//
// Contract with the Python side (tests/jsrun.py):
//   - the server URL is argv[2] (or RTBROKER_URL); further arguments are scenario-specific;
//   - when a script needs the test to act (send a notify, stop or restart the server), it
//     writes one line "@@step <json>" to stderr and waits for one JSON line on stdin;
//   - at the end it prints exactly one JSON object on stdout ({"ok": true, ...} or
//     {"ok": false, "error": ...}) and exits 0 on success, 1 on failure, 2 on the watchdog.
// Every wait is bounded: each helper takes a timeout and a watchdog ends the whole script.

import { createInterface } from "node:readline";
import { EventSource } from "eventsource";
import PocketBase from "pocketbase";

// The SDK opens its stream with `new EventSource(...)`; Node has no EventSource of its own.
globalThis.EventSource = EventSource;

export { PocketBase };

/** The server base URL from argv[2] or $RTBROKER_URL; throws when neither is given. */
export function serverUrl() {
  const url = process.argv[2] || process.env.RTBROKER_URL;
  if (!url) {
    throw new Error("usage: node <script>.mjs <server-url> (or set RTBROKER_URL)");
  }
  return url.replace(/\/+$/, "");
}

/** Scenario-specific positional arguments (everything after the URL). */
export function extraArgs() {
  return process.argv.slice(3);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolve like `promise`, or reject after `ms` milliseconds naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Poll `predicate` every 10 ms until it is truthy; throw after `ms` milliseconds. */
export async function waitFor(predicate, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = predicate();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolve with `promise`'s outcome as {ok, value} or {ok: false, error}, bounded by `ms`. */
export async function settle(promise, ms, what) {
  try {
    return { ok: true, value: await withTimeout(promise, ms, what) };
  } catch (error) {
    return { ok: false, error: describeError(error) };
  }
}

/** A JSON-friendly description of an error, keeping ClientResponseError's status and body. */
export function describeError(error) {
  if (!(error instanceof Error)) return { message: String(error) };
  const out = { name: error.name, message: error.message };
  if (typeof error.status === "number") out.status = error.status;
  if (error.response !== undefined) out.response = error.response;
  if (error.url) out.url = error.url;
  if (error.isAbort !== undefined) out.isAbort = error.isAbort;
  return out;
}

// -- the step channel to the Python test ------------------------------------------------------

let stdinLines = null;
const pendingLines = [];
const lineWaiters = [];

function startStdin() {
  if (stdinLines) return;
  stdinLines = createInterface({ input: process.stdin });
  stdinLines.on("line", (line) => {
    const waiter = lineWaiters.shift();
    if (waiter) waiter(line);
    else pendingLines.push(line);
  });
  stdinLines.on("close", () => {
    while (lineWaiters.length) lineWaiters.shift()(null);
  });
}

function nextLine() {
  startStdin();
  if (pendingLines.length) return Promise.resolve(pendingLines.shift());
  return new Promise((resolve) => lineWaiters.push(resolve));
}

/**
 * Ask the Python test to perform the action `name` with `data`; return its JSON reply.
 * Throws if no reply arrives within `ms` or the test reports an error.
 */
export async function step(name, data = {}, ms = 30000) {
  process.stderr.write(`@@step ${JSON.stringify({ step: name, ...data })}\n`);
  const line = await withTimeout(nextLine(), ms, `reply to step ${name}`);
  if (line === null) throw new Error(`stdin closed while waiting for step ${name}`);
  const reply = JSON.parse(line);
  if (reply && reply.error) throw new Error(`step ${name} failed on the Python side: ${reply.error}`);
  return reply;
}

/** Log a line for humans (stderr; the Python side keeps it for failure messages). */
export function log(...parts) {
  process.stderr.write(parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ") + "\n");
}

// -- recording the SDK's HTTP traffic ---------------------------------------------------------

/**
 * Every request made through fetch, by the SDK and by the EventSource polyfill:
 * {method, path, status, authorization, body, errorBody}.
 */
export const requests = [];

const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const headers = new Headers(init.headers || {});
  const entry = {
    method: (init.method || "GET").toUpperCase(),
    path: url.pathname,
    authorization: headers.get("Authorization"),
    body: typeof init.body === "string" ? safeJson(init.body) : null,
    status: null,
  };
  requests.push(entry);
  try {
    const response = await realFetch(input, init);
    entry.status = response.status;
    if (response.status >= 400) entry.errorBody = await response.clone().text();
    return response;
  } catch (error) {
    entry.status = "error";
    entry.error = String(error && error.message);
    throw error;
  }
};

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The subscription POSTs the SDK sent to /api/realtime so far. */
export function realtimePosts() {
  return requests.filter((r) => r.method === "POST" && r.path === "/api/realtime");
}

// -- running a scenario -----------------------------------------------------------------------

/** A PocketBase client for the server under test. */
export function newClient(url = serverUrl()) {
  return new PocketBase(url);
}

/**
 * Run `main()` under a watchdog of `limitMs`; print its result as one JSON object on stdout.
 * `main` may fill `context.partial` so that a failure still reports what was seen so far.
 */
export async function run(main, { limitMs = 60000 } = {}) {
  const context = { partial: {} };
  const watchdog = setTimeout(() => {
    finish(2, { ok: false, error: `watchdog: scenario still running after ${limitMs} ms`, partial: context.partial, requests });
  }, limitMs);
  try {
    const result = await main(context);
    clearTimeout(watchdog);
    finish(0, { ok: true, ...result, requests });
  } catch (error) {
    clearTimeout(watchdog);
    finish(1, { ok: false, error: describeError(error), stack: error && error.stack, partial: context.partial, requests });
  }
}

function finish(code, payload) {
  // Exit only once stdout is flushed: it may be a pipe.
  process.stdout.write(JSON.stringify(payload) + "\n", () => process.exit(code));
}
