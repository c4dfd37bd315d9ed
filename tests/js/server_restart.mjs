// The server goes away (and, with the argument "restart", comes back on the same port).
//   node server_restart.mjs URL disconnect|restart
// Steps:
//   "connected" {clientId}  -> test notifies "example" -> reply {delivered}
//   "stop-server"           -> test stops the server   -> reply {}
//   then onDisconnect must be called with the active keys (the result lists every call, with
//   its time after the stop was asked, and the PB_CONNECTs seen while the server was stopping);
//   "start-server"          -> (restart only) test starts a new server on the same port
//   "reconnected" {clientId} -> (restart only) test notifies "example" -> reply {delivered}
import { extraArgs, newClient, realtimePosts, run, sleep, step, waitFor, withTimeout } from "./lib.mjs";

const mode = extraArgs()[0] || "restart";
if (!["disconnect", "restart"].includes(mode)) throw new Error(`unknown mode ${mode}`);

run(async (context) => {
  const pb = newClient();
  const connects = [];
  const received = [];
  const disconnects = [];
  pb.realtime.onDisconnect = (activeKeys) => disconnects.push({ keys: [...activeKeys], at: Date.now() });
  await withTimeout(pb.realtime.subscribe("PB_CONNECT", (data) => connects.push(data)), 10000, "subscribe(PB_CONNECT)");
  await withTimeout(pb.realtime.subscribe("example", (data) => received.push(data)), 10000, "subscribe(example)");
  await waitFor(() => connects.length >= 1, 5000, "the first PB_CONNECT");
  const firstClientId = pb.realtime.clientId;
  context.partial = { connects, received, disconnects };

  const first = await step("connected", { clientId: firstClientId });
  await waitFor(() => received.length >= 1, 5000, "the first message");

  const stopAsked = Date.now();
  // The reply comes once the server process has exited.
  await step("stop-server", {}, 30000);
  await waitFor(() => disconnects.length >= 1, 10000, "onDisconnect after the server stopped");
  await sleep(300); // let a late disconnect (a stream that outlived the stop) show up
  const afterStop = {
    disconnects: disconnects.map((d) => d.keys),
    disconnectMs: disconnects[0].at - stopAsked,
    disconnectTimesMs: disconnects.map((d) => d.at - stopAsked),
    connectsDuringStop: connects.length - 1,
    clientIdAfterDisconnect: pb.realtime.clientId,
    isConnectedAfterDisconnect: pb.realtime.isConnected,
  };
  if (mode === "disconnect") {
    return { firstClientId, firstDelivered: first.delivered, received, connects, ...afterStop };
  }

  // The old server is gone: any PB_CONNECT from now on comes from the new one.
  const connectsBeforeStart = connects.length;
  const startAsked = Date.now();
  await step("start-server", {}, 30000);
  // The SDK retries after 200, 300, 500, 1000, 1200, 1500, 2000 ms...; it needs at most a
  // couple of seconds once the server is back.
  await waitFor(() => connects.length > connectsBeforeStart, 15000, "PB_CONNECT after the restart");
  const reconnectMs = Date.now() - startAsked;
  const secondClientId = pb.realtime.clientId;
  const second = await step("reconnected", { clientId: secondClientId });
  await waitFor(() => received.length >= 2, 5000, "a message after the restart");
  const result = {
    firstClientId,
    secondClientId,
    firstDelivered: first.delivered,
    secondDelivered: second.delivered,
    received,
    connects,
    reconnectMs,
    lastPost: realtimePosts().at(-1),
    ...afterStop,
  };
  await withTimeout(pb.realtime.unsubscribe(), 5000, "unsubscribe all");
  return result;
});
