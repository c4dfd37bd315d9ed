// Shared todos page. The official PocketBase JS SDK keeps the list live: one subscription to the
// collection's record events, `pb.collection("todos").subscribe("*", ...)`; the server only sends
// the events this user may see (and, with transitions, a delete when a todo stops being visible).
// Changes go through the app's JSON API with `pb.send`, which adds the auth token.
import PocketBase, { BaseAuthStore } from "/vendor/pocketbase.es.mjs";

const collection = document.body.dataset.collection;
// An in-memory auth store: every tab signs in on its own (the default store is shared by all the
// tabs of an origin through localStorage, which would make alice's tab bob's).
const pb = new PocketBase(window.location.origin, new BaseAuthStore());
const todos = new Map(); // id -> record

const $ = (id) => document.getElementById(id);

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function mine(record) {
  return pb.authStore.record !== null && record.owner === pb.authStore.record.id;
}

function button(label, action, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.dataset.action = action;
  element.addEventListener("click", onClick);
  return element;
}

function todoItem(record) {
  const item = document.createElement("li");
  item.dataset.id = record.id;
  item.classList.toggle("done", record.done);

  const done = document.createElement("input");
  done.type = "checkbox";
  done.checked = record.done;
  done.disabled = !mine(record);
  done.addEventListener("change", () => change(record.id, { done: done.checked }));

  const title = document.createElement("span");
  title.className = "title";
  title.textContent = record.title;

  item.append(done, title);
  if (record.shared) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "shared";
    item.append(badge);
  }
  if (mine(record)) {
    item.append(
      button(record.shared ? "unshare" : "share", "share", () => change(record.id, { shared: !record.shared })),
      button("×", "delete", () => request(`/api/todos/${record.id}`, { method: "DELETE" })),
    );
  }
  return item;
}

function render() {
  const ordered = [...todos.values()].sort(
    (a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id),
  );
  $("todos").replaceChildren(...ordered.map(todoItem));
  $("empty").hidden = ordered.length > 0;
}

// A record event: {action: "create" | "update" | "delete", record}.
function apply(event) {
  if (event.action === "delete") todos.delete(event.record.id);
  else todos.set(event.record.id, event.record);
  render();
}

async function request(path, options = {}) {
  try {
    return await pb.send(path, options);
  } catch (error) {
    console.error(error);
    setStatus("error", error.message || "request failed");
    return null;
  }
}

function change(id, fields) {
  return request(`/api/todos/${id}`, { method: "PATCH", body: fields });
}

// The list as it is now. Loaded once subscribed, so no change slips in between.
async function refresh() {
  const list = await pb.send("/api/todos", { method: "GET" });
  todos.clear();
  for (const record of list) todos.set(record.id, record);
  render();
}

async function signIn(name) {
  const auth = await pb.send("/api/login", { method: "POST", body: { name } });
  pb.authStore.save(auth.token, auth.record);
  $("user").textContent = auth.record.name;
  $("login").hidden = true;
  $("signed-in").hidden = false;
}

async function start() {
  // The SDK reconnects by itself (new client id, subscriptions sent again): show it, and reload
  // the list afterwards, since events sent while away are lost.
  pb.realtime.onDisconnect = (active) => {
    if (active.length) setStatus("reconnecting", "reconnecting…");
  };
  await pb.collection(collection).subscribe("*", apply);
  await refresh();
  setStatus("live", "live");
  await pb.realtime.subscribe("PB_CONNECT", () => {
    refresh()
      .then(() => setStatus("live", "live"))
      .catch((error) => {
        console.error(error);
        setStatus("error", "offline");
      });
  });
}

$("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const created = await request("/api/todos", {
    method: "POST",
    body: { title: $("title").value, shared: $("share").checked },
  });
  if (created) $("title").value = "";
});

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  // The realtime connection keeps the auth it was opened with, so sign in through a fresh page.
  window.location.search = `?user=${encodeURIComponent($("name").value.trim())}`;
});

$("logout").addEventListener("click", (event) => {
  event.preventDefault();
  window.location.search = "";
});

async function main() {
  const user = new URLSearchParams(window.location.search).get("user");
  if (user) await signIn(user);
  else $("login").hidden = false; // guests see the shared todos
  await start();
}

main().catch((error) => {
  console.error(error);
  setStatus("error", "could not connect");
});
