// Two listeners on one topic: the second subscribe() adds a local listener only (no POST);
// one notify calls both. Steps: "subscribed" {topic, posts} -> reply {delivered}.
import { newClient, realtimePosts, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const TOPIC = "shared";

run(async (context) => {
  const pb = newClient();
  const first = [];
  const second = [];
  await withTimeout(pb.realtime.subscribe(TOPIC, (data) => first.push(data)), 10000, "first subscribe");
  const postsAfterFirst = realtimePosts().length;
  await withTimeout(pb.realtime.subscribe(TOPIC, (data) => second.push(data)), 10000, "second subscribe");
  const postsAfterSecond = realtimePosts().length;
  context.partial = { first, second, postsAfterFirst, postsAfterSecond };

  const { delivered } = await step("subscribed", { topic: TOPIC });
  await waitFor(() => first.length >= 1 && second.length >= 1, 5000, "both listeners to be called");
  await sleep(300); // a duplicate delivery would show up here
  const result = { delivered, first, second, postsAfterFirst, postsAfterSecond, postsAtEnd: realtimePosts().length };
  await withTimeout(pb.realtime.unsubscribe(), 5000, "unsubscribe all");
  return result;
});
