// A PB_CONNECT listener gets {clientId} once the connection is set up; the id matches the
// SDK's clientId (which the SDK itself takes from the event's `id:` field).
import { newClient, realtimePosts, run, sleep, waitFor, withTimeout } from "./lib.mjs";

run(async (context) => {
  const pb = newClient();
  const connects = [];
  await withTimeout(pb.realtime.subscribe("PB_CONNECT", (data) => connects.push(data)), 10000, "subscribe(PB_CONNECT)");
  context.partial.connects = connects;
  await waitFor(() => connects.length >= 1, 5000, "the PB_CONNECT listener");
  await sleep(200); // it must run once per connection, not more
  const result = {
    connects,
    clientId: pb.realtime.clientId,
    posts: realtimePosts().map((p) => ({ body: p.body, status: p.status })),
  };
  await withTimeout(pb.realtime.unsubscribe(), 5000, "unsubscribe all");
  return result;
});
