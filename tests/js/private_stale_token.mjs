// A stale token must not trap the SDK. Two tabs at once, on a server whose streams end every
// 2 s (RTBROKER_MAX_LIFETIME=2, no jitter), so the SDK reconnects and re-POSTs its keys often:
//   stale tab:   token tokA (userA), keys "seq" and "user/userA"
//   healthy tab: token tokB (userB), keys "seq" and "user/userB"
// Steps:
//   "subscribed" -> the test makes tokA stale (and clear_auth's userA), then publishes "seq"
//                   every 40 ms and both user topics every 200 ms for the window
//   "window-end" -> the test stops publishing -> reply {sent: {seq, private}}
//   "revalidate" -> the test makes tokA valid again and publishes "user/userA" every 100 ms
//   "done"       -> the test stops publishing
// Result: per tab what arrived in the window and after, and every realtime POST with its status.
import { newClient, realtimePosts, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const WINDOW_MS = 10000;

function tab(token, userTopic) {
  const pb = newClient();
  pb.authStore.save(token, null);
  const seen = { seq: [], private: [], connects: 0 };
  const ready = Promise.all([
    pb.realtime.subscribe("PB_CONNECT", () => seen.connects++),
    pb.realtime.subscribe("seq", (data) => seen.seq.push(data.n)),
    pb.realtime.subscribe(userTopic, (data) => seen.private.push(data.n)),
  ]);
  return { pb, seen, ready, token };
}

run(async (context) => {
  const stale = tab("tokA", "user/userA");
  const healthy = tab("tokB", "user/userB");
  await withTimeout(Promise.all([stale.ready, healthy.ready]), 10000, "both tabs subscribed");
  context.partial = { stale: stale.seen, healthy: healthy.seen };

  const windowStart = realtimePosts().length;
  await step("subscribed");
  await sleep(WINDOW_MS);
  const { sent } = await step("window-end");
  const windowPosts = realtimePosts().slice(windowStart);
  const inWindow = (t) => ({ seq: [...t.seen.seq], private: [...t.seen.private], connects: t.seen.connects });
  const window = { stale: inWindow(stale), healthy: inWindow(healthy) };

  const privateBefore = stale.seen.private.length;
  await step("revalidate");
  await waitFor(() => stale.seen.private.length > privateBefore, 8000, "userA's topic after its token is valid again");
  await step("done");
  const result = {
    sent,
    window,
    windowPosts: windowPosts.map((p) => ({ authorization: p.authorization, status: p.status })),
    privateAfterRevalidate: stale.seen.private.slice(privateBefore),
  };
  await Promise.all([stale.pb.realtime.unsubscribe(), healthy.pb.realtime.unsubscribe()]);
  return result;
});
