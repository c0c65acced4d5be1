// Package manifest reads and writes the files of connections as code:
// YAML (several documents separated by ---) or JSON (an object, or an
// array of them), each document
//
//	apiVersion: connmgr/v1
//	kind: Connection
//	metadata: {name: ..., labels: {...}}
//	spec: the API's create body without name
//
// with secrets as references: ${env:NAME}, ${file:PATH} (resolved by the
// client) or ${sealed:...} (opened by the server). It knows the shape of
// files, not what a connection means: the server checks that.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// The document's apiVersion and kind.
const (
	APIVersion = "connmgr/v1"
	Kind       = "Connection"
)

// Limits on what Decode reads, so that a hostile file fails early.
const (
	// MaxFileSize bounds one file.
	MaxFileSize = 10 << 20
	// MaxDocuments bounds the documents of one file.
	MaxDocuments = 1000
	// maxDepth bounds nesting.
	maxDepth = 32
)

// Document is one document of a file, as JSON, and where it came from.
type Document struct {
	// File is the file's name as given; Index the document's position in
	// it, from 1.
	File  string
	Index int
	JSON  json.RawMessage
}

// Where names the document for messages: "orders.yaml#2".
func (d Document) Where() string { return d.File + "#" + strconv.Itoa(d.Index) }

// Decode reads the documents of a file: JSON when it is named *.json or
// starts with '{' or '[', else YAML. YAML anchors and aliases, merge
// keys, tags other than the core ones and keys that are not strings are
// refused: a file of connections needs none of them, and aliases are how
// small files expand into huge ones.
func Decode(file string, data []byte) ([]Document, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: %d bytes, larger than the %d MiB a file may be", file, len(data), MaxFileSize>>20)
	}
	// A byte order mark, as some Windows editors write, is not content.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimLeftFunc(data, unicode.IsSpace)
	if strings.EqualFold(filepath.Ext(file), ".json") || len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return decodeJSON(file, trimmed)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Document
	for i := 1; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %v", file, i, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if len(out) >= MaxDocuments {
			return nil, fmt.Errorf("%s: more than %d documents", file, MaxDocuments)
		}
		if len(n.Content) == 0 || n.Content[0].Tag == "!!null" {
			i-- // an empty document (a trailing ---)
			continue
		}
		root := n.Content[0]
		if root.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s#%d: a document must be a mapping (apiVersion, kind, metadata, spec)", file, i)
		}
		b, err := ToJSON(root)
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %v", file, i, err)
		}
		out = append(out, Document{File: file, Index: i, JSON: b})
	}
}

func decodeJSON(file string, data []byte) ([]Document, error) {
	if !utf8.Valid(data) {
		// encoding/json would replace the bytes with U+FFFD and go on;
		// YAML files are refused for the same, so JSON files are too.
		return nil, fmt.Errorf("%s: not valid UTF-8", file)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s: not valid JSON: %v", file, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one JSON value; put several documents in an array", file)
	}
	var items []json.RawMessage
	if bytes.HasPrefix(data, []byte("[")) {
		if err := json.Unmarshal(data, &items); err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
	} else {
		items = []json.RawMessage{json.RawMessage(data)}
	}
	if len(items) > MaxDocuments {
		return nil, fmt.Errorf("%s: more than %d documents", file, MaxDocuments)
	}
	out := make([]Document, 0, len(items))
	for i, it := range items {
		if t := bytes.TrimSpace(it); len(t) == 0 || t[0] != '{' {
			return nil, fmt.Errorf("%s#%d: a document must be an object (apiVersion, kind, metadata, spec)", file, i+1)
		}
		if depth(it) > maxDepth {
			return nil, fmt.Errorf("%s#%d: nested more than %d levels deep", file, i+1, maxDepth)
		}
		if err := duplicateKeys(it); err != nil {
			return nil, fmt.Errorf("%s#%d: %v", file, i+1, err)
		}
		out = append(out, Document{File: file, Index: i + 1, JSON: bytes.TrimSpace(it)})
	}
	return out, nil
}

