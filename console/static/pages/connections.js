// The connections list: status with its reason, token expiry as a
// countdown, last test; filters, search and the API's cursor paging; or,
// when asked, broken and soon-to-expire first. It refreshes itself.

import {ApiError, get, query} from "../lib/api.js";
import {field, h, replace} from "../lib/dom.js";
import {ago, broken, expiry, urgency, when} from "../lib/format.js";
import * as schema from "../lib/schema.js";

// refreshEvery is how often the list reloads itself, in ms.
const refreshEvery = 5000;
// attentionMax bounds what "broken first" loads to sort: the API orders by
// name only, so that order is made here, over at most this many.
const attentionMax = 2000;
const pageSizes = [25, 50, 100, 200, 500];
// shortPageHops bounds the requests that fill one page of a search.
const shortPageHops = 10;

// prevCursors keeps, per filter, the cursors of the pages before this one.
const prevCursors = new Map();

export async function render(ctx) {
  const p = ctx.params;
  const st = {q: p.get("q") || "", status: p.get("status") || "", role: p.get("role") || "",
    policy: p.get("policy") || "", order: p.get("order") === "attention" ? "attention" : "name",
    limit: pageSizes.includes(Number(p.get("limit"))) ? Number(p.get("limit")) : 50,
    cursor: p.get("cursor") || "", page: Math.max(1, Number(p.get("page")) || 1)};
  // The stack of the cursors of the pages before this one, per filter.
  const stack = () => {
    const key = JSON.stringify([st.q, st.status, st.role, st.policy, st.order, st.limit]);
    if (!prevCursors.has(key)) prevCursors.set(key, []);
    return prevCursors.get(key);
  };

  // go changes what is shown in place (the URL follows, for reloads and
  // links) without drawing the page again: focus stays where it is.
  const go = (changes, {redraw = false} = {}) => {
    Object.assign(st, changes);
    const q = query({q: st.q, status: st.status, role: st.role, policy: st.policy,
      order: st.order === "attention" ? "attention" : "", limit: st.limit === 50 ? "" : st.limit,
      cursor: st.order === "name" ? st.cursor : "", page: st.order === "attention" && st.page > 1 ? st.page : ""});
    history.replaceState(null, "", `/console/${q}`);
    if (redraw) draw();
    else load();
  };
  const filtered = (changes) => {
    Object.assign(st, changes);
    prevCursors.delete(JSON.stringify([st.q, st.status, st.role, st.policy, st.order, st.limit]));
    go({cursor: "", page: 1});
  };

  const select = (name, label, values, value, all) => field({label, name, control: h("select", {id: `filter-${name}`,
    onchange: (ev) => filtered({[name]: ev.target.value})},
    h("option", {value: ""}, all), values.map((v) => h("option", {value: v, selected: v === value}, v)))});
  const search = h("input", {type: "search", id: "filter-q", value: st.q, maxlength: 100, autocomplete: "off",
    placeholder: "Name or keyword"});
  let debounce = 0;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => filtered({q: search.value.trim()}), 350);
  });
  const filters = h("form", {class: "filters", role: "search", "aria-label": "Filter connections",
    onsubmit: (ev) => { ev.preventDefault(); clearTimeout(debounce); filtered({q: search.value.trim()}); }},
    field({label: "Search", control: search, name: "q"}),
    select("status", "Status", schema.enumOf("Status"), st.status, "Any status"),
    select("role", "Role", schema.enumOf("Role"), st.role, "Any role"),
    select("policy", "Policy", schema.policies("edit").map((x) => x.name), st.policy, "Any policy"),
    field({label: "Order", name: "order", control: h("select", {id: "filter-order",
      onchange: (ev) => filtered({order: ev.target.value})},
      h("option", {value: "name", selected: st.order === "name"}, "By name"),
      h("option", {value: "attention", selected: st.order === "attention"}, "Broken and soon-to-expire first"))}),
    field({label: "Per page", name: "limit", control: h("select", {id: "filter-limit",
      onchange: (ev) => filtered({limit: Number(ev.target.value)})},
      pageSizes.map((n) => h("option", {value: n, selected: n === st.limit}, n)))}));

  const status = h("p", {class: "muted small", id: "list-status", "aria-live": "polite"});
  const body = h("tbody", {id: "connections-body"});
  const table = h("table", {class: "list", id: "connections"},
    h("caption", {class: "visually-hidden"}, "Connections"),
    h("thead", {}, h("tr", {}, ["Name", "Role", "Policy", "Status", "Token", "Last test"].map((c) => h("th", {scope: "col"}, c)))),
    body);
  const prev = h("button", {type: "button", id: "prev-page", class: "secondary"}, "← Previous");
  const next = h("button", {type: "button", id: "next-page", class: "secondary"}, "Next →");
  const pageLabel = h("span", {id: "page-label"});
  const pager = h("nav", {class: "pager", "aria-label": "Pages"}, prev, pageLabel, next);
  const problem = h("p", {class: "error-text", role: "alert", hidden: true});

  replace(ctx.main,
    h("div", {class: "title"}, h("h1", {}, "Connections"),
      ctx.can("write") ? h("a", {href: "/console/connections/new", class: "button", id: "new-connection"}, "New connection") : null),
    filters, problem, status, h("div", {class: "table-wrap"}, table), pager);

  let items = [];
  let nextCursor = "";
  let pages = 1;
  let loading = false;
  let generation = 0; // of the latest load: an older one's answer is dropped

  const draw = () => {
    const now = Date.now();
    const focused = document.activeElement && document.activeElement.closest("#connections-body tr");
    const focusName = focused ? focused.dataset.name : null;
    let shown = items;
    if (st.order === "attention") shown = items.slice((st.page - 1) * st.limit, st.page * st.limit);
    replace(body, shown.length ? shown.map((c) => row(c, now)) : h("tr", {}, h("td", {colspan: 6, class: "empty"},
      st.q || st.status || st.role || st.policy ? "No connections match these filters." : "No connections yet.")));
    if (focusName) {
      const a = body.querySelector(`tr[data-name="${CSS.escape(focusName)}"] a`);
      if (a) a.focus();
    }
    const first = st.order === "attention" ? (st.page - 1) * st.limit : stack().length * st.limit;
    const broke = items.filter((c) => broken(c, now)).length;
    status.textContent = `${shown.length ? `Showing ${first + 1}–${first + shown.length}` : "Nothing to show"}` +
      (st.order === "attention" ? ` of ${items.length}${items.length >= attentionMax ? ` (sorted among the first ${attentionMax}; filter to narrow)` : ""}` : "") +
      ` · ${broke} need attention on this ${st.order === "attention" ? "list" : "page"}` +
      ` · updated ${new Date().toLocaleTimeString()}`;
    prev.disabled = st.order === "attention" ? st.page <= 1 : stack().length === 0;
    next.disabled = st.order === "attention" ? st.page >= pages : !nextCursor;
    pageLabel.textContent = st.order === "attention" ? `Page ${st.page} of ${pages}` : `Page ${stack().length + 1}`;
  };

  const load = async ({background = false} = {}) => {
    if (background && loading) return;
    const mine = ++generation;
    loading = true;
    try {
      const filter = {q: st.q, status: st.status, role: st.role, policy: st.policy};
      if (st.order === "attention") {
        const all = [];
        let cursor = "";
        do {
          const page = await get(`/api/v1/connections${query({...filter, limit: 500, cursor})}`, {signal: ctx.signal});
          all.push(...page.items);
          cursor = page.nextCursor || "";
        } while (cursor && all.length < attentionMax);
        if (mine !== generation) return;
        const now = Date.now();
        items = all.slice(0, attentionMax).sort((a, b) => urgency(a, b, now));
        pages = Math.max(1, Math.ceil(items.length / st.limit));
        st.page = Math.min(st.page, pages);
      } else {
        // A search may answer short pages (the API bounds what one page
        // reads): follow the cursor, a few times, until the page is full.
        const got = [];
        let cursor = st.cursor;
        let hops = 0;
        do {
          const page = await get(`/api/v1/connections${query({...filter, limit: st.limit - got.length, cursor})}`,
            {signal: ctx.signal});
          got.push(...page.items);
          cursor = page.nextCursor || "";
        } while (cursor && got.length < st.limit && ++hops < shortPageHops);
        if (mine !== generation) return;
        items = got;
        nextCursor = cursor;
      }
      problem.hidden = true;
      draw();
    } catch (err) {
      if (err.name === "AbortError" || mine !== generation) return;
      problem.textContent = err instanceof ApiError && err.status === 400 && st.cursor
        ? "This page's cursor is no longer valid; go back to the first page."
        : `The list could not be loaded: ${err.message}`;
      problem.hidden = false;
    } finally {
      if (mine === generation) loading = false;
    }
  };

  prev.addEventListener("click", () => {
    if (st.order === "attention") go({page: st.page - 1}, {redraw: true});
    else go({cursor: stack().pop() || ""});
  });
  next.addEventListener("click", () => {
    if (st.order === "attention") go({page: st.page + 1}, {redraw: true});
    else {
      stack().push(st.cursor);
      go({cursor: nextCursor});
    }
  });

  await load();
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") load({background: true});
  }, refreshEvery);
  const tick = setInterval(() => tickCountdowns(body), 1000);
  ctx.signal.addEventListener("abort", () => {
    clearInterval(timer);
    clearInterval(tick);
    clearTimeout(debounce);
  });
}

