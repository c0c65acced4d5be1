// The console's client of connmgr's public API. It authenticates with the
// session cookie (sent by the browser, unreadable here) and sends the
// session's CSRF token with every request that changes something.

let csrfToken = "";
let onSignedOut = () => {};
let onCSRFRefused = () => {};

// setSession records the CSRF token of the signed-in session.
export function setSession(session) {
  csrfToken = session ? session.csrfToken : "";
}

// whenSignedOut sets what to do when the API says the session is gone.
export function whenSignedOut(f) {
  onSignedOut = f;
}

// whenCSRFRefused sets what to do when the API refuses a change for its
// CSRF token: the browser's cookie may now be another session's (signed
// in again in another tab).
export function whenCSRFRefused(f) {
  onCSRFRefused = f;
}

// ApiError is a failed call: its status and the problem+json body.
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }

  // fieldErrors returns the problem's errors[] as {field: reason}.
  get fieldErrors() {
    const out = {};
    for (const e of this.problem.errors || []) out[e.field] = e.reason;
    return out;
  }
}

// call sends one request and returns {status, data, etag}; it throws an
// ApiError for an answer that is not 2xx. opts: {body, ifMatch, form}.
export async function call(method, path, opts = {}) {
  const headers = {Accept: "application/json"};
  let body;
  if (opts.form) {
    body = new URLSearchParams(opts.form);
  } else if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken;
  if (opts.ifMatch) headers["If-Match"] = opts.ifMatch;
  let res;
  try {
    res = await fetch(path, {method, headers, body, credentials: "same-origin", cache: "no-store",
      redirect: "error", signal: opts.signal});
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, {title: "connmgr cannot be reached", detail: "connmgr cannot be reached; check the network and retry"});
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.status === 401 && !opts.noSignOut) onSignedOut();
  if (res.status === 403 && data && data.code === "csrf_failed" && !opts.noSignOut) onCSRFRefused();
  if (!res.ok) throw new ApiError(res.status, data);
  return {status: res.status, data, etag: res.headers.get("ETag")};
}

// get is call("GET", path) that returns the data.
export async function get(path, opts) {
  return (await call("GET", path, opts)).data;
}

// query builds "?a=1&b=2" from the set values of params.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// connectionPath is the API path of a connection (and a sub-resource).
export function connectionPath(name, rest) {
  return `/api/v1/connections/${encodeURIComponent(name)}${rest || ""}`;
}
