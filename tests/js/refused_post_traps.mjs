// The two traps a refused subscription POST sets for the SDK (against tests/refusing_app.py,
// whose before_subscribe answers 403 for another user's topic), shown so the docs' reason for
// topic rules stays checked:
//   1. tab "one" (tokB, userB) subscribes "user/userA": refused; then "news": refused too,
//      because the SDK sends the refused key again with every POST;
//   2. tab "two" (tokA) holds "news" and "user/userA"; step "stale" makes tokA stale; at the next
//      stream end (RTBROKER_MAX_LIFETIME=1) the SDK reconnects, its POST is refused, and it
//      reconnects again and again for the 4 s watched.
import { describeError, newClient, realtimePosts, run, sleep, step, withTimeout } from "./lib.mjs";

async function attempt(pb, topic) {
  try {
    await withTimeout(pb.realtime.subscribe(topic, () => {}), 10000, `subscribe ${topic}`);
    return null;
  } catch (error) {
    return describeError(error).status ?? "error";
  }
}

run(async () => {
  const one = newClient();
  one.authStore.save("tokB", null);
  const blocked = { other: await attempt(one, "user/userA"), news: await attempt(one, "news") };
  await one.realtime.unsubscribe();

  const two = newClient();
  two.authStore.save("tokA", null);
  const accepted = { news: await attempt(two, "news"), own: await attempt(two, "user/userA") };
  await step("stale");
  const before = realtimePosts().length;
  await sleep(4000);
  const watched = realtimePosts().slice(before).filter((p) => p.authorization === "tokA");
  await two.realtime.unsubscribe();
  return { blocked, accepted, watched: watched.map((p) => p.status) };
});
