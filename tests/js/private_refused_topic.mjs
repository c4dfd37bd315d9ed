// One topic the tab may not read must not block its later subscribes. Signed in as userA
// (tokA), on a server with RTBROKER_TOPIC_DENIED_EVENT on, the tab subscribes in turn to
// "user/userB" (another user's), "staff/news" (staff only), then "user/userA" and "news":
// each subscribe resolves (the SDK re-sends every key with each POST, so a refused key would
// fail every later one). Steps: "subscribed" -> the test notifies the four topics -> reply
// {delivered: {topic: n}}. Result: what each listener got, the POSTs and the PB_CONNECT count.
import { describeError, newClient, realtimePosts, run, step, waitFor, withTimeout } from "./lib.mjs";

const TOPICS = ["user/userB", "staff/news", "user/userA", "news"];

run(async (context) => {
  const pb = newClient();
  pb.authStore.save("tokA", null);
  const got = Object.fromEntries(TOPICS.map((topic) => [topic, []]));
  const errors = [];
  let connects = 0;
  context.partial = { got, errors };
  await withTimeout(pb.realtime.subscribe("PB_CONNECT", () => connects++), 10000, "connect");
  for (const topic of TOPICS) {
    try {
      await withTimeout(pb.realtime.subscribe(topic, (data) => got[topic].push(data)), 10000, `subscribe ${topic}`);
    } catch (error) {
      errors.push({ topic, error: describeError(error) });
    }
  }
  const { delivered } = await step("subscribed");
  await waitFor(() => got.news.length >= 1 && got["user/userA"].length >= 1, 5000, "the readable topics");
  return { got, errors, delivered, connects, posts: realtimePosts().map((p) => ({ body: p.body, status: p.status })) };
});
