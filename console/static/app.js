// The console's entry: the session, the navigation and the router. Each
// page is a module whose render(ctx) draws into <main>; ctx.signal aborts
// when the page is left, which stops its timers and requests.

import {call, setSession, whenCSRFRefused, whenSignedOut} from "./lib/api.js";
import {h, notice, pageShown, replace} from "./lib/dom.js";
import * as schema from "./lib/schema.js";
import * as audit from "./pages/audit.js";
import * as connection from "./pages/connection.js";
import * as connections from "./pages/connections.js";
import * as form from "./pages/form.js";
import * as invoker from "./pages/invoker.js";
import * as keys from "./pages/keys.js";
import * as signin from "./pages/signin.js";

const main = document.getElementById("main");
let session = null;
let current = null; // the AbortController of the page shown

const routes = [
  {re: /^\/console\/signin$/, page: signin, open: true},
  {re: /^\/console\/?$/, page: connections, perm: "read", section: "connections"},
  {re: /^\/console\/connections\/new$/, page: form, perm: "write", section: "connections", args: () => ({name: null})},
  {re: /^\/console\/connections\/([^/]+)\/edit$/, page: form, perm: "write", section: "connections",
    args: (m) => ({name: decodeURIComponent(m[1])})},
  {re: /^\/console\/connections\/([^/]+)$/, page: connection, perm: "read", section: "connections",
    args: (m) => ({name: decodeURIComponent(m[1])})},
  {re: /^\/console\/keys$/, page: keys, perm: "manageKeys", section: "keys"},
  {re: /^\/console\/audit$/, page: audit, perm: "audit", section: "audit"},
];

// can reports whether the signed-in key's role allows perm.
function can(perm) {
  return Boolean(session && session.permissions.includes(perm));
}

// navigate shows the page at path (a /console/ path with its query).
export function navigate(path, {replaceState = false} = {}) {
  if (!path.startsWith("/console/")) path = "/console/";
  if (replaceState) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  return show();
}

function showNav() {
  const signedIn = Boolean(session);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  if (!signedIn) return;
  for (const a of document.querySelectorAll("#nav a")) a.hidden = !can(a.dataset.perm);
  document.getElementById("who-name").textContent = session.key.name;
  document.getElementById("who-role").textContent = session.key.role;
}

async function show() {
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  let url = new URL(location.href);
  let route = routes.find((r) => r.re.test(url.pathname));
  pageShown();
  showNav();
  if (!route) {
    replace(main, h("h1", {tabindex: "-1"}, "Not found"), h("p", {}, "There is no such page in the console."),
      h("p", {}, h("a", {href: "/console/"}, "Back to the connections")));
    return;
  }
  if (!route.open && !session) {
    const next = url.pathname + url.search;
    history.replaceState(null, "", `/console/signin?next=${encodeURIComponent(next)}`);
    url = new URL(location.href);
    route = routes[0];
  }
  if (session && route.perm && !can(route.perm)) {
    // An invoker may read no connection: it gets its own page.
    route = route.section === "connections" && !can("read") && route.page === connections ? {page: invoker} : null;
    if (!route) {
      replace(main, h("h1", {tabindex: "-1"}, "Not allowed"),
        h("p", {}, `The role of this API key (${session.key.role}) does not allow this page.`));
      return;
    }
  }
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.section === route.section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const m = url.pathname.match(route.re || /^/);
  const ctx = {main, session, can, navigate, signal, params: url.searchParams, signedIn,
    ...(route.args ? route.args(m) : {})};
  try {
    await route.page.render(ctx);
  } catch (err) {
    if (err.name === "AbortError" || signal.aborted) return;
    replace(main, h("h1", {tabindex: "-1"}, "Something went wrong"), h("p", {class: "error-text"}, err.message));
  }
  const h1 = main.querySelector("h1");
  if (h1 && !main.contains(document.activeElement)) {
    h1.setAttribute("tabindex", "-1");
    h1.focus({preventScroll: true});
  }
}

// signedIn records a new session and goes to next.
function signedIn(s, next) {
  session = s;
  setSession(s);
  notice("");
  navigate(next && next.startsWith("/console/") && !next.startsWith("/console/signin") ? next : "/console/",
    {replaceState: true});
}

// signedOut forgets the session and shows the sign-in page.
function signedOut(message) {
  if (!session) return;
  session = null;
  setSession(null);
  notice(message || "", "warn");
  const next = location.pathname + location.search;
  navigate(`/console/signin?next=${encodeURIComponent(next)}`, {replaceState: true});
}

whenSignedOut(() => signedOut("Your session has ended: it expired, was signed out, or its API key was revoked. Sign in again."));

// A change refused for its CSRF token may mean that the browser's cookie
// is now another session's: another tab signed in again (perhaps with
// another key). The page then follows the browser's session, and says so.
whenCSRFRefused(async () => {
  if (!session) return;
  let res;
  try {
    res = await call("GET", "/console/session", {noSignOut: true});
  } catch (err) {
    if (err.status === 401) signedOut("Your session has ended (signed out in another tab?). Sign in again.");
    return;
  }
  if (!session || !res.data || res.data.csrfToken === session.csrfToken) return;
  session = res.data;
  setSession(session);
  await show();
  notice(`The session changed in another tab: you are now signed in as ${session.key.name} (${session.key.role}). ` +
    "What you did last was not done; check the page and try again.", "warn");
});

// endSession ends the browser's session on the server. When the cookie is
// no longer this page's session (another tab signed in again), the page
// asks for the session the cookie is and ends that one: whoever presses
// Sign out wants the browser signed out. It reports whether connmgr ended
// the session.
async function endSession() {
  try {
    await call("DELETE", "/console/session", {noSignOut: true});
    return true;
  } catch (err) {
    if (err.status !== 403 || err.problem.code !== "csrf_failed") return false;
  }
  try {
    const res = await call("GET", "/console/session", {noSignOut: true});
    setSession(res.data);
    await call("DELETE", "/console/session", {noSignOut: true});
    return true;
  } catch (err) {
    return err.status === 401; // no session is left
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  const ended = await endSession();
  signedOut("Signed out.");
  if (ended) notice("Signed out.", "ok");
  else notice("Signed out of this page, but connmgr could not be reached to end the session: sign out again, or close the browser.", "warn");
});

// Links inside the console are followed without a reload.
document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  if (a.target || a.hasAttribute("download") || a.origin !== location.origin || !a.pathname.startsWith("/console/")) return;
  if (a.pathname.startsWith("/console/static/") || (a.getAttribute("href") || "").startsWith("#")) return;
  ev.preventDefault();
  navigate(a.pathname + a.search);
});

window.addEventListener("popstate", () => show());

async function start() {
  try {
    const [res] = await Promise.all([call("GET", "/console/session", {noSignOut: true}).catch((e) => e), schema.load()]);
    if (res && res.data && res.data.csrfToken) {
      session = res.data;
      setSession(session);
    }
  } catch (err) {
    replace(main, h("h1", {}, "connmgr cannot be reached"), h("p", {}, err.message));
    return;
  }
  await show();
}

start();
