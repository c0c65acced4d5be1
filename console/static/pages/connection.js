// One connection: every field (secrets only as set / not set), its
// health and token, the token timeline and audit events from the audit
// log, and the buttons Test, Refresh token, Consent / Reconnect, Edit and
// Delete, for the roles that may use them.

import {ApiError, call, connectionPath, get, query} from "../lib/api.js";
import {confirmDialog, h, notice, replace} from "../lib/dom.js";
import {ago, expiry, when} from "../lib/format.js";
import * as schema from "../lib/schema.js";
import {countdown, statusBadge, tickCountdowns} from "./connections.js";

const refreshEvery = 5000;

// shownElsewhere are the fields the page shows in their own sections.
const shownElsewhere = new Set(["name", "security", "token", "status", "statusReason", "statusSince", "lastTest"]);

// consentPolicies have a consent flow (POST .../consent). Neither the
// connection nor the contract's schemas say so; the browser test holds
// this list to connmgr's own (security.ConsentPolicies).
const consentPolicies = new Set(["OAUTH2_AUTHORIZATION_CODE", "OAUTH2_CUSTOM_THREE_LEGGED"]);

const consentSteps = {"consent.started": "Consent started", "consent.finished": "Consent given: tokens obtained",
  "consent.failed": "Consent failed"};

