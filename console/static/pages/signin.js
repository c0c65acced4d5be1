// Sign-in: the API key is posted once, as a form field, to
// /console/session, which answers with an HttpOnly session cookie. The key
// is never kept by the page: not in storage, not in a URL.

import {ApiError, call} from "../lib/api.js";
import {field, h, replace, setError} from "../lib/dom.js";

export async function render(ctx) {
  const input = h("input", {type: "password", name: "key", id: "api-key", autocomplete: "off", spellcheck: "false",
    required: true, autofocus: true});
  const wrap = field({label: "API key", control: input, name: "key",
    help: "An API key of connmgr (cmk_…), or CONNMGR_ADMIN_TOKEN. The first start writes an admin key to data/admin.token."});
  const button = h("button", {type: "submit", id: "sign-in"}, "Sign in");
  const form = h("form", {class: "card narrow", id: "signin-form", novalidate: true}, wrap, h("div", {class: "actions"}, button));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) {
      setError(wrap, "Enter an API key.");
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      const res = await call("POST", "/console/session", {form: {key}, noSignOut: true});
      input.value = "";
      ctx.signedIn(res.data, ctx.params.get("next"));
    } catch (err) {
      const msg = err instanceof ApiError && err.status === 401
        ? "This key is unknown, expired or revoked."
        : err.message;
      setError(wrap, msg);
      input.select();
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(ctx.main,
    h("h1", {}, "Sign in"),
    h("p", {class: "muted"}, "The console shows and does what the key's role allows. The session lasts at most 8 hours and ends after an hour without use."),
    form);
  input.focus();
}
