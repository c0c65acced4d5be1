// The API contract (openapi.yaml, served as JSON at /console/contract.json)
// read for the forms: each security policy's fields come from its schema
// (SecurityCreate / Security, told apart by the discriminator `policy`),
// so a policy added to the contract gets a form with no change here.

import {get} from "./api.js";

let contract = null;

// load fetches the contract once.
export async function load() {
  if (!contract) contract = await get("/console/contract.json");
  return contract;
}

function schemas() {
  return contract.components.schemas;
}

// named returns the component schema called name.
export function named(name) {
  return schemas()[name];
}

function deref(s) {
  let seen = 0;
  while (s && s.$ref && seen < 20) {
    s = schemas()[s.$ref.replace("#/components/schemas/", "")];
    seen += 1;
  }
  return s || {};
}

// flat resolves $ref and merges allOf into one schema: properties (in
// order), required, type, enum, format, default, items, description and
// x-connmgr-secret, the later (more specific) part winning. Constraints under not/oneOf are
// the API's to check.
export function flat(s) {
  s = deref(s);
  const out = {properties: {}, required: []};
  const parts = [...(s.allOf || []).map(flat), s];
  for (const p of parts) {
    for (const k of ["type", "enum", "format", "default", "items", "additionalProperties", "description",
      "x-connmgr-secret", "minimum", "maximum", "maxLength"]) {
      if (p[k] !== undefined) out[k] = p[k];
    }
    for (const [k, v] of Object.entries(p.properties || {})) out.properties[k] = v;
    for (const r of p.required || []) if (!out.required.includes(r)) out.required.push(r);
  }
  if (!out.type && Object.keys(out.properties).length) out.type = "object";
  return out;
}

// policies returns the security policies in the contract's order, each
// {name, schema (flat)}, for a new connection (create: the secrets a
// policy needs are required) or an existing one (edit).
export function policies(mode) {
  const union = named(mode === "create" ? "SecurityCreate" : "Security");
  return Object.entries(union.discriminator.mapping).map(([name, ref]) => ({name, schema: flat({$ref: ref})}));
}

// enumOf returns the values of the named enum schema (Role, Status, ...).
export function enumOf(name) {
  return flat({$ref: `#/components/schemas/${name}`}).enum || [];
}

// isSecret reports whether a property's schema is a secret.
export function isSecret(s) {
  return Boolean(flat(s)["x-connmgr-secret"]);
}

// secretFields names a policy's secret properties.
export function secretFields(policy) {
  return Object.entries(policy.schema.properties).filter(([, s]) => isSecret(s)).map(([k]) => k);
}

// urlFields names a policy's endpoint URL properties (format uri).
export function urlFields(policy) {
  return Object.entries(policy.schema.properties).filter(([, s]) => flat(s).format === "uri").map(([k]) => k);
}

// auditActions returns the audit log's actions as the contract lists them.
export function auditActions() {
  const op = contract.paths["/api/v1/audit"].get;
  const p = op.parameters.find((x) => x.name === "action");
  return (p && p.schema && p.schema.enum) || [];
}

const words = {url: "URL", id: "ID", pem: "PEM", api: "API", tls: "TLS", uri: "URI", ms: "(ms)", jwt: "JWT"};

// label turns a property name into a label: tokenUrl → "Token URL".
export function label(name) {
  const parts = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").split(" ");
  const out = parts.map((w, i) => {
    const l = w.toLowerCase();
    if (words[l]) return words[l];
    return i === 0 ? l.charAt(0).toUpperCase() + l.slice(1) : l;
  });
  return out.join(" ");
}

// summary is the first sentence of a schema's description, without
// Markdown's backticks.
export function summary(description) {
  if (!description) return "";
  let s = description.replace(/`/g, "").replace(/\s+/g, " ").trim();
  const dot = s.search(/\.(\s|$)/);
  if (dot >= 0) s = s.slice(0, dot + 1);
  if (s.length > 160) {
    const cut = s.search(/[:;(]/);
    if (cut > 20) s = `${s.slice(0, cut).trim()}.`;
  }
  return s;
}