export async function render(ctx) {
  const name = ctx.name;
  const path = connectionPath(name);
  let conn;
  let etag;
  try {
    const res = await call("GET", path, {signal: ctx.signal});
    conn = res.data;
    etag = res.etag;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      replace(ctx.main, h("h1", {}, "No such connection"),
        h("p", {}, "There is no connection ", h("code", {}, name), ", or this key may not see it."),
        h("p", {}, h("a", {href: "/console/"}, "Back to the connections")));
      return;
    }
    throw err;
  }

  const result = h("section", {class: "result", id: "action-result", "aria-live": "polite", hidden: true});
  const health = h("section", {class: "card", id: "health", "aria-labelledby": "health-h"});
  const token = h("section", {class: "card", id: "token", "aria-labelledby": "token-h", hidden: true});
  const settings = h("section", {class: "card", id: "settings", "aria-labelledby": "settings-h"});
  const timeline = h("section", {class: "card", id: "timeline", "aria-labelledby": "timeline-h", hidden: !ctx.can("audit")});
  const events = h("section", {class: "card", id: "events", "aria-labelledby": "events-h", hidden: !ctx.can("audit")});
  const actions = h("div", {class: "actions", id: "actions"});
  replace(ctx.main, h("p", {class: "crumbs"}, h("a", {href: "/console/"}, "Connections"), " / ", name),
    h("div", {class: "title"}, h("h1", {id: "connection-name"}, name), actions),
    result, h("div", {class: "grid"}, health, token, timeline, settings, events));

  const policyName = () => conn.security && conn.security.policy;
  const policy = () => schema.policies("edit").find((p) => p.name === policyName());
  const hasTokens = () => conn.token !== undefined;
  const hasConsent = () => consentPolicies.has(policyName());

  const show = (kind, heading, ...body) => {
    replace(result, h("h2", {}, heading), body);
    result.className = `result ${kind}`;
    result.hidden = false;
  };
  const failed = (what, err) => {
    const errs = err instanceof ApiError ? err.problem.errors || [] : [];
    show("bad", `${what} failed`, h("p", {}, err.message),
      errs.length ? h("ul", {}, errs.map((e) => h("li", {}, h("code", {}, e.field), ": ", e.reason))) : null);
  };
  const busy = async (button, f) => {
    button.disabled = true;
    try {
      await f();
    } finally {
      button.disabled = false;
    }
  };

  let reload = async () => {};

  // act runs an action's call, shows its outcome, and reloads the page.
  const act = (what, f) => async () => {
    try {
      await f();
    } catch (err) {
      failed(what, err);
    }
    await reload();
  };

  const test = act("Test", async () => {
    show("pending", "Testing…", h("p", {}, "connmgr obtains the credential and calls the target."));
    const r = (await call("POST", connectionPath(name, "/test"))).data;
    show(r.result === "SUCCESS" ? "ok" : "bad", `Test: ${r.result}`,
      h("p", {}, r.detail, " ", h("span", {class: "muted"}, `(${r.latencyMs} ms)`)),
      h("ol", {class: "steps", id: "test-steps"}, (r.steps || []).map((s) =>
        h("li", {class: s.result === "SUCCESS" ? "ok-text" : "bad-text"},
          h("strong", {}, s.step), `: ${s.result}`, s.detail ? ` — ${s.detail}` : ""))));
  });

  const refresh = act("Refresh", async () => {
    const t = (await call("POST", connectionPath(name, "/token/refresh"))).data;
    show("ok", "Token refreshed", h("p", {}, expiry(t).text));
  });

  // consent opens the provider's page in this tab; the page connmgr shows
  // when the provider comes back links to this one.
  const consent = async () => {
    try {
      const c = (await call("POST", connectionPath(name, "/consent"))).data;
      const u = new URL(c.authorizationUrl);
      if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error("the authorization URL is not http(s)");
      show("pending", "Opening the provider's page…",
        h("p", {}, "After consent the provider returns to connmgr, whose page links back here."));
      location.assign(u.href);
    } catch (err) {
      failed("Consent", err);
    }
  };

  const remove = async () => {
    const yes = await confirmDialog({title: `Delete ${name}?`, danger: true, confirm: "Delete",
      message: "The connection and its tokens are deleted; integrations that invoke it fail from now on. This cannot be undone."});
    if (!yes) return;
    try {
      await call("DELETE", path, {ifMatch: etag});
      notice(`Deleted ${name}.`, "ok");
      ctx.navigate("/console/");
    } catch (err) {
      failed("Delete", err.status === 412 ? new Error("Someone changed the connection meanwhile; review it and try again.") : err);
      await reload();
    }
  };

  let drawn = "";
  const drawActions = () => {
    // Drawn again only when what it offers changes, so that focus stays.
    const sig = JSON.stringify([hasTokens(), hasConsent(), conn.status]);
    if (sig === drawn) return;
    drawn = sig;
    if (!ctx.can("write")) {
      replace(actions, h("span", {class: "muted small"}, `Read only (${ctx.session.key.role})`));
      return;
    }
    const focusId = actions.contains(document.activeElement) ? document.activeElement.id : "";
    const button = (id, label, cls, f) => {
      const b = h("button", {type: "button", id, class: cls}, label);
      b.addEventListener("click", () => busy(b, f));
      return b;
    };
    replace(actions,
      button("test", "Test", null, test),
      hasTokens() ? button("refresh-token", "Refresh token", "secondary", refresh) : null,
      hasConsent() ? button("consent", conn.status === "NEEDS_CONSENT" ? "Consent" : "Reconnect", "secondary", consent) : null,
      h("a", {href: `/console/connections/${encodeURIComponent(name)}/edit`, class: "button secondary", id: "edit"}, "Edit"),
      button("delete", "Delete", "danger", remove));
    if (focusId && document.getElementById(focusId)) document.getElementById(focusId).focus();
  };

  const drawHealth = () => {
    const lt = conn.lastTest;
    replace(health, h("h2", {id: "health-h"}, "Health"), h("dl", {},
      dt("Status"), h("dd", {id: "status"}, statusBadge(conn.status)),
      conn.statusReason ? [dt("Reason"), h("dd", {id: "status-reason", class: "reason"}, conn.statusReason)] : null,
      conn.statusSince ? [dt("Since"), h("dd", {}, `${when(conn.statusSince)} (${ago(conn.statusSince)})`)] : null,
      dt("Last test"), h("dd", {id: "last-test"}, lt
        ? [h("span", {class: lt.result === "SUCCESS" ? "ok-text" : "bad-text"}, lt.result), ` ${when(lt.at)}`,
          lt.detail ? h("div", {class: "small"}, lt.detail) : null]
        : "never")));
  };

  const drawToken = (t) => {
    token.hidden = !hasTokens();
    if (!hasTokens()) return;
    const info = t || conn.token;
    replace(token, h("h2", {id: "token-h"}, "Token"), h("p", {class: "muted small"}, "Metadata only: connmgr never shows a token."),
      h("dl", {},
        dt("Expiry"), h("dd", {id: "token-expiry"}, countdown(info, expiry(info))),
        t ? [
          dt("Obtained"), h("dd", {}, t.obtainedAt ? when(t.obtainedAt) : "—"),
          dt("Scheduled refresh"), h("dd", {}, t.refreshAt ? when(t.refreshAt) : "—"),
          dt("Last refresh"), h("dd", {}, t.lastRefreshAt ? when(t.lastRefreshAt) : "—"),
          dt("Scopes"), h("dd", {}, t.scopes && t.scopes.length ? t.scopes.join(" ") : "—"),
          dt("Refreshable"), h("dd", {}, t.refreshable ? "yes" : "no: someone must consent"),
          dt("Failures in a row"), h("dd", {}, String(t.failures || 0)),
          t.lastError ? [dt("Last error"), h("dd", {class: "reason", id: "token-error"}, t.lastError)] : null,
          t.nextAttemptAt ? [dt("No attempt before"), h("dd", {}, when(t.nextAttemptAt))] : null,
        ] : null));
  };

  const drawSettings = () => {
    const p = policy();
    const sec = conn.security || {};
    const secret = new Set(p ? schema.secretFields(p) : []);
    const keys = [...new Set([...(p ? Object.keys(p.schema.properties) : []), ...Object.keys(sec)])].filter((k) => k !== "policy");
    replace(settings, h("h2", {id: "settings-h"}, "Settings"),
      h("dl", {id: "fields"}, Object.entries(conn).filter(([k]) => !shownElsewhere.has(k)).map(([k, v]) =>
        [dt(schema.label(k)), h("dd", {"data-field": k}, value(v))])),
      h("h3", {}, "Security: ", h("code", {}, policyName())),
      h("dl", {id: "security-fields"}, keys.map((k) => [dt(schema.label(k)), h("dd", {"data-field": `security.${k}`},
        secret.has(k) || sec[k] === "********" ? secretState(sec[k] === "********") : value(sec[k]))])));
  };

  const drawTimeline = (items, t) => {
    const entries = [];
    if (t && t.obtainedAt) entries.push({at: t.obtainedAt, kind: "ok", text: "Token obtained (the one in use)"});
    const apart = (a, b) => Math.abs(new Date(a) - new Date(b)) > 2000;
    if (t && t.lastRefreshAt && (!t.obtainedAt || apart(t.lastRefreshAt, t.obtainedAt))) {
      entries.push({at: t.lastRefreshAt, kind: t.lastError ? "bad" : "ok",
        text: t.lastError ? `Last token request failed: ${t.lastError}` : "Token refreshed"});
    }
    for (const e of items) {
      const d = e.detail || {};
      if (e.action === "connection.tested") {
        entries.push({at: e.at, kind: d.result === "SUCCESS" ? "ok" : "bad", text: `Test ${d.result}: ${d.detail || ""}`});
      } else if (e.action === "token.refresh_failed") {
        entries.push({at: e.at, kind: "bad", text: `Token request failed: ${d.reason || ""}`});
      } else if (e.action === "status.changed") {
        entries.push({at: e.at, kind: d.to === "CONFIGURED" ? "ok" : d.to === "DRAFT" ? "" : "bad",
          text: `Status ${d.from || "—"} → ${d.to}${d.detail ? `: ${d.detail}` : ""}`});
      } else if (consentSteps[e.action]) {
        entries.push({at: e.at, kind: e.action === "consent.failed" ? "bad" : "ok",
          text: `${consentSteps[e.action]}${d.detail ? `: ${d.detail}` : ""}`});
      } else if (e.action === "connection.updated" && d.credentialsReset) {
        entries.push({at: e.at, kind: "", text: "Credentials changed: the stored token was dropped"});
      } else if (e.action === "connection.created") {
        entries.push({at: e.at, kind: "", text: "Connection created"});
      }
    }
    entries.sort((a, b) => new Date(b.at) - new Date(a.at));
    replace(timeline, h("h2", {id: "timeline-h"}, "Token timeline"),
      entries.length ? h("ol", {class: "timeline", id: "timeline-list"}, entries.slice(0, 50).map((e) =>
        h("li", {class: e.kind ? `${e.kind}-mark` : null}, h("time", {datetime: e.at}, when(e.at)), " ", e.text)))
        : h("p", {class: "muted"}, "Nothing yet."));
  };

  let eventsCursor = "";
  let older = false; // older events were loaded: the table no longer follows the log
  const eventRows = h("tbody", {id: "events-body"});
  const more = h("button", {type: "button", class: "secondary", id: "events-more", hidden: true}, "Older events");
  replace(events, h("h2", {id: "events-h"}, "Audit events"),
    h("div", {class: "table-wrap"}, h("table", {class: "list compact"},
      h("thead", {}, h("tr", {}, ["When", "Who", "What", "Detail"].map((c) => h("th", {scope: "col"}, c)))), eventRows)), more);
  const drawEvents = (items, nextCursor, append) => {
    if (!append) replace(eventRows);
    for (const e of items) eventRows.append(auditRow(e));
    if (!eventRows.children.length) eventRows.append(h("tr", {}, h("td", {colspan: 4, class: "empty"}, "No events.")));
    eventsCursor = nextCursor || "";
    more.hidden = !eventsCursor;
  };
  more.addEventListener("click", () => busy(more, async () => {
    older = true;
    const page = await get(`/api/v1/audit${query({connection: name, limit: 50, cursor: eventsCursor})}`);
    drawEvents(page.items, page.nextCursor, true);
  }));

  reload = async () => {
    try {
      const res = await call("GET", path, {signal: ctx.signal});
      conn = res.data;
      etag = res.etag;
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && err.status === 404) {
        notice(`${name} was deleted.`, "warn");
        ctx.navigate("/console/", {replaceState: true});
      }
      return;
    }
    const [t, log] = await Promise.all([
      hasTokens() ? get(connectionPath(name, "/token"), {signal: ctx.signal}).catch(() => null) : null,
      ctx.can("audit") ? get(`/api/v1/audit${query({connection: name, limit: 50})}`, {signal: ctx.signal}).catch(() => null) : null,
    ]);
    if (ctx.signal.aborted) return;
    drawHealth();
    drawToken(t);
    drawSettings();
    if (log) {
      drawTimeline(log.items, t);
      if (!older) drawEvents(log.items, log.nextCursor, false);
    }
    drawActions();
  };

  await reload();
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") reload();
  }, refreshEvery);
  const tick = setInterval(() => tickCountdowns(ctx.main), 1000);
  ctx.signal.addEventListener("abort", () => {
    clearInterval(timer);
    clearInterval(tick);
  });
}

