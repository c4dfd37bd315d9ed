// clear_auth and refresh_auth made by another process reach a connection through Redis. The
// tab (on process B) signs in as userA and holds "staff/news", "user/userA" and "news"; process
// A publishes to the three topics ("news" last) after each step:
//   "subscribed" (userA, not staff) -> "refresh" (A: refresh_auth with staff) -> "clear" (A: clear_auth)
// Each reply is {changed, delivered}. Result: per step, the topics that arrived (in order).
import { newClient, realtimePosts, run, step, waitFor, withTimeout } from "./lib.mjs";

run(async (context) => {
  const pb = newClient();
  pb.authStore.save("tokA", null);
  const events = [];
  let connects = 0;
  context.partial = { events };
  const listen = (data) => events.push(data);
  await withTimeout(
    Promise.all([
      pb.realtime.subscribe("PB_CONNECT", () => connects++),
      pb.realtime.subscribe("staff/news", listen),
      pb.realtime.subscribe("user/userA", listen),
      pb.realtime.subscribe("news", listen),
    ]),
    10000,
    "subscribe",
  );
  const got = {};
  const changed = {};
  const delivered = {};
  for (const [name, marker] of [["subscribed", "signed-in"], ["refresh", "staff"], ["clear", "guest"]]) {
    const reply = await step(name);
    if (reply.changed !== undefined) changed[name] = reply.changed;
    delivered[marker] = reply.delivered;
    await waitFor(() => events.some((e) => e.at === marker && e.topic === "news"), 5000, `news after ${name}`);
    got[marker] = events.filter((e) => e.at === marker).map((e) => e.topic);
  }
  return { got, changed, delivered, connects, posts: realtimePosts().map((p) => ({ body: p.body, status: p.status })) };
});
