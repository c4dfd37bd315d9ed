// Presence through the unmodified SDK on two server processes sharing Redis (URLs: argv[2] = A,
// argv[3] = B). A guest watcher on A subscribes to "@presence/room/lobby"; members subscribe to
// "room/lobby": ann on A and B (two tabs), bob on B, a guest on A. Steps:
//   "joined" -> the test compares presence_count on A and B;
//   "kill"   -> the test SIGKILLs B (its worker holds bob and ann's second tab);
//   "after"  -> the test reads the count on A.
// Result: the watcher's events with times and the leave delays.
import { extraArgs, newClient, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const TOPIC = "room/lobby";

run(async (context) => {
  const [urlB] = extraArgs();
  const urlA = process.argv[2];
  const events = [];
  context.partial = { events };
  const started = Date.now();
  const watcher = newClient(urlA);
  await withTimeout(watcher.realtime.subscribe("@presence/" + TOPIC, (data) => events.push({ at: Date.now() - started, ...data })), 10000, "watch");
  await waitFor(() => events.some((e) => e.action === "sync"), 5000, "the first sync");

  const member = async (url, token) => {
    const pb = newClient(url);
    if (token) pb.authStore.save(token, null);
    await withTimeout(pb.realtime.subscribe(TOPIC, () => {}), 10000, `member on ${url}`);
    return pb;
  };
  const annA = await member(urlA, "tokAnn");
  const annB = await member(urlB, "tokAnn");
  const bob = await member(urlB, "tokBob");
  const guest = await member(urlA, null);
  const joins = () => events.filter((e) => e.action === "join");
  await waitFor(() => joins().length >= 3, 5000, "three joins");
  await sleep(300); // a fourth join (ann's second tab) would arrive by now
  const joined = await step("joined");

  const guestKey = joins().find((e) => Object.keys(e.member.info).length === 0).member.key;
  const bobKey = joins().find((e) => e.member.info.id === "bob").member.key;
  const closedAt = Date.now();
  guest.realtime.unsubscribe(); // the guest's only tab closes
  await waitFor(() => events.some((e) => e.action === "leave" && e.member.key === guestKey), 10000, "the guest's leave");
  const guestLeaveMs = Date.now() - closedAt;

  const killed = await step("kill");
  const killedAt = Date.now();
  await waitFor(() => events.some((e) => e.action === "leave" && e.member.key === bobKey), 30000, "bob's leave after the kill");
  const bobLeaveMs = Date.now() - killedAt;
  await sleep(1500); // ann keeps a tab on A: no leave for her
  const after = await step("after");
  for (const pb of [annA, annB, bob, watcher]) pb.realtime.unsubscribe();
  return { events, joined, after, killed, guestLeaveMs, bobLeaveMs };
}, { limitMs: 90000 });