function dt(text) {
  return h("dt", {}, text);
}

function secretState(set) {
  return h("span", {class: `badge ${set ? "set" : "unset"}`}, set ? "set" : "not set");
}

// value shows a field's value as text: lists as chips, objects as nested
// lists, secrets ("********") as set, times in the browser's zone.
export function value(v) {
  if (v === undefined || v === null || v === "") return h("span", {class: "muted"}, "—");
  if (v === "********") return secretState(true);
  if (Array.isArray(v)) {
    if (!v.length) return h("span", {class: "muted"}, "—");
    return v.map((x) => h("span", {class: "chip"}, typeof x === "object" ? JSON.stringify(x) : String(x)));
  }
  if (typeof v === "object") {
    const entries = Object.entries(v);
    if (!entries.length) return h("span", {class: "muted"}, "—");
    return h("dl", {class: "nested"}, entries.map(([k, x]) => [h("dt", {}, k), h("dd", {}, value(x))]));
  }
  if (typeof v === "string" && /^\d{4}-\d\d-\d\dT/.test(v)) return h("span", {title: v}, when(v));
  return String(v);
}

// auditRow is one audit event as a table row.
export function auditRow(e) {
  const d = e.detail || {};
  return h("tr", {"data-action": e.action},
    h("td", {"data-label": "When"}, h("time", {datetime: e.at, title: e.at}, when(e.at))),
    h("td", {"data-label": "Who"}, e.actor),
    h("td", {"data-label": "What"}, h("code", {}, e.action), e.connection ? h("div", {class: "small"}, e.connection) : null),
    h("td", {"data-label": "Detail"}, Object.keys(d).length
      ? Object.entries(d).map(([k, v]) => h("div", {class: "small"}, h("span", {class: "muted"}, `${k}: `),
        Array.isArray(v) ? v.join(", ") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)))
      : h("span", {class: "muted"}, "—")));
}
