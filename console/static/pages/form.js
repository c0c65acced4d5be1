// The create and edit forms. Every field comes from the contract: the
// connection's schema (ConnectionCreate) and, per security policy, the
// policy's schema (SecurityCreate for a new connection, Security for an
// edit); choosing a policy shows exactly its fields. Secrets are
// write-only: an edit offers "keep" or "replace". The API's 422 field
// errors appear next to their fields; an edit sends If-Match, and a 412
// says that someone else changed the connection.

import {ApiError, call, connectionPath} from "../lib/api.js";
import {field, h, notice, replace, setError, uid} from "../lib/dom.js";
import * as schema from "../lib/schema.js";

// shownFirst lists the optional fields shown before "More settings" (the
// required ones are too).
const shownFirst = new Set(["description", "keywords"]);
// readOnly are the fields of a read connection that a replace ignores.
const readOnly = ["identifier", "status", "statusReason", "statusSince", "token", "lastTest", "version",
  "createdAt", "updatedAt", "createdBy", "updatedBy"];

export const destinationRule = "A kept secret may go only where it went before: changing the base URL's or " +
  "token URL's origin needs the secrets again.";

function originOf(u) {
  try {
    const x = new URL(u);
    return `${x.protocol}//${x.host}`;
  } catch {
    return null;
  }
}

