// Subscriptions with options: the SDK keys them "topic?options=<encoded JSON>" and listens for
// events of exactly that name. Listener A subscribes with options, listener B to the plain
// topic. Steps:
//   "subscribed" {topic, keys}  -> the test notifies the plain topic -> reply {delivered}
//   "plain-received" {optionsKey} -> the test notifies the full options key -> reply {delivered}
import { newClient, realtimePosts, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const TOPIC = "example";
const OPTIONS = { query: { a: 1 }, headers: { "X-Token": "abc" } };

run(async (context) => {
  const pb = newClient();
  const withOptions = [];
  const plain = [];
  await withTimeout(pb.realtime.subscribe(TOPIC, (data) => withOptions.push(data), OPTIONS), 10000, "subscribe with options");
  await withTimeout(pb.realtime.subscribe(TOPIC, (data) => plain.push(data)), 10000, "plain subscribe");
  const posts = realtimePosts();
  const keys = posts[posts.length - 1].body.subscriptions;
  const optionsKey = keys.find((key) => key.startsWith(`${TOPIC}?`));
  context.partial = { keys, withOptions, plain };

  const toPlain = await step("subscribed", { topic: TOPIC, keys });
  await waitFor(() => withOptions.length >= 1 && plain.length >= 1, 5000, "both listeners to get the plain-topic notify");
  const toKey = await step("plain-received", { optionsKey });
  await waitFor(() => withOptions.length >= 2, 5000, "the options listener to get the full-key notify");
  await sleep(300); // a stray delivery to the plain listener would show up here
  const result = {
    keys,
    optionsKey,
    deliveredToPlainTopic: toPlain.delivered,
    deliveredToOptionsKey: toKey.delivered,
    withOptions,
    plain,
    posts: posts.map((p) => p.body),
  };
  await withTimeout(pb.realtime.unsubscribe(), 5000, "unsubscribe all");
  return result;
});
