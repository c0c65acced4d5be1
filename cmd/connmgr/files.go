package main

// Reading files of connections as code on the client side: expand the
// paths given to -f, decode every document, resolve ${env:NAME} and
// ${file:PATH} references, refuse plain secrets. Everything is read and
// checked before anything is sent, so a bad file applies nothing.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/manifest"
	"github.com/connmgr/connmgr/security"
)

// maxRefFile bounds a file a ${file:PATH} reference reads: a secret is at
// most connections.MaxSecretLen.
const maxRefFile = connections.MaxSecretLen

// loadOptions say how documents are read.
type loadOptions struct {
	getenv func(string) string
	// allowPlain accepts secret values written in the file itself.
	allowPlain bool
}

// loaded is the documents read, resolved and ready to send, with where
// each came from (same index).
type loaded struct {
	docs   []json.RawMessage
	source []manifest.Document
	names  []string
}

// where names document i for messages: "orders.yaml#2 (Conn_X)".
func (l *loaded) where(i int) string {
	if i < 0 || i >= len(l.source) {
		return fmt.Sprintf("document %d", i)
	}
	if l.names[i] != "" {
		return l.source[i].Where() + " (" + l.names[i] + ")"
	}
	return l.source[i].Where()
}

// problemsError lists every problem found in the files.
type problemsError []string

func (p problemsError) Error() string {
	what := "problems"
	if len(p) == 1 {
		what = "problem"
	}
	return fmt.Sprintf("%d %s in the files, nothing was sent:\n  %s", len(p), what, strings.Join(p, "\n  "))
}

// expandPaths returns the files of paths: files as they are, directories
// walked for *.yaml, *.yml and *.json (hidden entries skipped), sorted.
func expandPaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			out = append(out, p)
			continue
		}
		// A symlink to a directory is walked as the directory (WalkDir
		// would take it as a file): a trailing separator resolves it.
		root := p
		if li, err := os.Lstat(p); err == nil && li.Mode()&fs.ModeSymlink != 0 {
			root = p + string(filepath.Separator)
		}
		var found []string
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					found = append(found, path)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		slices.Sort(found)
		out = append(out, found...)
	}
	if len(out) == 0 {
		return nil, errors.New("no files: give -f a file or a directory holding *.yaml, *.yml or *.json")
	}
	return out, nil
}

