// API keys (admin): create one (the key is shown once, with a copy
// button), list them, revoke one.

import {ApiError, call, get} from "../lib/api.js";
import {confirmDialog, field, h, notice, replace, setError} from "../lib/dom.js";
import {when} from "../lib/format.js";

export async function render(ctx) {
  const list = h("tbody", {id: "keys-body"});
  const created = h("section", {class: "result ok", id: "key-created", hidden: true, "aria-live": "polite"});

  const name = h("input", {type: "text", name: "name", id: "key-name", autocomplete: "off", maxlength: 100});
  const role = h("select", {name: "role", id: "key-role"},
    ["viewer", "developer", "invoker", "admin"].map((r) => h("option", {value: r}, r)));
  const patterns = h("textarea", {name: "connections", id: "key-connections", rows: 2, spellcheck: "false",
    placeholder: "Conn_REST_Orders_*"});
  const expires = h("input", {type: "datetime-local", name: "expiresAt", id: "key-expires"});
  const f = {
    name: field({label: "Name", control: name, name: "name", required: true,
      help: "Who or what uses it: a person, an integration."}),
    role: field({label: "Role", control: role, name: "role", required: true,
      help: "viewer reads; developer manages and tests connections; invoker only invokes; admin does everything."}),
    connections: field({label: "Connections it may invoke", control: patterns, name: "connections",
      help: "Invoker keys only: connection name patterns, one per line; * matches any run of characters."}),
    expiresAt: field({label: "Expires", control: expires, name: "expiresAt", help: "Optional; in your time zone."}),
  };
  const showPatterns = () => {
    f.connections.hidden = role.value !== "invoker";
  };
  role.addEventListener("change", showPatterns);
  showPatterns();
  const submit = h("button", {type: "submit", id: "create-key"}, "Create key");
  const problem = h("p", {class: "error-text", role: "alert", hidden: true});
  const form = h("form", {class: "card form", id: "key-form", novalidate: true},
    h("h2", {}, "New API key"), problem, Object.values(f), h("div", {class: "actions"}, submit));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const w of Object.values(f)) setError(w, "");
    problem.hidden = true;
    const body = {name: name.value.trim(), role: role.value};
    if (role.value === "invoker") body.connections = patterns.value.split("\n").map((x) => x.trim()).filter(Boolean);
    if (expires.value) body.expiresAt = new Date(expires.value).toISOString();
    submit.disabled = true;
    try {
      const k = (await call("POST", "/api/v1/apikeys", {body})).data;
      form.reset();
      showPatterns();
      showCreated(k);
      await load();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const errs = err.problem.errors || [];
      for (const e of errs) {
        const w = f[e.field.replace(/\[\d+\]$/, "")];
        if (w) setError(w, e.reason);
      }
      problem.textContent = errs.length ? "The key was not created: fix the fields below." : err.message;
      problem.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  const showCreated = (k) => {
    const value = h("input", {type: "text", readonly: true, id: "new-key", value: k.key, spellcheck: "false",
      "aria-label": `The new key ${k.name}`, class: "mono"});
    const copied = h("span", {class: "small", "aria-live": "polite", id: "copy-status"});
    const copy = h("button", {type: "button", id: "copy-key"}, "Copy");
    copy.addEventListener("click", async () => {
      value.select();
      let ok = false;
      try {
        if (navigator.clipboard && window.isSecureContext) {
          await navigator.clipboard.writeText(value.value);
          ok = true;
        }
      } catch {
        ok = false;
      }
      if (!ok) ok = document.execCommand("copy");
      copied.textContent = ok ? "Copied." : "Select the key and copy it with Ctrl+C.";
    });
    const done = h("button", {type: "button", class: "secondary", id: "key-done"}, "I have stored it");
    done.addEventListener("click", () => {
      replace(created);
      created.hidden = true;
    });
    replace(created, h("h2", {}, `Key ${k.name} created`),
      h("p", {}, h("strong", {}, "Copy it now: it is shown only this once."), " connmgr keeps only its hash."),
      h("div", {class: "copy"}, value, copy), copied, h("div", {class: "actions"}, done));
    created.hidden = false;
    value.focus();
    value.select();
  };

  const load = async () => {
    const keys = (await get("/api/v1/apikeys", {signal: ctx.signal})).items;
    replace(list, keys.length ? keys.map((k) => {
      const self = k.id === ctx.session.key.id;
      const revoke = h("button", {type: "button", class: "danger small-button", "data-revoke": k.id,
        "aria-label": `Revoke ${k.name}`}, "Revoke");
      revoke.addEventListener("click", async () => {
        const yes = await confirmDialog({title: `Revoke ${k.name}?`, confirm: "Revoke", danger: true,
          message: self ? "This is the key of your own session: you will be signed out at once."
            : "The key stops working at once, on every replica. This cannot be undone."});
        if (!yes) return;
        try {
          await call("DELETE", `/api/v1/apikeys/${encodeURIComponent(k.id)}`);
          notice(`Revoked ${k.name}.`, "ok");
          await load();
        } catch (err) {
          if (err instanceof ApiError && err.status !== 401) notice(`Revoking ${k.name} failed: ${err.message}`, "warn");
        }
      });
      return h("tr", {"data-key": k.id, "data-name": k.name},
        h("td", {"data-label": "Name"}, k.name, self ? h("span", {class: "badge"}, "this session") : null),
        h("td", {"data-label": "Role"}, k.role),
        h("td", {"data-label": "Connections"}, k.connections.length ? k.connections.map((p) => h("code", {class: "chip"}, p)) : "—"),
        h("td", {"data-label": "Prefix"}, h("code", {}, `${k.prefix}…`)),
        h("td", {"data-label": "Created"}, when(k.createdAt), k.createdBy ? h("div", {class: "muted small"}, `by ${k.createdBy}`) : null),
        h("td", {"data-label": "Expires"}, k.expiresAt ? when(k.expiresAt) : "never"),
        h("td", {"data-label": ""}, revoke));
    }) : h("tr", {}, h("td", {colspan: 7, class: "empty"}, "No keys.")));
  };

  replace(ctx.main, h("h1", {}, "API keys"),
    h("p", {class: "muted"}, "connmgr's own keys. A key is shown once, when it is created; connmgr stores only its hash. ",
      "CONNMGR_ADMIN_TOKEN is not listed."),
    created, form,
    h("section", {class: "card", "aria-labelledby": "keys-h"}, h("h2", {id: "keys-h"}, "Keys in use"),
      h("div", {class: "table-wrap"}, h("table", {class: "list", id: "keys"},
        h("thead", {}, h("tr", {}, ["Name", "Role", "Connections", "Prefix", "Created", "Expires", ""].map((c) =>
          h("th", {scope: "col"}, c)))), list))));
  await load();
}
