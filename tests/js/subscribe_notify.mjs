// Basic round trip: subscribe to a topic, the test sends a notify, the callback gets the
// parsed data. Steps: "subscribed" {clientId, topic} -> reply {delivered}.
import { newClient, realtimePosts, run, step, waitFor, withTimeout } from "./lib.mjs";

const TOPIC = "example";

run(async (context) => {
  const pb = newClient();
  const received = [];
  const unsubscribe = await withTimeout(
    pb.realtime.subscribe(TOPIC, (data) => received.push(data)),
    10000,
    `subscribe(${TOPIC})`,
  );
  context.partial.clientId = pb.realtime.clientId;
  const { delivered } = await step("subscribed", { clientId: pb.realtime.clientId, topic: TOPIC });
  await waitFor(() => received.length >= 1, 5000, `a message on ${TOPIC}`);
  const result = {
    clientId: pb.realtime.clientId,
    isConnected: pb.realtime.isConnected,
    delivered,
    received,
    posts: realtimePosts().length,
  };
  await withTimeout(unsubscribe(), 5000, "unsubscribe function");
  result.connectedAfterUnsubscribe = pb.realtime.isConnected;
  return result;
});
