// The server ends the stream by itself (idle timeout or max lifetime, set short by the test):
// the SDK must treat the clean end as a disconnect, reconnect with a new client id and
// resubmit its subscriptions, without any help.
// Steps: "reconnected" {clientIds} -> test notifies "example" -> reply {delivered}
import { newClient, realtimePosts, run, step, waitFor, withTimeout } from "./lib.mjs";

run(async (context) => {
  const pb = newClient();
  const connects = [];
  const disconnects = [];
  const received = [];
  const started = Date.now();
  pb.realtime.onDisconnect = (keys) => disconnects.push({ keys: [...keys], ms: Date.now() - started });
  await withTimeout(
    Promise.all([
      pb.realtime.subscribe("PB_CONNECT", (data) => connects.push({ ...data, ms: Date.now() - started })),
      pb.realtime.subscribe("example", (data) => received.push(data)),
    ]),
    10000,
    "subscribe",
  );
  context.partial = { connects, disconnects };
  await waitFor(() => connects.length >= 2, 10000, "a second PB_CONNECT after the server ended the stream");
  const { delivered } = await step("reconnected", { clientIds: connects.map((c) => c.clientId) });
  await waitFor(() => received.length >= 1, 5000, "a message on the new stream");
  const result = {
    connects,
    disconnects,
    delivered,
    received,
    clientId: pb.realtime.clientId,
    posts: realtimePosts().map((p) => ({ body: p.body, status: p.status })),
  };
  await withTimeout(pb.realtime.unsubscribe(), 5000, "unsubscribe all");
  return result;
});
