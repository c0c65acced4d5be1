// What an invoker key sees: the connections it may invoke, by pattern.
// Its role may read no connection's settings (the API answers 403), and no
// secret at all.

import {h, replace} from "../lib/dom.js";

export async function render(ctx) {
  const k = ctx.session.key;
  replace(ctx.main, h("h1", {}, "Your connections"),
    h("p", {}, `This key (${k.name}) is an invoker key: it may invoke the connections whose names match these patterns, `,
      "and nothing else: it cannot read their settings, and sees no secret."),
    h("ul", {id: "invoker-patterns"}, k.connections.map((p) => h("li", {}, h("code", {}, p)))),
    h("p", {class: "muted"}, "Invoke with the key as a bearer token: ",
      h("code", {}, "POST /api/v1/connections/{name}/invoke"), " or ", h("code", {}, "/invoke/{name}/{path}"), "."));
}