// duplicateKeys refuses an object that holds a key twice, as YAML files
// are refused: encoding/json would keep the last value, which a reader
// of the file may not notice.
func duplicateKeys(b []byte) error {
	type frame struct {
		keys    map[string]bool // nil for an array
		path    string          // of the object or array
		key     string          // the member being read
		wantKey bool
		idx     int
	}
	var stack []*frame
	// done moves the innermost container past a value it holds.
	done := func() {
		if len(stack) == 0 {
			return
		}
		if top := stack[len(stack)-1]; top.keys != nil {
			top.wantKey = true
		} else {
			top.idx++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		t, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if k, ok := t.(string); ok && top != nil && top.keys != nil && top.wantKey {
			if top.keys[k] {
				if top.path == "" {
					return fmt.Errorf("key %q appears twice", k)
				}
				return fmt.Errorf("%s: key %q appears twice", top.path, k)
			}
			top.keys[k], top.key, top.wantKey = true, k, false
			continue
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			f := &frame{}
			switch {
			case top != nil && top.keys != nil:
				f.path = joinPath(top.path, top.key)
			case top != nil:
				f.path = fmt.Sprintf("%s[%d]", top.path, top.idx)
			}
			if t == json.Delim('{') {
				f.keys, f.wantKey = map[string]bool{}, true
			}
			stack = append(stack, f)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			done()
		default:
			done()
		}
	}
}

// depth is the nesting depth of a JSON text.
func depth(b []byte) int {
	d, most, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			d++
			most = max(most, d)
		case c == '}' || c == ']':
			d--
		}
	}
	return most
}

// ToJSON converts a YAML node to JSON, keeping the order of keys. It
// refuses what JSON cannot say and what files of connections never need
// (see Decode).
func ToJSON(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	if err := writeJSON(&b, n, 0, ""); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeJSON(b *bytes.Buffer, n *yaml.Node, d int, path string) error {
	at := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		if path != "" {
			msg = path + ": " + msg
		}
		return errors.New(msg)
	}
	if d > maxDepth {
		return at("nested more than %d levels deep", maxDepth)
	}
	if n.Anchor != "" || n.Kind == yaml.AliasNode {
		return at("YAML anchors and aliases are not supported")
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return at("empty document")
		}
		return writeJSON(b, n.Content[0], d, path)
	case yaml.MappingNode:
		b.WriteByte('{')
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
				if k.Tag == "!!merge" {
					return at("YAML merge keys (<<) are not supported")
				}
				return at("keys must be strings, found %s", strings.TrimPrefix(k.Tag, "!!"))
			}
			if seen[k.Value] {
				return at("key %q appears twice", k.Value)
			}
			seen[k.Value] = true
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(k.Value)
			b.Write(kb)
			b.WriteByte(':')
			if err := writeJSON(b, v, d+1, joinPath(path, k.Value)); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, v := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, v, d+1, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			s, _ := json.Marshal(n.Value)
			b.Write(s)
		case "!!int", "!!float":
			var f json.Number
			if err := json.Unmarshal([]byte(n.Value), &f); err != nil {
				// YAML numbers JSON does not write (0x1f, 1_000, .inf).
				return at("the number %q must be written in decimal", n.Value)
			}
			b.WriteString(n.Value)
		case "!!bool":
			var v bool
			if err := n.Decode(&v); err != nil {
				return at("%v", err)
			}
			b.WriteString(strconv.FormatBool(v))
		case "!!null":
			b.WriteString("null")
		default:
			return at("the YAML tag %s is not supported", n.Tag)
		}
	default:
		return at("unsupported YAML node")
	}
	return nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// FromJSON reads JSON text as a YAML node tree in block style, keeping
// the order of keys.
func FromJSON(b []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 {
		return nil, errors.New("empty JSON")
	}
	n := doc.Content[0]
	blockStyle(n)
	return n, nil
}