// readBounded reads a file of at most limit bytes, saying so when it is
// larger, without reading it whole.
func readBounded(path string, limit int64) ([]byte, error) {
	// Checked before opening too: opening a FIFO waits for a writer,
	// forever and deaf to Ctrl-C.
	if info, err := os.Stat(path); err != nil {
		return nil, err
	} else if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if info.Size() > limit {
		return nil, fmt.Errorf("%s is %s, larger than the %s it may be", path, size(info.Size()), size(limit))
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than the %s it may be", path, size(limit))
	}
	return b, nil
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// loadDocuments reads every document of paths and resolves its
// references. It fails, listing every problem, when any document has one.
func loadDocuments(paths []string, o loadOptions) (*loaded, error) {
	files, err := expandPaths(paths)
	if err != nil {
		return nil, err
	}
	l := &loaded{}
	var problems problemsError
	total := 0
	for _, f := range files {
		data, err := readBounded(f, manifest.MaxFileSize)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		docs, err := manifest.Decode(f, data)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		total += len(docs)
		if total > connections.MaxDocuments {
			return nil, fmt.Errorf("more than %d documents in the files; apply them in parts", connections.MaxDocuments)
		}
		for _, d := range docs {
			resolved, name, errs := resolveDocument(d, filepath.Dir(f), o)
			for _, e := range errs {
				where := d.Where()
				if name != "" {
					where += " (" + name + ")"
				}
				problems = append(problems, where+": "+e)
			}
			l.docs = append(l.docs, resolved)
			l.source = append(l.source, d)
			l.names = append(l.names, name)
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	if len(l.docs) == 0 {
		return nil, errors.New("the files hold no documents")
	}
	return l, nil
}

// resolveDocument replaces the ${env:...} and ${file:...} references of
// d's spec with their values and checks that no secret field holds a
// plain value. dir is the directory ${file:...} paths are relative to.
func resolveDocument(d manifest.Document, dir string, o loadOptions) (json.RawMessage, string, []string) {
	var doc map[string]any
	if err := json.Unmarshal(d.JSON, &doc); err != nil {
		return nil, "", []string{"not an object"}
	}
	name, _ := mapAt(doc, "metadata", "name").(string)
	spec, ok := doc["spec"].(map[string]any)
	if !ok {
		// The server names what is missing or wrong.
		return d.JSON, name, nil
	}
	var errs []string
	if !o.allowPlain {
		for _, f := range secretFields(spec) {
			if v, ok := mapAt(spec, strings.Split(f, ".")...).(string); ok && v != "" && v != connections.Mask && !manifest.LooksLikeRef(v) {
				errs = append(errs, "spec."+f+" holds a secret value; write ${env:NAME}, ${file:PATH} or ${sealed:...} instead "+
					"(or pass --allow-plain-secrets: a value in a file ends up in git, shell history and CI logs)")
			}
		}
	}
	resolve := func(path, s string) (string, bool) {
		if !manifest.LooksLikeRef(s) {
			return s, true
		}
		ref, ok := manifest.ParseRef(s)
		if !ok {
			errs = append(errs, path+": "+quoteShort(s)+" is not a reference: write ${env:NAME}, ${file:PATH} or ${sealed:...}")
			return s, false
		}
		switch ref.Kind {
		case "env":
			if !manifest.ValidEnvName(ref.Arg) {
				errs = append(errs, path+": "+ref.String()+" does not name an environment variable")
				return s, false
			}
			v := o.getenv(ref.Arg)
			if v == "" {
				errs = append(errs, path+": the environment variable "+ref.Arg+" ("+ref.String()+") is not set")
				return s, false
			}
			return v, true
		case "file":
			p := ref.Arg
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			b, err := readBounded(p, maxRefFile)
			if err != nil {
				errs = append(errs, path+": "+ref.String()+": "+strings.TrimPrefix(strings.TrimPrefix(err.Error(), "open "), "stat "))
				return s, false
			}
			v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			if v == "" {
				errs = append(errs, path+": "+ref.String()+" is empty")
				return s, false
			}
			return v, true
		}
		return s, true // sealed: the server opens it
	}
	walkStrings(spec, "spec", resolve)
	if tok, ok := doc["token"].(map[string]any); ok {
		if rt, ok := tok["refreshToken"].(string); ok && !strings.HasPrefix(rt, "${sealed:") {
			errs = append(errs, "token.refreshToken must be ${sealed:...}: refresh tokens come only from exports made with --seal-to")
		}
	}
	if len(errs) > 0 {
		return nil, name, errs
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, name, []string{err.Error()}
	}
	return b, name, nil
}

func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// walkStrings calls f on every string of v (maps and arrays walked) with
// its path, replacing it with what f returns.
func walkStrings(v any, path string, f func(path, s string) (string, bool)) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = walkStrings(e, path+"."+k, f)
		}
	case []any:
		for i, e := range v {
			v[i] = walkStrings(e, fmt.Sprintf("%s[%d]", path, i), f)
		}
	case string:
		s, _ := f(path, v)
		return s
	}
	return v
}

func mapAt(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// secretFields returns the paths within spec of the secret fields that
// spec's policy (and TLS) has, entries of maps of secrets included.
func secretFields(spec map[string]any) []string {
	out := []string{"tls.clientKeyPem"}
	policy, _ := mapAt(spec, "security", "policy").(string)
	for _, f := range security.Describe()[connections.Policy(policy)] {
		if !f.Secret {
			continue
		}
		if f.Kind == "secrets" {
			m, _ := mapAt(spec, append([]string{"security"}, strings.Split(f.Path, ".")...)...).(map[string]any)
			for k := range m {
				out = append(out, "security."+f.Path+"."+k)
			}
			continue
		}
		out = append(out, "security."+f.Path)
	}
	return out
}
