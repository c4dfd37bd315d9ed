// Several SDK clients behind nginx in front of two hosts (tests/test_two_hosts.py).
//   node two_hosts.mjs URL COUNT notify|failover
// Every client subscribes to PB_CONNECT and "two-hosts", all at once (so nginx's round robin
// spreads the streams over both hosts). Each connect records the upstream that served the
// stream, from the X-Upstream header the test's nginx adds.
// Steps:
//   "subscribed" {clients: [{clientId, upstream}], reconnectIntervals}
//        -> notify: the test notifies on host A, then on host B; every client must get both
//        -> failover: the test notifies once (on A) and every client must get it
//   (failover only)
//   "kill" {}   -> the test kills host A's gunicorn (master and workers) and replies once it is gone;
//                  the clients that were on A must get a new PB_CONNECT (through nginx, on B)
//   "reconnected" {clients} -> the test notifies on host B; every client must get it
import { EventSource } from "eventsource";
import { extraArgs, newClient, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const TOPIC = "two-hosts";
const [countArg = "6", mode = "notify"] = extraArgs();
const COUNT = Number(countArg);
if (!["notify", "failover"].includes(mode)) throw new Error(`unknown mode ${mode}`);

// The SDK builds its stream with the global EventSource: give each one a fetch that keeps the
// response's X-Upstream header on the EventSource, so a client knows which host serves it.
globalThis.EventSource = class TrackedEventSource extends EventSource {
  constructor(url, init = {}) {
    const box = {};
    super(url, {
      ...init,
      fetch: async (input, options) => {
        const response = await globalThis.fetch(input, options);
        // $upstream_addr lists every server nginx tried ("A, B" after a failover): keep the last.
        box.source.upstream = response.headers.get("x-upstream")?.split(", ").at(-1) ?? null;
        return response;
      },
    });
    box.source = this;
  }
};

const started = Date.now();
const now = () => Date.now() - started;

function makeClient(index) {
  const pb = newClient();
  const client = { index, pb, connects: [], disconnects: [], received: [] };
  pb.realtime.onDisconnect = (keys) => client.disconnects.push({ keys: [...keys], ms: now() });
  client.ready = Promise.all([
    pb.realtime.subscribe("PB_CONNECT", (data) => {
      client.connects.push({ clientId: data.clientId, upstream: pb.realtime.eventSource?.upstream ?? null, ms: now() });
    }),
    pb.realtime.subscribe(TOPIC, (data) => client.received.push({ ...data, ms: now() })),
  ]);
  return client;
}

const summary = (c) => ({
  index: c.index,
  clientId: c.pb.realtime.clientId,
  upstream: c.connects.at(-1)?.upstream ?? null,
  // Copies: the final unsubscribe disconnects every client (onDisconnect with no keys).
  connects: [...c.connects],
  disconnects: [...c.disconnects],
  received: [...c.received],
});

const gotAll = (clients, count) => clients.every((c) => c.received.length >= count);

run(async (context) => {
  const clients = Array.from({ length: COUNT }, (_, i) => makeClient(i));
  context.partial = { get clients() { return clients.map(summary); } };
  await withTimeout(Promise.all(clients.map((c) => c.ready)), 15000, `${COUNT} clients subscribed`);
  await waitFor(() => clients.every((c) => c.connects.length >= 1), 5000, "a PB_CONNECT on every client");
  const reconnectIntervals = clients[0].pb.realtime.predefinedReconnectIntervals;

  const first = await step("subscribed", { clients: clients.map(summary), reconnectIntervals });
  const expected = mode === "notify" ? 2 : 1;
  await waitFor(() => gotAll(clients, expected), 5000, `${expected} message(s) on every client`);
  if (mode === "notify") {
    await sleep(200); // a duplicate would show up here
    return { mode, first, reconnectIntervals, clients: clients.map(summary) };
  }

  const before = clients.map((c) => c.connects.length);
  const killAsked = now();
  const killed = await step("kill", {}, 20000);
  const onA = clients.filter((c) => c.connects.at(-1).upstream === killed.upstream);
  if (!onA.length) throw new Error(`no client was on the killed host ${killed.upstream}`);
  await waitFor(
    () => onA.every((c) => c.connects.length > before[c.index]),
    15000,
    "a new PB_CONNECT on every client of the killed host",
  );
  const reconnectedAt = now();
  await sleep(300); // let a late disconnect of a client of host B show up
  const second = await step("reconnected", { clients: clients.map(summary) });
  await waitFor(() => gotAll(clients, 2), 5000, "the message after the kill on every client");
  await sleep(200);
  const result = {
    mode,
    first,
    second,
    killed,
    killAsked,
    reconnectedAt,
    reconnectIntervals,
    clients: clients.map(summary),
  };
  await withTimeout(Promise.all(clients.map((c) => c.pb.realtime.unsubscribe())), 5000, "unsubscribe all");
  return result;
}, { limitMs: 45000 });
