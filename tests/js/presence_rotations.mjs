// Presence across lifetime rotations (the servers end every stream after 2 s; the SDK reconnects
// and resubmits its keys): a watcher on A, ann on A and B, bob on B, a guest on B (its reconnect
// claims its session, which keeps its member). After ~5 s (two rotations of
// every stream) the step "rotated" lets the test read the counts. Result: the watcher's events.
import { extraArgs, newClient, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const TOPIC = "room/rotating";

run(async (context) => {
  const [urlB] = extraArgs();
  const urlA = process.argv[2];
  const events = [];
  let reconnects = 0;
  context.partial = { events };
  const watcher = newClient(urlA);
  await withTimeout(watcher.realtime.subscribe("@presence/" + TOPIC, (data) => events.push(data)), 10000, "watch");
  const members = [];
  for (const [url, token] of [[urlA, "tokAnn"], [urlB, "tokAnn"], [urlB, "tokBob"], [urlB, null]]) {
    const pb = newClient(url);
    if (token) pb.authStore.save(token, null);
    await withTimeout(pb.realtime.subscribe("PB_CONNECT", () => reconnects++), 10000, "PB_CONNECT");
    await withTimeout(pb.realtime.subscribe(TOPIC, () => {}), 10000, `member on ${url}`);
    members.push(pb);
  }
  await waitFor(() => events.filter((e) => e.action === "join").length >= 3, 5000, "three joins");
  await sleep(5000);
  const rotated = await step("rotated");
  for (const pb of [...members, watcher]) pb.realtime.unsubscribe();
  return { events, rotated, reconnects };
}, { limitMs: 60000 });
