// Live counter page: subscribe to the counter topic with the official PocketBase JS SDK and
// redraw on every event. The buttons only POST; the new value comes back as a realtime event,
// to this page and every other one.
(function () {
  "use strict";

  const topic = document.body.dataset.topic;
  const valueEl = document.getElementById("value");
  const statusEl = document.getElementById("status");
  const pb = new PocketBase(window.location.origin);

  // Events may overtake each other when two changes race; keep the newest version only.
  let shownVersion = -1;

  function show(state) {
    if (!state || typeof state.version !== "number" || state.version <= shownVersion) return;
    shownVersion = state.version;
    valueEl.textContent = String(state.value);
    valueEl.classList.remove("bump");
    void valueEl.offsetWidth; // restart the animation
    valueEl.classList.add("bump");
  }

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  // Load the current value. Called once subscribed, so no change can slip in between.
  async function refresh() {
    const response = await fetch("/api/counter", { cache: "no-store" });
    if (!response.ok) throw new Error(`GET /api/counter: ${response.status}`);
    show(await response.json());
  }

  async function post(path) {
    try {
      const response = await fetch(path, { method: "POST" });
      if (!response.ok) throw new Error(`POST ${path}: ${response.status}`);
    } catch (error) {
      console.error(error);
      setStatus("error", "request failed");
    }
  }

  document.getElementById("increment").addEventListener("click", () => post("/api/counter/increment"));
  document.getElementById("reset").addEventListener("click", () => post("/api/counter/reset"));

  // The SDK reconnects by itself (fresh client id, subscriptions sent again); show it.
  pb.realtime.onDisconnect = (activeSubscriptions) => {
    if (activeSubscriptions.length) setStatus("reconnecting", "reconnecting…");
  };

  async function start() {
    try {
      await pb.realtime.subscribe(topic, show);
      await refresh();
      setStatus("live", "live");
      // After every reconnect: reload the value, since events sent while away are lost.
      await pb.realtime.subscribe("PB_CONNECT", () => {
        refresh()
          .then(() => setStatus("live", "live"))
          .catch((error) => {
            console.error(error);
            setStatus("error", "offline");
          });
      });
    } catch (error) {
      console.error(error);
      setStatus("error", "could not connect");
    }
  }

  start();
})();
