// Auth binding: the first identity a client's subscription POST carries sticks to it.
// With the server accepting tokA (userA) and tokB (userB):
//   authStore.save("tokA"); subscribe("a-topic") -> works
//   "subscribed-a"  -> test notifies a-topic -> reply {delivered}
//   authStore.save("tokB"); subscribe("b-topic") -> rejects: 403 and PocketBase's body
//   "rejected"      -> test notifies b-topic and a-topic -> reply {delivered: {topic: n}}
// The SDK keeps its connection and the server keeps delivering userA's subscriptions.
import { describeError, newClient, realtimePosts, run, step, waitFor, withTimeout } from "./lib.mjs";

run(async (context) => {
  const pb = newClient();
  const a = [];
  const b = [];
  pb.authStore.save("tokA", null);
  await withTimeout(pb.realtime.subscribe("a-topic", (data) => a.push(data)), 10000, "subscribe as userA");
  const clientId = pb.realtime.clientId;
  context.partial = { a, b };
  const first = await step("subscribed-a", { clientId });
  await waitFor(() => a.length >= 1, 5000, "a message for userA");

  pb.authStore.save("tokB", null);
  let rejection = null;
  try {
    await withTimeout(pb.realtime.subscribe("b-topic", (data) => b.push(data)), 10000, "subscribe as userB");
  } catch (error) {
    rejection = describeError(error);
  }
  const rejectedPost = realtimePosts().at(-1);
  const after = await step("rejected", { clientId });
  await waitFor(() => a.length >= 2, 5000, "userA's second message after the rejected POST");
  return {
    clientId,
    clientIdAfterReject: pb.realtime.clientId,
    connectedAfterReject: pb.realtime.isConnected,
    firstDelivered: first.delivered,
    afterDelivered: after.delivered,
    rejection,
    rejectedPost,
    posts: realtimePosts(),
    a,
    b,
  };
});
