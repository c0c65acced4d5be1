// DOM helpers. Text from the API (names, descriptions, reasons) is only
// ever put in the page as text nodes or attribute values, never parsed as
// HTML: a hostile description stays a string.

// h makes an element: h("a", {href: "/x", class: "c"}, "text", child).
// Attributes named on... are event listeners; false, null and undefined
// attributes and children are left out.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

// append adds children (nodes, strings, numbers, arrays of them) to el as
// nodes and text.
export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// replace empties el and puts children in.
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let ids = 0;
// uid returns an id unique in the page, for label and aria links.
export function uid(prefix) {
  ids += 1;
  return `${prefix || "id"}-${ids}`;
}

// field is a labelled control with its help text and a place for its
// error: {label, control, help, name}.
export function field({label, control, help, name, required}) {
  const id = control.id || uid("f");
  control.id = id;
  const helpId = help ? `${id}-help` : null;
  const errId = `${id}-error`;
  control.setAttribute("aria-describedby", [helpId, errId].filter(Boolean).join(" "));
  if (required) control.setAttribute("aria-required", "true");
  const wrap = h("div", {class: "field", "data-field": name || null},
    h("label", {for: id}, label, required ? h("span", {class: "req", "aria-hidden": "true"}, " *") : null),
    control,
    help ? h("p", {class: "help", id: helpId}, help) : null,
    h("p", {class: "error", id: errId, hidden: true}));
  return wrap;
}

// setError shows (or, with "", hides) the error under a field.
export function setError(wrap, message) {
  const p = wrap.querySelector(":scope > .error");
  const control = wrap.querySelector(":scope > input, :scope > select, :scope > textarea, :scope > .secret-box");
  p.textContent = message || "";
  p.hidden = !message;
  if (control) control.toggleAttribute("aria-invalid", Boolean(message));
  wrap.classList.toggle("invalid", Boolean(message));
}

// confirmDialog asks a yes/no question in a modal dialog; it resolves to
// true when confirmed. The dialog is keyboard-usable (Escape cancels).
export function confirmDialog({title, message, confirm, danger}) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const yes = h("button", {type: "submit", value: "yes", class: danger ? "danger" : null, id: "confirm-yes"}, confirm);
    const no = h("button", {type: "submit", value: "no", class: "secondary", id: "confirm-no"}, "Cancel");
    const dlg = h("dialog", {"aria-labelledby": titleId, class: "confirm"},
      h("form", {method: "dialog"},
        h("h2", {id: titleId}, title),
        h("p", {}, message),
        h("div", {class: "actions"}, no, yes)));
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "yes");
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
    no.focus();
  });
}

// notice shows a short message at the top of the page, until the page
// after the next one is shown (see pageShown).
export function notice(message, kind) {
  const el = document.getElementById("notice");
  el.textContent = message || "";
  el.hidden = !message;
  el.className = `notice ${kind || ""}`;
  el.dataset.fresh = message ? "1" : "";
}

// pageShown ends a notice that was shown on the page before.
export function pageShown() {
  const el = document.getElementById("notice");
  if (el.dataset.fresh) el.dataset.fresh = "";
  else notice("");
}
