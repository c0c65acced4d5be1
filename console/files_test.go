package console_test

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/store/storetest"
)

// TestFiles holds the console's files to the rules that keep it safe and
// offline: served from the binary under the CSP, no inline script or
// style, no HTML parsing of data, nothing from another origin, no
// browser storage; and the contract the forms are built from.
func TestFiles(t *testing.T) {
	t.Parallel()
	s := newServer(t, storetest.SQLite)
	var files []string
	err := filepath.WalkDir("static", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil || len(files) < 5 {
		t.Fatalf("static files: %v, %v", files, err)
	}
	forbidden := []struct{ what, re string }{
		{"HTML parsing of strings", `\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser`},
		{"code from strings", `\beval\(|new Function\(|setTimeout\("|setInterval\("`},
		{"browser storage", `localStorage|sessionStorage|indexedDB|document\.cookie`},
		{"another origin", `https?://|//cdn|@import`},
		{"inline style", `\.style\.|style=|<style`},
	}
	ctypes := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8"}
	for _, f := range files {
		rel := strings.TrimPrefix(filepath.ToSlash(f), "static/")
		disk, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(disk)
		if strings.HasSuffix(f, ".js") {
			// Comments may name what the code must not do.
			text = regexp.MustCompile(`(?m)^\s*//.*$`).ReplaceAllString(text, "")
		}
		for _, fb := range forbidden {
			if m := regexp.MustCompile(fb.re).FindString(text); m != "" {
				t.Errorf("%s: %s (%q)", f, fb.what, m)
			}
		}
		path := "/console/static/" + rel
		if rel == "index.html" {
			path = "/console/"
			scripts := regexp.MustCompile(`<script([^>]*)>([\s\S]*?)</script>`).FindAllStringSubmatch(text, -1)
			for _, m := range scripts {
				if strings.TrimSpace(m[2]) != "" || !strings.Contains(m[1], "src=") {
					t.Errorf("index.html has an inline script: %q", m[0])
				}
			}
			if len(scripts) != 1 {
				t.Errorf("index.html has %d scripts, want the one module", len(scripts))
			}
		}
		res := s.send("GET", path, nil, nil)
		body, _ := readAll(res)
		if res.StatusCode != http.StatusOK || body != string(disk) {
			t.Errorf("GET %s = %d, %d bytes; want 200 with the file (%d bytes)", path, res.StatusCode, len(body), len(disk))
		}
		if want := ctypes[filepath.Ext(f)]; want != "" && res.Header.Get("Content-Type") != want {
			t.Errorf("GET %s Content-Type = %q, want %q", path, res.Header.Get("Content-Type"), want)
		}
		if res.Header.Get("Content-Security-Policy") != consoleCSP || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: CSP %q, nosniff %q", path, res.Header.Get("Content-Security-Policy"), res.Header.Get("X-Content-Type-Options"))
		}
	}

	for _, c := range []struct {
		path     string
		status   int
		location string
	}{
		{"/console", http.StatusMovedPermanently, "/console/"},
		{"/console/connections/Conn_X", http.StatusOK, ""},
		{"/console/connections/Conn_X/edit", http.StatusOK, ""},
		{"/console/static/nope.js", http.StatusNotFound, ""},
		{"/console/static/console.go", http.StatusNotFound, ""},
		{"/console/static/index.html", http.StatusNotFound, ""},
		{"/console/session", http.StatusUnauthorized, ""},
	} {
		res := s.send("GET", c.path, nil, nil)
		if res.StatusCode != c.status || res.Header.Get("Location") != c.location {
			t.Errorf("GET %s = %d, Location %q; want %d, %q", c.path, res.StatusCode, res.Header.Get("Location"), c.status, c.location)
		}
	}

	var contract struct {
		Components struct {
			Schemas map[string]json.RawMessage
		}
	}
	res := s.send("GET", "/console/contract.json", nil, &contract)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /console/contract.json = %d", res.StatusCode)
	}
	// Each policy's form comes from the schema its discriminator maps to.
	for _, union := range []string{"SecurityCreate", "Security"} {
		var u struct {
			Discriminator struct{ Mapping map[string]string }
		}
		if err := json.Unmarshal(contract.Components.Schemas[union], &u); err != nil {
			t.Fatal(err)
		}
		if len(u.Discriminator.Mapping) == 0 {
			t.Errorf("contract.json: %s has no discriminator mapping: the forms would have no policy", union)
		}
		for policy, ref := range u.Discriminator.Mapping {
			if contract.Components.Schemas[strings.TrimPrefix(ref, "#/components/schemas/")] == nil {
				t.Errorf("contract.json: %s maps %s to %s, which is not there", union, policy, ref)
			}
		}
	}
	// The order of properties is the order of the form's fields.
	raw := string(contract.Components.Schemas["ConnectionCreate"])
	if i, j := strings.Index(raw, `"name"`), strings.Index(raw, `"baseUrl"`); i < 0 || j < 0 || i > j {
		t.Errorf("ConnectionCreate's properties lost their order: name at %d, baseUrl at %d", i, j)
	}
}

// consoleCSP is the policy every console answer carries.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func readAll(res *http.Response) (string, error) {
	b, err := io.ReadAll(res.Body)
	return string(b), err
}
