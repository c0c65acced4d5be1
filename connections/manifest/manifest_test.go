package manifest_test

import (
	"encoding/json"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/connmgr/connmgr/connections/manifest"
)

const doc = "apiVersion: connmgr/v1\nkind: Connection\nmetadata: {name: Conn_A}\nspec: {role: INVOKE, timeoutMs: 30000, keywords: [a, b], on: true, none: null}\n"

// TestDecode: YAML streams and JSON objects or arrays become one JSON
// document each, in order; what a file of connections never needs is
// refused with the document and path named.
func TestDecode(t *testing.T) {
	tests := []struct {
		name, file, text string
		// want is each document's JSON; err a part of the error.
		want []string
		err  string
	}{
		{"one YAML document", "a.yaml", doc, []string{`{"apiVersion":"connmgr/v1","kind":"Connection","metadata":{"name":"Conn_A"},"spec":{"role":"INVOKE","timeoutMs":30000,"keywords":["a","b"],"on":true,"none":null}}`}, ""},
		{"a stream with empty documents", "a.yml", "---\n" + doc + "---\n---\nkind: B\n...\n", []string{"", `{"kind":"B"}`}, ""},
		{"a JSON object", "a.json", `{"kind": "A"}`, []string{`{"kind": "A"}`}, ""},
		{"a JSON object after a byte order mark", "a.json", "\ufeff" + `{"kind": "A"}`, []string{`{"kind": "A"}`}, ""},
		{"a JSON array", "a.txt", ` [{"kind": "A"}, {"kind": "B"}]`, []string{`{"kind": "A"}`, `{"kind": "B"}`}, ""},
		{"strings that look like other types stay strings", "a.yaml", "x: '123'\ny: \"true\"\n", []string{`{"x":"123","y":"true"}`}, ""},
		{"a JSON array of non-objects", "a.json", `[1]`, nil, "a.json#1: a document must be an object"},
		{"two JSON values", "a.json", `{} {}`, nil, "more than one JSON value"},
		{"broken JSON", "a.json", `{"a":`, nil, "not valid JSON"},
		{"a key twice in JSON", "a.json", `[{"kind": "A"}, {"spec": {"x": [{"a": 1}], "baseUrl": "a", "baseUrl": "b"}}]`, nil, `a.json#2: spec: key "baseUrl" appears twice`},
		{"a key twice in a JSON array's object", "a.json", `{"spec": {"x": [{"a": 1}, {"a": 2, "a": 3}]}}`, nil, `a.json#1: spec.x[1]: key "a" appears twice`},
		{"a top-level key twice in JSON", "a.json", `{"kind": "A", "kind": "B"}`, nil, `a.json#1: key "kind" appears twice`},
		{"the same key in sibling JSON objects", "a.json", `{"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 2}]}`, []string{`{"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 2}]}`}, ""},
		{"invalid UTF-8 in JSON", "a.json", "{\"a\": \"x\xff\"}", nil, "a.json: not valid UTF-8"},
		{"invalid UTF-8 in YAML", "a.yaml", "a: \"x\xff\"\n", nil, "a.yaml#1"},
		{"a scalar document", "a.yaml", "just text\n", nil, "a.yaml#1: a document must be a mapping"},
		{"anchors and aliases", "a.yaml", "a: &x [1]\nb: *x\n", nil, "a.yaml#1: a: YAML anchors and aliases"},
		{"merge keys", "a.yaml", "a: {x: 1}\nb:\n  <<: {y: 2}\n", nil, "merge keys"},
		{"keys that are not strings", "a.yaml", "1: a\n", nil, "keys must be strings"},
		{"a key twice", "a.yaml", "spec: {a: 1, a: 2}\n", nil, "a.yaml#1"},
		{"custom tags", "a.yaml", "a: !!binary aGk=\n", nil, "the YAML tag !!binary"},
		{"numbers JSON does not write", "a.yaml", "a: 0x1F\n", nil, `the number "0x1F"`},
		{"syntax error in the second document", "a.yaml", doc + "---\na: [\n", nil, "a.yaml#2"},
		{"too deep", "a.yaml", strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\n", nil, "a document must be"},
		{"too deep in a mapping", "a.yaml", "a: " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\n", nil, "nested more than"},
		{"too deep in JSON", "a.json", `{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, nil, "nested more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := manifest.Decode(tt.file, []byte(tt.text))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Decode = %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(docs) != len(tt.want) {
				t.Fatalf("Decode = %d documents, want %d", len(docs), len(tt.want))
			}
			for i, d := range docs {
				if tt.want[i] != "" && string(d.JSON) != tt.want[i] {
					t.Errorf("document %d = %s, want %s", i, d.JSON, tt.want[i])
				}
				if !json.Valid(d.JSON) {
					t.Errorf("document %d is not JSON: %s", i, d.JSON)
				}
			}
			if last := docs[len(docs)-1]; last.Where() != tt.file+"#"+itoa(len(docs)) {
				t.Errorf("the last document is %s, want %s#%d", last.Where(), tt.file, len(docs))
			}
		})
	}
	big := make([]byte, manifest.MaxFileSize+1)
	if _, err := manifest.Decode("big.yaml", big); err == nil || !strings.Contains(err.Error(), "big.yaml") {
		t.Errorf("Decode of a file over the limit = %v, want an error naming it", err)
	}
	many := strings.Repeat("---\na: 1\n", manifest.MaxDocuments+1)
	if _, err := manifest.Decode("many.yaml", []byte(many)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("Decode of too many documents = %v, want an error", err)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestRoundTrip: JSON written as YAML by Write reads back as the same
// JSON, key order kept, multi-line strings as literal blocks.
func TestRoundTrip(t *testing.T) {
	in := `{"apiVersion":"connmgr/v1","spec":{"z":"first","a":"123","pem":"-----BEGIN X-----\nAAA\n-----END X-----\n","e":{},"l":[],"n":5,"ref":"${env:A_B}"}}`
	n, err := manifest.FromJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := manifest.Write(&b, "a header\nof two lines", []*yaml.Node{n}); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if !strings.HasPrefix(text, "# a header\n# of two lines\n---\n") || !strings.Contains(text, "pem: |") {
		t.Errorf("Write =\n%s\nwant the header as comments and the PEM as a literal block", text)
	}
	docs, err := manifest.Decode("x.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if string(docs[0].JSON) != in {
		t.Errorf("round trip = %s, want %s", docs[0].JSON, in)
	}
}

// TestRefs reads references and names variables.
func TestRefs(t *testing.T) {
	refs := []struct {
		in, kind, arg string
		ok            bool
	}{
		{"${env:ORDERS_SECRET}", "env", "ORDERS_SECRET", true},
		{"${file:secrets/orders.txt}", "file", "secrets/orders.txt", true},
		{"${sealed:YWdl}", "sealed", "YWdl", true},
		{"${ENV:X}", "", "", false},
		{"${env:X", "", "", false},
		{"prefix ${env:X}", "", "", false},
		{"${vault:x}", "", "", false},
	}
	for _, tt := range refs {
		r, ok := manifest.ParseRef(tt.in)
		if ok != tt.ok || r.Kind != tt.kind || r.Arg != tt.arg {
			t.Errorf("ParseRef(%q) = %+v, %v; want %s %s %v", tt.in, r, ok, tt.kind, tt.arg, tt.ok)
		}
	}
	names := []struct{ conn, field, want string }{
		{"Conn_REST_Orders_TriggerInvoke_OAuth", "clientSecret", "CONN_REST_ORDERS_TRIGGERINVOKE_OAUTH_CLIENT_SECRET"},
		{"orders-api", "tls.clientKeyPem", "CONN_ORDERS_API_TLS_CLIENT_KEY_PEM"},
		{"Billing", "secrets.app_key", "CONN_BILLING_SECRETS_APP_KEY"},
	}
	for _, tt := range names {
		if got := manifest.EnvName(tt.conn, tt.field); got != tt.want || !manifest.ValidEnvName(got) {
			t.Errorf("EnvName(%q, %q) = %q, want %q", tt.conn, tt.field, got, tt.want)
		}
	}
}

// FuzzDecode: no input makes Decode panic, and every document it returns
// is JSON.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{doc, "---\n" + doc + "---\n", `[{"a":1}]`, `{"a":[1,{"b":null}]}`, "a: &x 1\nb: *x\n", "? [a]\n: b\n"} {
		f.Add("f.yaml", []byte(s))
		f.Add("f.json", []byte(s))
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		docs, err := manifest.Decode(name, data)
		if err != nil {
			return
		}
		for _, d := range docs {
			if !json.Valid(d.JSON) {
				t.Fatalf("Decode(%q) returned a document that is not JSON: %q", data, d.JSON)
			}
		}
	})
}
