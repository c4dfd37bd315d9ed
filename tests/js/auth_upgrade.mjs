// Guest -> user is an upgrade the server accepts on the same connection; user -> guest
// (authStore.clear()) is a change it rejects with 403, like PocketBase.
// Steps: "done" -> test notifies g-topic, a-topic, x-topic -> reply {delivered: {topic: n}}
import { describeError, newClient, realtimePosts, run, step, waitFor, withTimeout } from "./lib.mjs";

run(async (context) => {
  const pb = newClient();
  const got = { "g-topic": [], "a-topic": [], "x-topic": [] };
  const listen = (topic) => (data) => got[topic].push(data);
  await withTimeout(pb.realtime.subscribe("g-topic", listen("g-topic")), 10000, "subscribe as guest");
  const clientId = pb.realtime.clientId;

  pb.authStore.save("tokA", null);
  const upgrade = await withTimeout(
    pb.realtime.subscribe("a-topic", listen("a-topic")).then(() => null, describeError),
    10000,
    "subscribe after logging in",
  );

  pb.authStore.clear();
  const downgrade = await withTimeout(
    pb.realtime.subscribe("x-topic", listen("x-topic")).then(() => null, describeError),
    10000,
    "subscribe after logging out",
  );
  context.partial = { upgrade, downgrade, got };

  const { delivered } = await step("done", { clientId });
  await waitFor(() => got["g-topic"].length && got["a-topic"].length, 5000, "the guest and user topics");
  return {
    clientId,
    sameClient: pb.realtime.clientId === clientId,
    upgrade,
    downgrade,
    delivered,
    got,
    posts: realtimePosts().map((p) => ({ authorization: p.authorization, status: p.status, body: p.body, errorBody: p.errorBody })),
  };
});