export async function render(ctx) {
  const editing = ctx.name !== null;
  let doc = null;
  let etag = null;
  if (editing) {
    const res = await call("GET", connectionPath(ctx.name), {signal: ctx.signal});
    doc = res.data;
    etag = res.etag;
  }
  const top = schema.flat(schema.named("ConnectionCreate"));
  const policies = schema.policies(editing ? "edit" : "create");

  const firstControls = [];
  const moreControls = [];
  let policyControls = [];
  const all = () => [...firstControls, ...moreControls, ...policyControls];

  const summary = h("div", {class: "error-summary", role: "alert", id: "form-errors", tabindex: "-1", hidden: true});
  const conflict = h("div", {class: "conflict", role: "alert", id: "conflict", hidden: true});
  const rule = h("p", {class: "rule", id: "destination-rule", role: "status", hidden: true}, destinationRule);

  // origins holds, on an edit, the origin of each URL field as read.
  const origins = {};
  // checkRule shows the destination rule where it bites: a URL's origin
  // changed while a stored secret is kept.
  const checkRule = () => {
    if (!editing) return;
    const moved = all().some((c) => c.url && origins[c.path] && c.input.value.trim() !== "" &&
      originOf(c.input.value.trim()) !== origins[c.path]);
    const kept = all().some((c) => c.keeping && c.keeping());
    rule.hidden = !(moved && kept);
  };

  // build adds a control per property to box and list. The members of an
  // optional object are required only when it is given: they are not
  // marked so.
  const build = (props, required, prefix, current, box, list, optional) => {
    for (const [name, raw] of Object.entries(props)) {
      const path = prefix ? `${prefix}.${name}` : name;
      if (path === "security" || path === "security.policy" || (editing && path === "name")) continue;
      const s = schema.flat(raw);
      const value = current ? current[name] : undefined;
      if (s.type === "object" && Object.keys(s.properties).length) {
        const help = schema.summary(s.description);
        const box2 = h("fieldset", {class: "group", "data-field": path}, h("legend", {}, schema.label(name)),
          help ? h("p", {class: "help"}, help) : null);
        box.append(box2);
        build(s.properties, s.required, path, value || {}, box2, list, optional || !required.includes(name));
        continue;
      }
      const req = !optional && required.includes(name);
      const c = s["x-connmgr-secret"] ? secretControl(path, name, s, req, value) : plainControl(path, name, s, req, value);
      list.push(c);
      box.append(c.wrap);
    }
  };

  const plainControl = (path, name, s, required, value) => {
    let input;
    let kind;
    if (s.enum) {
      kind = "enum";
      const none = s.default !== undefined ? `(default: ${s.default})` : required ? "— choose —" : "(none)";
      input = h("select", {name: path}, h("option", {value: ""}, none), s.enum.map((v) => h("option", {value: v}, v)));
    } else if (s.type === "boolean") {
      kind = "boolean";
      input = h("input", {type: "checkbox", name: path});
    } else if (s.type === "integer" || s.type === "number") {
      kind = "number";
      input = h("input", {type: "number", name: path, step: s.type === "integer" ? 1 : "any",
        placeholder: s.default !== undefined ? `default: ${s.default}` : null});
    } else if (s.type === "array") {
      kind = "list";
      input = h("textarea", {name: path, rows: 2, spellcheck: "false"});
    } else if (s.type === "object") {
      kind = "map";
      input = h("textarea", {name: path, rows: 2, spellcheck: "false", placeholder: "Name: value"});
    } else {
      kind = "text";
      input = /Pem$/.test(name) ? h("textarea", {name: path, rows: 4, spellcheck: "false"})
        : h("input", {type: "text", name: path, autocomplete: "off", spellcheck: "false",
          inputmode: s.format === "uri" ? "url" : null});
    }
    const hint = {list: "One per line.", map: "One per line, as name: value."}[kind];
    const help = [schema.summary(s.description), hint].filter(Boolean).join(" ");
    const c = {path, input, kind, url: s.format === "uri",
      wrap: field({label: schema.label(name), control: input, name: path, required, help})};
    c.read = () => {
      if (kind === "boolean") return input.checked || undefined;
      const v = input.value.trim();
      if (v === "") return undefined;
      if (kind === "number") return Number.isFinite(Number(v)) ? Number(v) : v;
      if (kind === "list") return v.split("\n").map((x) => x.trim()).filter(Boolean);
      if (kind === "map") {
        const m = {};
        for (const line of v.split("\n")) {
          const t = line.trim();
          const i = t.indexOf(":");
          if (t) m[(i < 0 ? t : t.slice(0, i)).trim()] = i < 0 ? "" : t.slice(i + 1).trim();
        }
        return m;
      }
      return v;
    };
    c.set = (v) => {
      if (v === undefined || v === null) return;
      if (kind === "boolean") input.checked = Boolean(v);
      else if (kind === "list") input.value = v.join("\n");
      else if (kind === "map") input.value = Object.entries(v).map(([k, x]) => `${k}: ${x}`).join("\n");
      else input.value = String(v);
    };
    c.set(value);
    if (c.url) {
      if (editing && value) origins[path] = originOf(value);
      input.addEventListener("input", checkRule);
    }
    return c;
  };

  // secretControl is a write-only field. On an edit of a set secret it
  // offers Keep (the default: the value is not sent) or Replace.
  const secretControl = (path, name, s, required, value) => {
    const label = schema.label(name);
    const help = schema.summary(s.description);
    const input = /Pem$/.test(name)
      ? h("textarea", {name: path, rows: 4, spellcheck: "false", autocomplete: "off", class: "secret"})
      : h("input", {type: "password", name: path, autocomplete: "new-password", spellcheck: "false"});
    const c = {path, input, kind: "secret", set() {}};
    if (!(editing && value === "********")) {
      c.wrap = field({label, control: input, name: path, required: required && !editing,
        help: [help, editing ? "Not set now." : "Write-only: connmgr never shows it again."].filter(Boolean).join(" ")});
      c.read = () => (input.value === "" ? undefined : input.value);
      return c;
    }
    const group = uid("secret");
    const keep = h("input", {type: "radio", name: group, value: "keep", checked: true, id: `${group}-keep`});
    const repl = h("input", {type: "radio", name: group, value: "replace", id: `${group}-replace`});
    input.id = `${group}-value`;
    input.hidden = true;
    input.setAttribute("aria-label", `New ${label}`);
    const toggle = () => {
      input.hidden = !repl.checked;
      if (repl.checked) input.focus();
      checkRule();
    };
    keep.addEventListener("change", toggle);
    repl.addEventListener("change", toggle);
    const legend = uid("legend");
    c.wrap = h("div", {class: "field", "data-field": path},
      h("span", {class: "label", id: legend}, label, " ", h("span", {class: "badge set"}, "set")),
      h("div", {class: "secret-box", role: "radiogroup", "aria-labelledby": legend},
        h("label", {class: "inline"}, keep, " Keep the stored value"),
        h("label", {class: "inline"}, repl, " Replace it"),
        input),
      help ? h("p", {class: "help"}, help) : null,
      h("p", {class: "error", hidden: true}));
    c.read = () => (repl.checked && input.value !== "" ? input.value : undefined);
    c.keeping = () => keep.checked;
    return c;
  };

  // The connection's own fields: the required ones and shownFirst, then
  // the rest under "More settings"; the security policy between them.
  const firstBox = h("div", {class: "fields"});
  const moreBox = h("div", {class: "fields"});
  const firstProps = {};
  const moreProps = {};
  for (const [k, v] of Object.entries(top.properties)) {
    if (k === "security") continue;
    (top.required.includes(k) || shownFirst.has(k) ? firstProps : moreProps)[k] = v;
  }
  build(firstProps, top.required, "", doc, firstBox, firstControls);
  build(moreProps, top.required, "", doc, moreBox, moreControls);

  const policyBox = h("div", {class: "fields", id: "policy-fields"});
  const policySelect = h("select", {name: "security.policy", id: "policy"},
    h("option", {value: ""}, "— choose a policy —"), policies.map((p) => h("option", {value: p.name}, p.name)));
  const policyHelp = h("p", {class: "help", id: "policy-help"});
  const policyField = field({label: "Policy", control: policySelect, name: "security.policy", required: true});
  policyField.append(policyHelp);
  const drawPolicy = () => {
    // What was typed into a field that the next policy has too stays.
    const typed = {};
    for (const c of policyControls) if (c.kind !== "secret" && c.read() !== undefined) typed[c.path] = c.read();
    policyControls = [];
    policyBox.replaceChildren();
    const p = policies.find((x) => x.name === policySelect.value);
    // The help is the policy's own description (a create variant's says
    // only which secrets it needs).
    const base = schema.policies("edit").find((x) => x.name === policySelect.value);
    policyHelp.textContent = base ? schema.summary(base.schema.description) : "";
    if (p) {
      const current = doc && doc.security && doc.security.policy === p.name ? doc.security : {};
      build(p.schema.properties, p.schema.required, "security", current, policyBox, policyControls);
      for (const c of policyControls) if (typed[c.path] !== undefined && current[c.path.slice(9)] === undefined) c.set(typed[c.path]);
    }
    checkRule();
  };
  policySelect.addEventListener("change", drawPolicy);
  if (doc && doc.security) policySelect.value = doc.security.policy;
  drawPolicy();
  const securityBox = h("fieldset", {class: "group", id: "security", "data-field": "security"},
    h("legend", {}, "Security"), policyField, rule, policyBox);

  const submit = h("button", {type: "submit", id: "save"}, editing ? "Save changes" : "Create connection");
  const cancel = h("a", {href: editing ? `/console/connections/${encodeURIComponent(ctx.name)}` : "/console/",
    class: "button secondary"}, "Cancel");
  const more = h("details", {class: "more", open: moreControls.some((c) => c.read() !== undefined) || null},
    h("summary", {}, "More settings"), moreBox);
  const form = h("form", {class: "card form", id: "connection-form", novalidate: true},
    summary, conflict,
    editing ? h("p", {}, "Name: ", h("code", {id: "form-name"}, ctx.name), h("span", {class: "muted"}, " (cannot be changed)")) : null,
    firstBox, securityBox, more, h("div", {class: "actions"}, cancel, submit));

  // put sets v at path in o, creating the objects on the way; undefined
  // removes the field.
  const put = (o, path, v) => {
    const parts = path.split(".");
    for (const part of parts.slice(0, -1)) o = o[part] = o[part] && typeof o[part] === "object" ? o[part] : {};
    if (v === undefined) delete o[parts[parts.length - 1]];
    else o[parts[parts.length - 1]] = v;
  };

  // body is what the form sends. On an edit it is the connection as read
  // with the form's fields in place: fields that the form does not show
  // (tls, for one) go back as they were, or the replace would drop them.
  const body = () => {
    const out = doc ? structuredClone(doc) : {};
    for (const k of readOnly) delete out[k];
    for (const c of [...firstControls, ...moreControls]) put(out, c.path, c.read());
    for (const [k, v] of Object.entries(out)) {
      if (v && typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length) delete out[k];
    }
    out.security = {policy: policySelect.value || undefined};
    for (const c of policyControls) put(out, c.path, c.read());
    if (editing) out.name = ctx.name;
    return out;
  };

  // showErrors puts the API's field errors next to their fields (the
  // control whose path is the field or its longest prefix: keywords[2] →
  // keywords) and lists them all at the top.
  const showErrors = (err) => {
    for (const c of all()) setError(c.wrap, "");
    setError(policyField, "");
    summary.hidden = true;
    if (!err) return;
    const errs = (err.problem && err.problem.errors) || [];
    for (const e of errs) {
      const f = e.field.replace(/\[\d+\]/g, "");
      let best = null;
      for (const c of [...all(), {path: "security.policy", wrap: policyField}]) {
        if ((f === c.path || f.startsWith(`${c.path}.`)) && (!best || c.path.length > best.path.length)) best = c;
      }
      if (!best) continue;
      setError(best.wrap, e.field === best.path ? e.reason : `${e.field}: ${e.reason}`);
      if (moreBox.contains(best.wrap)) more.open = true;
    }
    replace(summary, h("h2", {}, "Not saved"), h("p", {}, errs.length ? "Fix the fields below:" : err.message),
      errs.length ? h("ul", {}, errs.map((e) => h("li", {}, h("code", {}, e.field), `: ${e.reason}`))) : null);
    summary.hidden = false;
    if (editing && errs.some((e) => /entered for|send the secrets/.test(e.reason))) rule.hidden = false;
    summary.focus();
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    conflict.hidden = true;
    try {
      const res = editing
        ? await call("PUT", connectionPath(ctx.name), {body: body(), ifMatch: etag})
        : await call("POST", "/api/v1/connections", {body: body()});
      notice(editing ? `Saved ${res.data.name}.` : `Created ${res.data.name}.`, "ok");
      ctx.navigate(`/console/connections/${encodeURIComponent(res.data.name)}`);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.status !== 412) {
        showErrors(err);
        return;
      }
      showErrors(null);
      const reload = h("button", {type: "button", id: "conflict-reload"}, "Reload the connection");
      reload.addEventListener("click", () => ctx.navigate(location.pathname, {replaceState: true}));
      replace(conflict, h("h2", {}, "Someone else changed this connection"),
        h("p", {}, "It was changed since you opened this form, so your changes were not saved. " +
          "Reload to see the current settings, then make your changes again."), reload);
      conflict.hidden = false;
      reload.focus();
    } finally {
      submit.disabled = false;
    }
  });

  replace(ctx.main,
    h("p", {class: "crumbs"}, h("a", {href: "/console/"}, "Connections"), " / ",
      editing ? [h("a", {href: `/console/connections/${encodeURIComponent(ctx.name)}`}, ctx.name), " / edit"] : "new"),
    h("h1", {}, editing ? `Edit ${ctx.name}` : "New connection"),
    editing ? h("p", {class: "muted"}, "Secrets are write-only: keep them or replace them. ", destinationRule) : null,
    form);
}