// blockStyle drops the flow and quoting styles JSON text comes with; the
// encoder quotes what needs it.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && strings.Contains(n.Value, "\n") {
		n.Style = yaml.LiteralStyle // certificates and keys read as they are
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
	if (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && len(n.Content) == 0 {
		n.Style = yaml.FlowStyle // {} and []
	}
}

// Field returns the value of key in mapping m, nil when absent.
func Field(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// At returns the node at a dotted path of mappings ("security.clientSecret").
func At(m *yaml.Node, path string) *yaml.Node {
	for key := range strings.SplitSeq(path, ".") {
		if m = Field(m, key); m == nil {
			return nil
		}
	}
	return m
}

// Delete removes key from mapping m.
func Delete(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

// Set sets key of mapping m to v, appending it when absent.
func Set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

// String is a YAML string node.
func String(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// Mapping is a YAML mapping of the given key and value pairs.
func Mapping(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(kv); i += 2 {
		v, ok := kv[i+1].(*yaml.Node)
		if !ok {
			v = String(fmt.Sprint(kv[i+1]))
		}
		Set(m, kv[i].(string), v)
	}
	return m
}

// Write writes docs as a YAML stream: the header as comment lines, then
// each document after a "---" line, with its head comment.
func Write(w io.Writer, header string, docs []*yaml.Node) error {
	var b bytes.Buffer
	for line := range strings.SplitSeq(strings.TrimRight(header, "\n"), "\n") {
		if header != "" {
			b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
		}
	}
	for _, d := range docs {
		b.WriteString("---\n")
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(d); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Ref is a reference a secret field holds instead of a value.
type Ref struct {
	// Kind is "env", "file" or "sealed"; Arg the variable's name, the
	// path, or the sealed data.
	Kind, Arg string
}

func (r Ref) String() string {
	if r.Kind == "sealed" {
		return "${sealed:...}"
	}
	return "${" + r.Kind + ":" + r.Arg + "}"
}

var refRE = regexp.MustCompile(`^\$\{(env|file|sealed):([^{}]+)\}$`)

// ParseRef reads a whole-string reference: ${env:NAME}, ${file:PATH},
// ${sealed:...}.
func ParseRef(s string) (Ref, bool) {
	m := refRE.FindStringSubmatch(s)
	if m == nil {
		return Ref{}, false
	}
	return Ref{m[1], m[2]}, true
}

// LooksLikeRef reports whether s starts like a reference, so that a
// misspelt one ("${ENV:X}", "${env:X") is reported rather than taken as
// a value.
func LooksLikeRef(s string) bool { return strings.HasPrefix(s, "${") }

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidEnvName reports whether s can name an environment variable.
func ValidEnvName(s string) bool { return envNameRE.MatchString(s) }

// EnvName is the variable an export names for a secret field of a
// connection: CONN_<NAME>_<FIELD>, upper case, '-' and '.' as '_', camel
// case split (Conn_Orders, security.clientSecret:
// CONN_ORDERS_SECURITY_CLIENT_SECRET); a name that starts with Conn_ is not
// prefixed again.
func EnvName(connection, field string) string {
	name := strings.ToUpper(strings.ReplaceAll(connection, "-", "_"))
	if !strings.HasPrefix(name, "CONN_") {
		name = "CONN_" + name
	}
	var f strings.Builder
	prev := rune(0)
	for _, r := range field {
		switch {
		case r == '.' || r == '-' || r == '[' || r == ']':
			r = '_'
		case unicode.IsUpper(r) && unicode.IsLower(prev):
			f.WriteByte('_')
		}
		if r == '_' && (prev == '_' || f.Len() == 0) {
			prev = r
			continue
		}
		f.WriteRune(unicode.ToUpper(r))
		prev = r
	}
	out := name + "_" + strings.TrimRight(f.String(), "_")
	return strings.Map(func(r rune) rune {
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_') {
			return r
		}
		return '_'
	}, out)
}
