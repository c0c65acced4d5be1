// Package console is connmgr's admin console, served at /console/: a
// small front end of dependency-free ES modules (static/, embedded, no
// build step) that works on the public API (/api/v1) with a session
// cookie instead of a bearer key, so that there is no second path to the
// data. Its server side is only what the API cannot be: the pages
// themselves, the contract as JSON for the forms, and the sign-in, session
// and sign-out endpoints of access.Sessions, which keeps sessions where
// every replica sees them.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/connections"
)

//go:embed static
var staticFiles embed.FS

// ContentSecurityPolicy is sent with every page and file of the console:
// no inline script or style, nothing from another origin.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config is what the console needs. Sessions and OpenAPI are required.
type Config struct {
	// Sessions signs people in and authenticates their browsers.
	Sessions *access.Sessions
	// OpenAPI is the contract (openapi.yaml); the pages build their forms
	// from it.
	OpenAPI []byte
	Logger  *slog.Logger
}

// Console serves the console's pages and session endpoints. It is an
// http.Handler for /console and /console/...; it is safe for concurrent
// use.
type Console struct {
	sessions    *access.Sessions
	log         *slog.Logger
	contract    []byte
	contractTag string
	static      fs.FS
	mux         *http.ServeMux
}

// New returns the console for cfg. It fails when the contract does not
// convert to JSON.
func New(cfg Config) (*Console, error) {
	if cfg.Sessions == nil {
		return nil, errors.New("console: Sessions is required")
	}
	contract, err := contractJSON(cfg.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("console: openapi.yaml: %w", err)
	}
	sum := sha256.Sum256(contract)
	static, _ := fs.Sub(staticFiles, "static")
	c := &Console{sessions: cfg.Sessions, log: cfg.Logger, contract: contract,
		contractTag: `"` + hex.EncodeToString(sum[:8]) + `"`, static: static}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /console/", c.page)
	mux.HandleFunc("GET /console/static/{file...}", c.file)
	mux.HandleFunc("GET /console/contract.json", c.serveContract)
	mux.HandleFunc("GET /console/session", c.getSession)
	mux.HandleFunc("POST /console/session", c.signIn)
	mux.HandleFunc("DELETE /console/session", c.signOut)
	c.mux = mux
	return c, nil
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if c.sessions.Secure() || r.TLS != nil {
		// Browsers ignore it (and say so) on plain HTTP.
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
	}
	c.mux.ServeHTTP(w, r)
}

// page serves the console's one HTML page for every page path: the
// module it loads draws the page that the path names.
func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/console/static/") {
		c.notFound(w)
		return
	}
	c.serveFile(w, r, "index.html", "no-store")
}

func (c *Console) file(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "index.html" || !fs.ValidPath(name) {
		c.notFound(w)
		return
	}
	c.serveFile(w, r, name, "no-cache")
}

// serveFile serves an embedded file with an ETag, so that a browser
// revalidates (no-cache) and an upgraded binary's files are seen at once.
func (c *Console) serveFile(w http.ResponseWriter, r *http.Request, name, cache string) {
	data, err := fs.ReadFile(c.static, name)
	if err != nil {
		c.notFound(w)
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js":
		ctype = "text/javascript; charset=utf-8"
	case ".css":
		ctype = "text/css; charset=utf-8"
	case ".html":
		ctype = "text/html; charset=utf-8"
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	sum := sha256.Sum256(data)
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", cache)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func (c *Console) serveContract(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", c.contractTag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(c.contract))
}

// sessionBody is what GET and POST /console/session answer: who is
// signed in, what the key's role allows (so that pages show only that),
// the CSRF token to send with changes, and when the session ends.
type sessionBody struct {
	Key struct {
		ID          string   `json:"id"`
		Name        string   `json:"name"`
		Role        string   `json:"role"`
		Connections []string `json:"connections"`
	} `json:"key"`
	Permissions []string  `json:"permissions"`
	CSRFToken   string    `json:"csrfToken"`
	ExpiresAt   time.Time `json:"expiresAt"`
	IdleUntil   time.Time `json:"idleUntil"`
}

// permissions names what the key's role allows, as the pages ask.
var permissions = []struct {
	name string
	perm access.Permission
}{
	{"read", access.PermRead}, {"write", access.PermWrite}, {"invoke", access.PermInvoke},
	{"manageKeys", access.PermManageKeys}, {"audit", access.PermAudit},
}

func (c *Console) body(s *access.Session, key *access.APIKey, csrf string) *sessionBody {
	b := &sessionBody{CSRFToken: csrf, ExpiresAt: s.ExpiresAt, IdleUntil: s.IdleUntil, Permissions: []string{}}
	b.Key.ID, b.Key.Name, b.Key.Role, b.Key.Connections = key.ID, key.Name, string(key.Role), key.Connections
	if b.Key.Connections == nil {
		b.Key.Connections = []string{}
	}
	for _, p := range permissions {
		if key.Can(p.perm) {
			b.Permissions = append(b.Permissions, p.name)
		}
	}
	return b
}

func (c *Console) getSession(w http.ResponseWriter, r *http.Request) {
	s, key, csrf, err := c.sessions.Current(r)
	if err != nil {
		c.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c.body(s, key, csrf))
}

// maxSignInBody bounds the sign-in form.
const maxSignInBody = 4 << 10

// signIn checks the API key posted in the form field "key" (never a URL:
// the query is not read) and starts a session for it. A page's fetch
// (Accept: application/json) gets the session; a plain form post is sent
// on to the console.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxSignInBody)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		writeProblem(w, http.StatusUnsupportedMediaType, "unsupported_media_type",
			"send the key as a form field: Content-Type application/x-www-form-urlencoded")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeProblem(w, http.StatusBadRequest, "malformed_request", "the form cannot be read")
		return
	}
	s, key, csrf, err := c.sessions.SignIn(w, r, r.PostForm.Get("key"))
	if err != nil {
		c.fail(w, err)
		return
	}
	c.log.InfoContext(r.Context(), "console sign-in", "actor", key.Name, "role", string(key.Role))
	if !strings.Contains(r.Header.Get("Accept"), "application/json") {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, c.body(s, key, csrf))
}

// signOut ends the session on the server, whatever the cookie does next.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	if err := c.sessions.SignOut(w, r); err != nil {
		c.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (c *Console) notFound(w http.ResponseWriter) {
	writeProblem(w, http.StatusNotFound, "route_not_found", "no such file in the console")
}

// fail answers err as problem+json, as the API would.
func (c *Console) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, access.ErrUnauthenticated):
		writeProblem(w, http.StatusUnauthorized, "unauthorized",
			"not signed in: the session is unknown, expired or ended, or its API key was revoked")
	case errors.Is(err, access.ErrCSRF), errors.Is(err, access.ErrCrossSite):
		writeProblem(w, http.StatusForbidden, "csrf_failed", err.Error())
	case errors.Is(err, connections.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		writeProblem(w, http.StatusServiceUnavailable, "database_unavailable", "the database cannot be reached; retry later")
	default:
		c.log.Error("console request failed", "error", err.Error())
		writeProblem(w, http.StatusInternalServerError, "internal_error", "connmgr failed to handle the request")
	}
}

// problem is an RFC 9457 problem, the shape of the API's errors.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Type: "urn:connmgr:problem:" + code, Title: http.StatusText(status),
		Status: status, Detail: detail, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
