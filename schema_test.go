package connmgr_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/connmgr/connmgr"
)

var update = flag.Bool("update", false, "rewrite connection.schema.json from openapi.yaml")

// generate derives the document schema from openapi.yaml: its component
// schemas as $defs (OpenAPI 3.0 turned into JSON Schema 2020-12), the
// create body without name as spec, and every secret field accepting a
// reference (${env:NAME}, ${file:PATH}, ${sealed:...}) instead of a value.
func generate(t *testing.T) []byte {
	t.Helper()
	var api struct {
		Components struct {
			Schemas map[string]any `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(connmgr.OpenAPI, &api); err != nil {
		t.Fatal(err)
	}
	defs := map[string]any{}
	for name, s := range api.Components.Schemas {
		defs[name] = convert(s)
	}
	create, ok := defs["ConnectionCreate"].(map[string]any)
	if !ok {
		t.Fatal("openapi.yaml has no ConnectionCreate schema")
	}
	spec := maps.Clone(create)
	props := maps.Clone(spec["properties"].(map[string]any))
	delete(props, "name")
	spec["properties"] = props
	var required []any
	for _, r := range spec["required"].([]any) {
		if r != "name" {
			required = append(required, r)
		}
	}
	spec["required"] = required
	spec["description"] = "The connection's settings: the API's create body (ConnectionCreate) without name."
	defs["ConnectionSpec"] = spec
	defs["SecretReference"] = map[string]any{"type": "string", "pattern": `^\$\{(env|file|sealed):[^{}]+\}$`,
		"description": "${env:NAME} or ${file:PATH}, resolved by connmgr apply; ${sealed:...}, opened by the target connmgr's CONNMGR_IMPORT_IDENTITY."}
	schema := map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  "connmgr:schemas/connection.json",
		"title":                "connmgr connection document",
		"description":          "One connection of connections as code (connmgr apply -f). YAML files hold several, separated by ---; JSON files one object or an array of them.",
		"type":                 "object",
		"required":             []any{"apiVersion", "kind", "metadata", "spec"},
		"additionalProperties": false,
		"properties": map[string]any{
			"apiVersion": map[string]any{"const": "connmgr/v1"},
			"kind":       map[string]any{"const": "Connection"},
			"metadata": map[string]any{"type": "object", "required": []any{"name"}, "additionalProperties": false,
				"properties": map[string]any{
					"name": map[string]any{"$ref": "#/$defs/ConnectionName"},
					"labels": map[string]any{"type": "object", "maxProperties": 32,
						"description":          "Stored with the connection; apply --prune --selector key=value selects by them.",
						"propertyNames":        map[string]any{"pattern": `^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`},
						"additionalProperties": map[string]any{"type": "string", "pattern": `^[A-Za-z0-9._-]{0,63}$`}},
				}},
			"spec": map[string]any{"$ref": "#/$defs/ConnectionSpec"},
			"token": map[string]any{"type": "object", "additionalProperties": false,
				"description": "An exported refresh token (authorization code), sealed for the target.",
				"properties":  map[string]any{"refreshToken": map[string]any{"type": "string", "pattern": `^\$\{sealed:[^{}]+\}$`}}},
		},
		"$defs": defs,
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(schema); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// convert turns an OpenAPI 3.0 schema into JSON Schema 2020-12.
func convert(v any) any {
	switch v := v.(type) {
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = convert(e)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			switch {
			case k == "example" || k == "examples" || k == "discriminator" || k == "xml" || k == "externalDocs" || strings.HasPrefix(k, "x-"):
			case k == "$ref":
				out[k] = strings.Replace(e.(string), "#/components/schemas/", "#/$defs/", 1)
			default:
				out[k] = convert(e)
			}
		}
		if out["nullable"] == true {
			out["type"] = []any{out["type"], "null"}
		}
		delete(out, "nullable")
		for _, b := range []string{"Minimum", "Maximum"} {
			if out["exclusive"+b] == true {
				out["exclusive"+b] = out[strings.ToLower(b)]
				delete(out, strings.ToLower(b))
			} else if out["exclusive"+b] == false {
				delete(out, "exclusive"+b)
			}
		}
		if v["x-connmgr-secret"] == true {
			desc := out["description"]
			delete(out, "description")
			return map[string]any{"description": desc, "anyOf": []any{map[string]any{"$ref": "#/$defs/SecretReference"}, out}}
		}
		return out
	}
	return v
}

func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(connmgr.ConnectionSchema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("connection.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("connection.json")
	if err != nil {
		t.Fatalf("compile connection.schema.json: %v", err)
	}
	return s
}

// TestSchemaUpToDate: the committed schema is what openapi.yaml makes.
func TestSchemaUpToDate(t *testing.T) {
	got := generate(t)
	if *update {
		if err := os.WriteFile("schemas/connection.schema.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(got, connmgr.ConnectionSchema) {
		t.Fatal("schemas/connection.schema.json is stale: run go test . -run Schema -update")
	}
}

// createExamples returns the examples of createConnection's body.
func createExamples(t *testing.T) map[string]map[string]any {
	t.Helper()
	var api struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(connmgr.OpenAPI, &api); err != nil {
		t.Fatal(err)
	}
	get := func(v any, keys ...string) any {
		for _, k := range keys {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		return v
	}
	body := get(api.Paths["/api/v1/connections"]["post"], "requestBody", "content", "application/json")
	out := map[string]map[string]any{}
	if ex, ok := get(body, "examples").(map[string]any); ok {
		for name := range ex {
			if v, ok := get(ex, name, "value").(map[string]any); ok {
				out[name] = v
			}
		}
	}
	if v, ok := get(body, "example").(map[string]any); ok {
		out["example"] = v
	}
	if len(out) == 0 {
		t.Fatal("createConnection has no examples")
	}
	return out
}

// wrap makes a document of a create body.
func wrap(body map[string]any) map[string]any {
	spec := maps.Clone(body)
	delete(spec, "name")
	return map[string]any{"apiVersion": "connmgr/v1", "kind": "Connection",
		"metadata": map[string]any{"name": body["name"], "labels": map[string]any{"team": "orders"}}, "spec": spec}
}

// instance round-trips v through JSON, as the validator wants it.
func instance(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// TestSchemaExamples: every create example of openapi.yaml, wrapped as a
// document, is valid, also with its secrets as references; documents
// that mix policies, or are not connection documents, are not.
func TestSchemaExamples(t *testing.T) {
	s := compile(t)
	examples := createExamples(t)
	for _, name := range slices.Sorted(maps.Keys(examples)) {
		t.Run(name, func(t *testing.T) {
			doc := wrap(examples[name])
			if err := s.Validate(instance(t, doc)); err != nil {
				t.Errorf("the %s example as a document is invalid: %v", name, err)
			}
			sec, _ := doc["spec"].(map[string]any)["security"].(map[string]any)
			for _, f := range []string{"clientSecret", "password", "key", "privateKeyPem", "consumerSecret", "tokenSecret",
				"secretAccessKey", "sessionToken", "subjectToken"} {
				if _, ok := sec[f]; ok {
					sec[f] = "${env:CONN_" + strings.ToUpper(f) + "}"
				}
			}
			if m, ok := sec["secrets"].(map[string]any); ok {
				for k := range m {
					m[k] = "${file:secrets/" + k + "}"
				}
			}
			if err := s.Validate(instance(t, doc)); err != nil {
				t.Errorf("the %s example with references is invalid: %v", name, err)
			}
		})
	}
	basic := map[string]any{"name": "Conn_Mixed", "role": "INVOKE", "baseUrl": "https://x.example.com",
		"security": map[string]any{"policy": "BASIC", "username": "u", "password": "${env:P}"}}
	refused := []struct {
		name string
		doc  func() map[string]any
	}{
		{"mixed policies", func() map[string]any {
			d := wrap(basic)
			d["spec"].(map[string]any)["security"].(map[string]any)["tokenUrl"] = "https://auth.example.com/token"
			return d
		}},
		{"unknown kind", func() map[string]any { d := wrap(basic); d["kind"] = "Secret"; return d }},
		{"other apiVersion", func() map[string]any { d := wrap(basic); d["apiVersion"] = "v2"; return d }},
		{"name in spec", func() map[string]any {
			d := wrap(basic)
			d["spec"].(map[string]any)["name"] = "Conn_Mixed"
			return d
		}},
		{"no metadata.name", func() map[string]any { d := wrap(basic); d["metadata"] = map[string]any{}; return d }},
		{"wrong type", func() map[string]any { d := wrap(basic); d["spec"].(map[string]any)["timeoutMs"] = "fast"; return d }},
		{"read-only field", func() map[string]any { d := wrap(basic); d["spec"].(map[string]any)["status"] = "CONFIGURED"; return d }},
		{"bad label", func() map[string]any {
			d := wrap(basic)
			d["metadata"].(map[string]any)["labels"] = map[string]any{"team": "a b"}
			return d
		}},
		{"misspelt reference in a PEM field", func() map[string]any {
			d := wrap(basic)
			d["spec"].(map[string]any)["tls"] = map[string]any{"clientCertificatePem": "x", "clientKeyPem": "${ENV:K}"}
			return d
		}},
	}
	for _, tt := range refused {
		t.Run("refused "+tt.name, func(t *testing.T) {
			if err := s.Validate(instance(t, tt.doc())); err == nil {
				t.Errorf("a document with %s is valid, want it refused", tt.name)
			}
		})
	}
}
