// Record events with the official SDK against the todo example (examples/todo):
//   pb.collection("todos").subscribe("*", cb)                       alice (signed in) and a guest
//   pb.collection("todos").subscribe(id, cb, {filter, fields})       alice, on her own todo
//   a filter outside the supported subset                            rejected with a 400
// Steps:
//   "subscribed" {alice}  -> the test changes todos as bob (and maybe from a worker) and replies
//                            {events}: how many events alice and the guest should now have
import { newClient, realtimePosts, run, serverUrl, settle, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const COLLECTION = "todos";

async function signIn(pb, name) {
  const auth = await withTimeout(pb.send("/api/login", { method: "POST", body: { name } }), 5000, `sign in ${name}`);
  pb.authStore.save(auth.token, auth.record);
  return auth.record;
}

const brief = (event) => ({ action: event.action, id: event.record.id, title: event.record.title, shared: event.record.shared });

run(async (context) => {
  const url = serverUrl();
  const alice = newClient(url);
  const guest = newClient(url);
  const me = await signIn(alice, "alice");
  const aliceAll = [];
  const guestAll = [];
  context.partial = { aliceAll, guestAll };

  await withTimeout(alice.collection(COLLECTION).subscribe("*", (e) => aliceAll.push(e)), 10000, "alice subscribes to todos/*");
  await withTimeout(guest.collection(COLLECTION).subscribe("*", (e) => guestAll.push(e)), 10000, "the guest subscribes to todos/*");

  const { events } = await step("subscribed", { alice: me.id });
  await waitFor(() => aliceAll.length >= events && guestAll.length >= events, 5000, `${events} events for alice and the guest`);

  // alice's own private todo, watched through a filtered, picked single-record subscription
  const mine = await alice.send(`/api/${COLLECTION}`, { method: "POST", body: { title: "alice's secret" } });
  const filtered = [];
  context.partial.filtered = filtered;
  await withTimeout(
    alice.collection(COLLECTION).subscribe(mine.id, (e) => filtered.push(e), {
      filter: alice.filter("done = true && owner = {:me}", { me: me.id }),
      fields: "id,title,done",
    }),
    5000,
    "the filtered single-record subscription",
  );
  await alice.send(`/api/${COLLECTION}/${mine.id}`, { method: "PATCH", body: { title: "still secret" } });
  await alice.send(`/api/${COLLECTION}/${mine.id}`, { method: "PATCH", body: { done: true } });
  await waitFor(() => filtered.length >= 1 && aliceAll.length >= events + 3, 5000, "alice's own events");
  await sleep(300); // anything the guest or the filter should not get would show up by now

  // a filter outside the subset: the POST answers 400, so subscribe() rejects
  const probe = newClient(url);
  const rejected = await settle(
    probe.collection(COLLECTION).subscribe("*", () => {}, { filter: "title ?= 'x'" }),
    5000,
    "a subscription with an unsupported filter",
  );

  const keys = realtimePosts().map((post) => post.body.subscriptions);
  await withTimeout(Promise.all([alice, guest, probe].map((pb) => pb.realtime.unsubscribe())), 5000, "unsubscribe all");
  return {
    me: me.id,
    mine: mine.id,
    alice: aliceAll.map(brief),
    guest: guestAll.map(brief),
    filtered,
    rejected,
    keys,
  };
});
