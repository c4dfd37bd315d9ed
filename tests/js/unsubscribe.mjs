// unsubscribe(topic) and unsubscribeByPrefix(prefix) stop delivery.
// Subscribes to "alpha" (plain and with options), "beta/1", "beta/2" and "gamma" ("gamma" keeps
// the stream open and serves as an end marker: messages to one client arrive in order, so once
// the "gamma" notify sent last has arrived, any earlier delivery would have arrived too).
// Steps:
//   "subscribed"      -> test notifies alpha, beta/1, beta/2 -> reply {delivered: {topic: n}}
//   "unsubscribed"    -> after unsubscribe("alpha") and unsubscribeByPrefix("beta/"):
//                        test notifies alpha, beta/1, beta/2, then gamma -> reply {delivered}
import { newClient, realtimePosts, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

run(async (context) => {
  const pb = newClient();
  const got = { alpha: [], "alpha?options": [], "beta/1": [], "beta/2": [], gamma: [] };
  const subs = [
    pb.realtime.subscribe("alpha", (d) => got.alpha.push(d)),
    pb.realtime.subscribe("alpha", (d) => got["alpha?options"].push(d), { query: { x: 1 } }),
    pb.realtime.subscribe("beta/1", (d) => got["beta/1"].push(d)),
    pb.realtime.subscribe("beta/2", (d) => got["beta/2"].push(d)),
    pb.realtime.subscribe("gamma", (d) => got.gamma.push(d)),
  ];
  await withTimeout(Promise.all(subs), 10000, "the five subscribes");
  const keysBefore = realtimePosts().at(-1).body.subscriptions;
  context.partial = { got, keysBefore };

  const before = await step("subscribed", { keys: keysBefore });
  await waitFor(
    () => got.alpha.length && got["alpha?options"].length && got["beta/1"].length && got["beta/2"].length,
    5000,
    "the notifies sent before unsubscribing",
  );
  const countsBefore = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.length]));

  await withTimeout(pb.realtime.unsubscribe("alpha"), 5000, 'unsubscribe("alpha")');
  const keysAfterUnsubscribe = realtimePosts().at(-1).body.subscriptions;
  await withTimeout(pb.realtime.unsubscribeByPrefix("beta/"), 5000, 'unsubscribeByPrefix("beta/")');
  const keysAfterPrefix = realtimePosts().at(-1).body.subscriptions;
  context.partial.keysAfterUnsubscribe = keysAfterUnsubscribe;
  context.partial.keysAfterPrefix = keysAfterPrefix;

  const after = await step("unsubscribed", { keys: keysAfterPrefix });
  await waitFor(() => got.gamma.length >= 1, 5000, "the gamma end marker");
  await sleep(300);
  const countsAfter = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.length]));
  const result = {
    keysBefore,
    keysAfterUnsubscribe,
    keysAfterPrefix,
    deliveredBefore: before.delivered,
    deliveredAfter: after.delivered,
    countsBefore,
    countsAfter,
    connected: pb.realtime.isConnected,
  };
  await withTimeout(pb.realtime.unsubscribe(), 5000, "unsubscribe all");
  return result;
});
