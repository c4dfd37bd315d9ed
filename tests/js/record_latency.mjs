// One official-SDK subscriber for benchmarks/record_latency.py: pb.collection("todos").subscribe("*")
// timestamps each record event on arrival by its record's title: CLOCK_MONOTONIC in milliseconds
// (process.hrtime), the clock of Python's time.monotonic() on Linux, which no wall-clock step moves.
//   node record_latency.mjs URL LIMIT_MS
// Steps:
//   "subscribed" -> the benchmark writes and replies {titles}: the events to wait for
import { extraArgs, newClient, run, serverUrl, step, waitFor, withTimeout } from "./lib.mjs";

const limitMs = Number(extraArgs()[0] || 120000);

run(async (context) => {
  const pb = newClient(serverUrl());
  const received = {};
  context.partial.received = received;
  const arrived = (e) => {
    const now = Number(process.hrtime.bigint()) / 1e6;
    received[e.record.title] ??= now;
  };
  await withTimeout(pb.collection("todos").subscribe("*", arrived), 10000, "subscribe to todos/*");
  const { titles } = await step("subscribed", {}, limitMs);
  await waitFor(() => titles.every((title) => title in received), 10000, "the event of every write");
  await withTimeout(pb.realtime.unsubscribe(), 5000, "unsubscribe");
  return { received };
}, { limitMs });
