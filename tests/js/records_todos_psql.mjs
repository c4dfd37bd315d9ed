// Record events with the official SDK against the todo example on PostgreSQL (capture="database"):
// alice (signed in) and a guest subscribe with pb.collection("todos").subscribe("*", cb); the test
// writes with psql, and the events arrive with the records as PocketBase shapes them.
// Steps:
//   "subscribed" {alice}  -> the test writes with psql and replies {alice, guest}: how many events
//                            each should now have
import { newClient, run, serverUrl, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const COLLECTION = "todos";

run(async (context) => {
  const url = serverUrl();
  const alice = newClient(url);
  const guest = newClient(url);
  const auth = await withTimeout(alice.send("/api/login", { method: "POST", body: { name: "alice" } }), 5000, "sign in");
  alice.authStore.save(auth.token, auth.record);
  const events = { alice: [], guest: [] };
  context.partial = events;

  const keep = (list) => (e) => list.push({ action: e.action, record: e.record });
  await withTimeout(alice.collection(COLLECTION).subscribe("*", keep(events.alice)), 10000, "alice subscribes to todos/*");
  await withTimeout(guest.collection(COLLECTION).subscribe("*", keep(events.guest)), 10000, "the guest subscribes to todos/*");

  const expected = await step("subscribed", { alice: auth.record.id });
  await waitFor(
    () => events.alice.length >= expected.alice && events.guest.length >= expected.guest,
    5000,
    `${expected.alice} events for alice and ${expected.guest} for the guest`,
  );
  await sleep(300); // anything alice or the guest should not get would show up by now
  await withTimeout(Promise.all([alice, guest].map((pb) => pb.realtime.unsubscribe())), 5000, "unsubscribe all");
  return { alice: auth.record.id, ...events };
});
