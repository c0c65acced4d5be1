// The audit log: filters (connection, actor, action, time range) and the
// API's cursor paging, newest first.

import {get, query} from "../lib/api.js";
import {field, h, replace} from "../lib/dom.js";
import * as schema from "../lib/schema.js";
import {auditRow} from "./connection.js";

export async function render(ctx) {
  const p = ctx.params;
  const st = {connection: p.get("connection") || "", actor: p.get("actor") || "", action: p.get("action") || "",
    since: p.get("since") || "", until: p.get("until") || "", cursor: ""};
  const stack = [];

  const text = (name, label, help) => field({label, name, help,
    control: h("input", {type: "text", name, id: `audit-${name}`, value: st[name], autocomplete: "off"})});
  const localValue = (iso) => {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  const time = (name, label) => field({label, name, help: "In your time zone.",
    control: h("input", {type: "datetime-local", name, id: `audit-${name}`, value: localValue(st[name])})});
  const form = h("form", {class: "filters", role: "search", "aria-label": "Filter the audit log", id: "audit-filters"},
    text("connection", "Connection"),
    text("actor", "Actor", "An API key's name, or connmgr."),
    field({label: "Action", name: "action", control: h("select", {name: "action", id: "audit-action"},
      h("option", {value: ""}, "Any action"),
      schema.auditActions().map((a) => h("option", {value: a, selected: a === st.action}, a)))}),
    time("since", "Since"), time("until", "Until"),
    h("div", {class: "actions"}, h("button", {type: "submit", id: "audit-apply"}, "Apply")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    for (const k of ["connection", "actor", "action"]) st[k] = String(fd.get(k) || "").trim();
    for (const k of ["since", "until"]) st[k] = fd.get(k) ? new Date(String(fd.get(k))).toISOString() : "";
    st.cursor = "";
    stack.length = 0;
    history.replaceState(null, "", `/console/audit${query({connection: st.connection, actor: st.actor, action: st.action,
      since: st.since, until: st.until})}`);
    load();
  });

  const body = h("tbody", {id: "audit-body"});
  const problem = h("p", {class: "error-text", role: "alert", hidden: true});
  const prev = h("button", {type: "button", class: "secondary", id: "audit-prev"}, "← Newer");
  const next = h("button", {type: "button", class: "secondary", id: "audit-next"}, "Older →");
  const label = h("span", {id: "audit-page"});
  let nextCursor = "";
  prev.addEventListener("click", () => {
    st.cursor = stack.pop() || "";
    load();
  });
  next.addEventListener("click", () => {
    stack.push(st.cursor);
    st.cursor = nextCursor;
    load();
  });

  const load = async () => {
    try {
      const page = await get(`/api/v1/audit${query({connection: st.connection, actor: st.actor, action: st.action,
        since: st.since, until: st.until, limit: 50, cursor: st.cursor})}`, {signal: ctx.signal});
      replace(body, page.items.length ? page.items.map(auditRow)
        : h("tr", {}, h("td", {colspan: 4, class: "empty"}, "No events match.")));
      nextCursor = page.nextCursor || "";
      prev.disabled = stack.length === 0;
      next.disabled = !nextCursor;
      label.textContent = `Page ${stack.length + 1}`;
      problem.hidden = true;
    } catch (err) {
      if (err.name === "AbortError") return;
      problem.textContent = `The audit log could not be loaded: ${err.message}`;
      problem.hidden = false;
    }
  };

  replace(ctx.main, h("h1", {}, "Audit log"),
    h("p", {class: "muted"}, "Who did what, newest first. It names changed fields and secret fingerprints, never secret values."),
    form, problem,
    h("div", {class: "table-wrap"}, h("table", {class: "list", id: "audit"},
      h("thead", {}, h("tr", {}, ["When", "Who", "What", "Detail"].map((c) => h("th", {scope: "col"}, c)))), body)),
    h("nav", {class: "pager", "aria-label": "Pages"}, prev, label, next));
  await load();
}