function row(c, now) {
  const exp = expiry(c.token, now);
  const policy = c.security && c.security.policy;
  return h("tr", {"data-name": c.name, class: broken(c, now) ? "bad" : null},
    h("td", {"data-label": "Name"},
      h("a", {href: `/console/connections/${encodeURIComponent(c.name)}`, class: "name"}, c.name),
      c.description ? h("div", {class: "muted small clip"}, c.description) : null),
    h("td", {"data-label": "Role"}, c.role),
    h("td", {"data-label": "Policy"}, policy),
    h("td", {"data-label": "Status"}, statusBadge(c.status),
      c.statusReason ? h("div", {class: "reason small"}, c.statusReason) : null),
    h("td", {"data-label": "Token"}, countdown(c.token, exp)),
    h("td", {"data-label": "Last test"}, c.lastTest
      ? [h("span", {class: c.lastTest.result === "SUCCESS" ? "ok-text" : "bad-text"}, c.lastTest.result),
        h("div", {class: "muted small", title: when(c.lastTest.at)}, ago(c.lastTest.at, now))]
      : h("span", {class: "muted"}, "never")));
}

// statusBadge shows a connection's status.
export function statusBadge(status) {
  return h("span", {class: `badge status status-${status}`}, status);
}

// countdown is a token's expiry that tickCountdowns keeps counting.
export function countdown(token, exp) {
  const el = h("span", {class: `countdown${exp.bad ? " bad-text" : ""}${exp.soon ? " soon" : ""}${exp.none ? " muted" : ""}`},
    exp.text);
  el.dataToken = token;
  return el;
}

// tickCountdowns updates the countdowns under root to now.
export function tickCountdowns(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll(".countdown")) {
    const exp = expiry(el.dataToken, now);
    if (el.textContent !== exp.text) el.textContent = exp.text;
    el.classList.toggle("bad-text", exp.bad);
    el.classList.toggle("soon", Boolean(exp.soon));
  }
}
