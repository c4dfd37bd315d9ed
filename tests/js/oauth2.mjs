// The official SDK's authWithOAuth2({provider, urlCallback}) against examples/oauth2_login.py and
// the stand-in provider (examples/oauth2_provider.py); urlCallback plays the browser popup.
//   node oauth2.mjs URL [REDIRECT_BASE]
// The popup follows the provider's authorize URL, then goes where the provider sends it (a 302,
// or a form_post page it submits). With REDIRECT_BASE the popup's redirect goes to that server
// instead of URL's (another process of the same app: the @oauth2 client is not there).
// Scenarios, each with a fresh SDK client:
//   ok           the promise resolves with {token, record, meta}; the popup lands on /success;
//                the token is the app's (GET /api/me); replaying the redirect lands on /failure
//   form_post    the provider POSTs the code back (response_mode=form_post): 303 to /success
//   deny         the provider answers error=access_denied: the promise rejects, /failure
//   wrong_state  the state is not a client id: /failure, no event, the promise stays pending
//                (until cancelled, as with PocketBase)
//   not_subscribed  the state is another live client that does not hold @oauth2: /failure
import { PocketBase, describeError, log, run, serverUrl, extraArgs, sleep, withTimeout } from "./lib.mjs";

const PROVIDER = "example";

function popup(redirectBase, tweak, seen) {
  return async (authorizeUrl) => {
    const url = new URL(authorizeUrl);
    tweak?.(url);
    seen.authorize = { state: url.searchParams.get("state"), redirectUri: url.searchParams.get("redirect_uri") };
    const answer = await fetch(url, { redirect: "manual" });
    let target;
    let init = { redirect: "manual" };
    if (answer.status === 302) {
      target = new URL(answer.headers.get("location"));
    } else if (answer.status === 200) {
      const page = await answer.text();
      const action = page.match(/action="([^"]+)"/)[1].replaceAll("&amp;", "&");
      const fields = new URLSearchParams();
      for (const [, name, value] of page.matchAll(/name="([^"]+)" value="([^"]*)"/g)) fields.append(name, value);
      target = new URL(action);
      init = { ...init, method: "POST", body: fields, headers: { "Content-Type": "application/x-www-form-urlencoded" } };
    } else {
      throw new Error(`the provider answered ${answer.status}: ${await answer.text()}`);
    }
    if (redirectBase) {
      const other = new URL(redirectBase);
      target.host = other.host;
    }
    const landed = await fetch(target, init);
    seen.redirect = { method: init.method || "GET", url: String(target), status: landed.status,
      location: landed.headers.get("location") };
    seen.init = init;
  };
}

async function attempt(url, redirectBase, tweak, { pendingMs = 0 } = {}) {
  const pb = new PocketBase(url);
  const seen = {};
  const requestKey = `oauth2-${Math.random()}`;
  const promise = pb.collection("users").authWithOAuth2({
    provider: PROVIDER, urlCallback: popup(redirectBase, tweak, seen), requestKey,
  });
  if (pendingMs) {
    const early = await Promise.race([promise.then(() => "resolved", () => "rejected"), sleep(pendingMs).then(() => "pending")]);
    seen.afterRedirect = early;
    pb.cancelRequest(requestKey);
  }
  try {
    const auth = await withTimeout(promise, 10000, "authWithOAuth2");
    return { pb, seen, auth };
  } catch (error) {
    return { pb, seen, error: { ...describeError(error), original: String(error?.originalError?.message ?? "") } };
  }
}

run(async (context) => {
  const url = serverUrl();
  const redirectBase = extraArgs()[0] || "";
  const results = {};
  context.partial.results = results;

  const ok = await attempt(url, redirectBase);
  if (ok.error) throw new Error(`authWithOAuth2 failed: ${JSON.stringify(ok.error)} ${JSON.stringify(ok.seen)}`);
  const me = await fetch(`${url}/api/me`, { headers: { Authorization: ok.auth.token } });
  const replay = await fetch(ok.seen.redirect.url, { redirect: "manual" });
  results.ok = {
    seen: ok.seen, token: ok.auth.token, record: ok.auth.record, meta: ok.auth.meta,
    storeToken: ok.pb.authStore.token, storeRecordId: ok.pb.authStore.record?.id,
    me: { status: me.status, body: await me.json() },
    replay: { status: replay.status, location: replay.headers.get("location") },
  };
  log("ok", results.ok.seen);

  const formPost = await attempt(url, redirectBase, (u) => u.searchParams.set("response_mode", "form_post"));
  results.form_post = { seen: formPost.seen, token: formPost.auth?.token, error: formPost.error };

  const deny = await attempt(url, redirectBase, (u) => u.searchParams.set("outcome", "deny"));
  results.deny = { seen: deny.seen, resolved: !!deny.auth, error: deny.error };

  const wrong = await attempt(url, redirectBase, (u) => u.searchParams.set("state", "x".repeat(40)), { pendingMs: 600 });
  results.wrong_state = { seen: wrong.seen, resolved: !!wrong.auth, error: wrong.error };

  const other = new PocketBase(url);
  const otherEvents = [];
  await other.realtime.subscribe("some-topic", (e) => otherEvents.push(e));
  const foreign = await attempt(url, redirectBase, (u) => u.searchParams.set("state", other.realtime.clientId), { pendingMs: 600 });
  await other.realtime.unsubscribe();
  results.not_subscribed = { seen: foreign.seen, resolved: !!foreign.auth, error: foreign.error, otherEvents };
  return { results };
}, { limitMs: 40000 });
