// The round trip of the TypeScript client (openapi-typescript types,
// openapi-fetch) against a running connmgr: clients/roundtrip_test.go
// generates gen/schema.d.ts, compiles this file and runs it with node's test
// runner, passing where connmgr and the target are.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import createClient from "openapi-fetch";
import type { components, paths } from "./gen/schema.js";

type Schemas = components["schemas"];

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const prefix = env("NAME_PREFIX");
const targetURL = env("TARGET_URL");

const client = createClient<paths>({
  baseUrl: env("CONNMGR_URL"),
  headers: { Authorization: `Bearer ${env("CONNMGR_TOKEN")}` },
  // The transparent form's free-form query is one object parameter, style
  // form, exploded: openapi-fetch's default for objects is deepObject.
  querySerializer: { object: { style: "form", explode: true } },
});

// The target's echo of what it received.
interface Echo {
  method: string;
  path: string;
  query: string;
  body: string;
  authorization: string;
}

// connmgrProblem is the problem of an invoke answer that connmgr made
// itself, told by Connmgr-Error; undefined for the target's answers (whose
// error bodies are typed as the target's own, any media type).
function connmgrProblem(res: { error?: unknown; response: Response }): Schemas["Problem"] | undefined {
  const code = res.response.headers.get("Connmgr-Error");
  if (code === null) return undefined;
  const p = res.error as Schemas["Problem"];
  assert.equal(p.code, code, "Connmgr-Error and the problem's code differ");
  return p;
}

interface SpecSchema {
  $ref?: string;
  example?: unknown;
  allOf?: SpecSchema[];
  properties?: Record<string, SpecSchema>;
  additionalProperties?: SpecSchema | boolean;
  discriminator?: { mapping: Record<string, string> };
  "x-connmgr-secret"?: boolean;
}

interface Spec {
  components: { schemas: Record<string, SpecSchema> };
}

// A policy's example from the contract, and its secret fields: those whose
// schema is marked x-connmgr-secret, or maps of such secrets.
interface PolicyExample {
  policy: string;
  security: Schemas["SecurityCreate"];
  secrets: Set<string>;
}

// perPolicy reads, from the contract itself, the example of every schema in
// SecurityCreate's discriminator mapping (or of the schema it extends): a
// policy added to the contract is created here without touching this file.
function perPolicy(): PolicyExample[] {
  const spec = JSON.parse(readFileSync(env("CONNMGR_OPENAPI_JSON"), "utf8")) as Spec;
  const schemas = spec.components.schemas;
  const byRef = (ref: string) => {
    const s = schemas[ref.replace("#/components/schemas/", "")];
    assert.ok(s, `no schema ${ref}`);
    return s;
  };
  const deref = (s: SpecSchema): SpecSchema => (s.$ref ? deref(byRef(s.$ref)) : s);
  const secret = (s: SpecSchema | boolean | undefined) => typeof s === "object" && deref(s)["x-connmgr-secret"] === true;
  const secretFields = (s: SpecSchema, out: Set<string>): Set<string> => {
    s = deref(s);
    for (const [name, p] of Object.entries(s.properties ?? {})) {
      if (secret(p) || secret(deref(p).additionalProperties)) out.add(name);
    }
    for (const part of s.allOf ?? []) secretFields(part, out);
    return out;
  };
  const mapping = schemas["SecurityCreate"]?.discriminator?.mapping;
  assert.ok(mapping, "SecurityCreate has no discriminator mapping");
  return Object.entries(mapping).map(([policy, ref]) => {
    const s = byRef(ref);
    let example = s.example;
    for (const part of s.allOf ?? []) {
      if (example === undefined && part.$ref) example = byRef(part.$ref).example;
    }
    assert.equal((example as { policy?: string } | undefined)?.policy, policy, `${ref} has no example of policy ${policy}`);
    return { policy, security: example as Schemas["SecurityCreate"], secrets: secretFields(s, new Set()) };
  });
}

