// Sessions outlive streams (docs/sessions.rst): the server ends every stream after 2 s, the
// unmodified SDK reconnects and resubscribes, and nothing published meanwhile is lost or doubled.
//   node session_resume.mjs URL [no-late [GUEST_URL USER_URL EXPLICIT_URL]]
//   (no-late: skip the late client's part; the URLs: one server address per client)
// Clients: "guest" (no auth), "user" (authStore token "tokU"), "explicit" (a guest with the
// documented X-Rtbroker-Resume snippet), "late" (a guest with one more key, whose reconnect
// comes after the resume window once the measure is over). Each also listens on @rtbroker/session.
// Steps: "subscribed" {ids} -> the test notifies "seq" {n} every 20 ms for a while -> reply {sent}
//        "late-done" {} -> reply {}
import { extraArgs, log, newClient, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const RESUME_HEADER = "X-Rtbroker-Resume";

/** The documented snippet: send the previous client id on the reconnect's subscription POST. */
function claimSessionsExplicitly(pb) {
  let previousId = "";
  pb.realtime.subscribe("PB_CONNECT", (event) => { previousId = event.clientId; });
  pb.beforeSend = (url, options) => {
    if (options.method === "POST" && url.endsWith("/api/realtime")) {
      options.headers = { ...options.headers, [RESUME_HEADER]: previousId };
    }
    return { url, options };
  };
}

const clientUrls = extraArgs().slice(1);

function tracked(name, setup, url) {
  const pb = url ? newClient(url) : newClient();
  const state = { name, pb, seq: [], sessions: [], connects: 0 };
  if (setup) setup(pb, state);
  return state;
}

async function subscribeAll(state, extra = []) {
  await withTimeout(
    Promise.all([
      ...extra.map((key) => state.pb.realtime.subscribe(key, () => {})),
      state.pb.realtime.subscribe("PB_CONNECT", () => { state.connects += 1; }),
      state.pb.realtime.subscribe("seq", (data) => state.seq.push(data.n)),
      state.pb.realtime.subscribe("@rtbroker/session", (data) => {
        log(state.name, data);
        state.sessions.push({ ...data, at: state.seq.length });
      }),
    ]),
    10000,
    `subscribe ${state.name}`,
  );
}

function summary(state, sent) {
  const unique = new Set(state.seq);
  const missed = [];
  for (let n = 0; n < sent; n += 1) if (!unique.has(n)) missed.push(n);
  let outOfOrder = 0;
  for (let i = 1; i < state.seq.length; i += 1) if (state.seq[i] < state.seq[i - 1]) outOfOrder += 1;
  return {
    received: state.seq.length,
    missed: missed.length,
    missedSample: missed.slice(0, 20),
    duplicated: state.seq.length - unique.size,
    outOfOrder,
    connects: state.connects,
    sessions: [...state.sessions],
  };
}

run(async (context) => {
  const guest = tracked("guest", null, clientUrls[0]);
  const user = tracked("user", (pb) => pb.authStore.save("tokU", null), clientUrls[1]);
  const explicit = tracked("explicit", (pb) => claimSessionsExplicitly(pb), clientUrls[2]);
  // Once set, every stream request waits 4.5 s before it leaves: reconnects come after the window.
  let delayStreams = false;
  const recordingFetch = globalThis.fetch;
  globalThis.fetch = async (input, init = {}) => {
    if (delayStreams && (init.method || "GET").toUpperCase() === "GET" && String(input).endsWith("/api/realtime")) {
      await sleep(4500);
    }
    return recordingFetch(input, init);
  };
  const late = tracked("late");
  const clients = [guest, user, explicit, late];
  // The late client holds one more key: no other guest's set is its set.
  for (const state of clients) await subscribeAll(state, state === late ? ["late"] : []);
  context.partial = { clients: clients.map((c) => ({ name: c.name, seq: c.seq.length, sessions: c.sessions })) };

  const { sent } = await step("subscribed", {}, 60000);
  await waitFor(() => [guest, user, explicit].every((c) => new Set(c.seq).size >= sent), 5000, "every message").catch(() => {});
  const result = {};
  for (const state of [guest, user, explicit]) result[state.name] = summary(state, sent);

  if (extraArgs()[0] === "no-late") {
    for (const state of clients) await withTimeout(state.pb.realtime.unsubscribe(), 5000, "unsubscribe");
    return result;
  }
  // The late client's next stream opens after the window: its ghost expired.
  const sessionsBefore = late.sessions.length;
  delayStreams = true;
  await waitFor(() => late.sessions.length > sessionsBefore, 15000, "the late client's session event");
  delayStreams = false;
  result.late = { sessions: late.sessions.slice(sessionsBefore) };
  await step("late-done", {});
  for (const state of clients) await withTimeout(state.pb.realtime.unsubscribe(), 5000, "unsubscribe");
  return result;
}, { limitMs: 90000 });