// masked is what an answer shows for the secret sent: "********", and for a
// map of secrets the same names, each "********".
function masked(sent: unknown): unknown {
  if (typeof sent === "object" && sent !== null) {
    return Object.fromEntries(Object.keys(sent).map((k) => [k, "********"]));
  }
  return "********";
}

test("round trip with openapi-fetch", async (t) => {
  const examples = perPolicy();
  assert.ok(examples.length >= 6, `only ${examples.length} policies`);
  const names: string[] = [];

  await t.test("create one connection per policy", async () => {
    for (const { policy, security, secrets } of examples) {
      const name = `${prefix}${policy}`;
      const body: Schemas["ConnectionCreate"] = { name, role: "INVOKE", baseUrl: `${targetURL}/v2`, security };
      const { data, error, response } = await client.POST("/api/v1/connections", { body });
      assert.equal(response.status, 201, `create ${name}: ${JSON.stringify(error)}`);
      assert.ok(data);
      assert.equal(data.security.policy, policy);
      assert.equal(response.headers.get("ETag"), '"1"');
      assert.equal(response.headers.get("Location"), `/api/v1/connections/${name}`);
      for (const [field, sent] of Object.entries(security)) {
        const shown: unknown = (data.security as Record<string, unknown>)[field];
        if (secrets.has(field)) {
          assert.deepEqual(shown, masked(sent), `create ${name}: security.${field} is not masked`);
        } else {
          assert.deepEqual(shown, sent, `create ${name}: security.${field}`);
        }
      }
      names.push(name);
    }
  });

  await t.test("a body of two policies is refused", async () => {
    const security = { policy: "BASIC", username: "u", password: "p", tokenUrl: "https://auth.example.com/t" };
    const { error, response } = await client.POST("/api/v1/connections", {
      // Not a valid SecurityCreate: the types refuse it too, hence the cast.
      body: { name: `${prefix}Mixed`, role: "INVOKE", baseUrl: targetURL, security } as unknown as Schemas["ConnectionCreate"],
    });
    assert.equal(response.status, 422);
    assert.equal(error?.code, "validation_failed");
  });

  await t.test("list", async () => {
    const { data, response } = await client.GET("/api/v1/connections", { params: { query: { q: prefix, limit: 500 } } });
    assert.equal(response.status, 200);
    assert.deepEqual(data?.items.map((c) => c.name), [...names].sort());
    assert.equal(data?.nextCursor, undefined);
  });

  const name = `${prefix}BASIC`;
  await t.test("read, replace with If-Match, lose a stale replace", async () => {
    const got = await client.GET("/api/v1/connections/{name}", { params: { path: { name } } });
    assert.equal(got.response.status, 200);
    const etag = got.response.headers.get("ETag");
    assert.equal(etag, '"1"');
    assert.ok(got.data);
    const doc: Schemas["ConnectionReplace"] = { ...got.data, description: "replaced by openapi-fetch" };
    const put = await client.PUT("/api/v1/connections/{name}", {
      params: { path: { name }, header: { "If-Match": etag } },
      body: doc,
    });
    assert.equal(put.response.status, 200, JSON.stringify(put.error));
    assert.equal(put.data?.description, "replaced by openapi-fetch");
    assert.equal(put.data?.version, 2);
    assert.equal(put.response.headers.get("ETag"), '"2"');
    const stale = await client.PUT("/api/v1/connections/{name}", {
      params: { path: { name }, header: { "If-Match": '"1"' } },
      body: doc,
    });
    assert.equal(stale.response.status, 412);
    assert.equal(stale.error?.code, "precondition_failed");
  });

  await t.test("patch with If-Match, lose a stale patch", async () => {
    const body: Schemas["ConnectionPatch"] = { description: "patched by openapi-fetch", timeoutMs: null };
    const pat = await client.PATCH("/api/v1/connections/{name}", {
      params: { path: { name }, header: { "If-Match": '"2"' } },
      headers: { "Content-Type": "application/merge-patch+json" },
      body,
    });
    assert.equal(pat.response.status, 200, JSON.stringify(pat.error));
    assert.equal(pat.data?.description, "patched by openapi-fetch");
    assert.equal(pat.data?.timeoutMs, 30000);
    assert.equal(pat.data?.version, 3);
    assert.equal(pat.response.headers.get("ETag"), '"3"');
    const stale = await client.PATCH("/api/v1/connections/{name}", {
      params: { path: { name }, header: { "If-Match": '"2"' } },
      headers: { "Content-Type": "application/merge-patch+json" },
      body,
    });
    assert.equal(stale.response.status, 412);
    assert.equal(stale.error?.code, "precondition_failed");
  });

  const none = `${prefix}NONE`;
  await t.test("invoke a multi-segment path with query and body", async () => {
    const { data, response } = await client.POST("/api/v1/connections/{name}/invoke", {
      params: { path: { name: none } },
      body: {
        method: "PUT",
        relativeUri: "/orders/{orderId}/lines",
        pathParams: { orderId: "A/17" },
        queryParams: { expand: ["items", "notes"], x: "1" },
        body: { note: "hi" },
      },
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("Connmgr-Error"), null);
    const e = data as unknown as Echo;
    assert.equal(e.method, "PUT");
    assert.equal(e.path, "/v2/orders/A%2F17/lines");
    assert.equal(e.query, "expand=items&expand=notes&x=1");
    assert.equal(e.body, '{"note":"hi"}');
  });

  await t.test("the transparent form: one segment with its query; a path encoded as one segment is refused", async () => {
    const ok = await client.GET("/invoke/{name}/{relativePath}", {
      params: { path: { name: none, relativePath: "orders" }, query: { query: { expand: "items" } } },
    });
    assert.equal(ok.response.status, 200);
    const e = ok.data as unknown as Echo;
    assert.equal(e.path, "/v2/orders");
    assert.equal(e.query, "expand=items");
    // openapi-fetch encodes "orders/17" as orders%2F17: connmgr says so
    // instead of calling the target's resource "orders%2F17".
    const enc = await client.GET("/invoke/{name}/{relativePath}", {
      params: { path: { name: none, relativePath: "orders/17" } },
    });
    assert.equal(enc.response.status, 400);
    assert.equal(enc.response.headers.get("Connmgr-Error"), "invalid_relative_uri");
    assert.match(String(connmgrProblem(enc)?.detail), /invokeConnection/);
  });

  await t.test("connmgr's 404 and the target's 404", async () => {
    const own = await client.POST("/api/v1/connections/{name}/invoke", {
      params: { path: { name: `${prefix}Nope` } },
      body: { relativeUri: "/missing" },
    });
    assert.equal(own.response.status, 404);
    assert.equal(own.response.headers.get("Connmgr-Error"), "connection_not_found");
    assert.equal(connmgrProblem(own)?.code, "connection_not_found");
    const theirs = await client.POST("/api/v1/connections/{name}/invoke", {
      params: { path: { name: none } },
      body: { relativeUri: "/missing" },
    });
    assert.equal(theirs.response.status, 404);
    assert.equal(connmgrProblem(theirs), undefined);
    assert.deepEqual(theirs.error, { error: "no such order", code: "E404" });
  });

  await t.test("delete", async () => {
    for (const n of names) {
      const { response } = await client.DELETE("/api/v1/connections/{name}", { params: { path: { name: n } } });
      assert.equal(response.status, 204, `delete ${n}`);
    }
    const gone = await client.GET("/api/v1/connections/{name}", { params: { path: { name } } });
    assert.equal(gone.response.status, 404);
    assert.equal(gone.error?.code, "connection_not_found");
    assert.equal(gone.response.headers.get("Connmgr-Error"), null);
  });
});
