//go:build interop

package interop

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// resourceServer is a target API that accepts a request only when
// glewlwyd's RFC 7662 introspection, called with the rs-introspect client,
// says its bearer token is active. It answers 200 with what introspection
// said about the token (client_id, scope), else 401.
func resourceServer(t testing.TB, introspectURL, clientID, secret string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="interop"`)
			http.Error(w, `{"error":"no bearer token"}`, http.StatusUnauthorized)
			return
		}
		a, err := postForm(introspectURL, url.Values{"token": {tok}}, clientID, secret)
		if err != nil || a.status != http.StatusOK {
			http.Error(w, `{"error":"introspection failed"}`, http.StatusBadGateway)
			return
		}
		var in struct {
			Active   bool   `json:"active"`
			ClientID string `json:"client_id"`
			Scope    string `json:"scope"`
			Username string `json:"username"`
		}
		if json.Unmarshal(a.body, &in) != nil || !in.Active {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"token not active"}`, http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "query": r.URL.RawQuery,
			"active": true, "client_id": in.ClientID, "scope": in.Scope, "username": in.Username})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// countingProxy forwards everything to target and counts the requests
// whose path is path (a token endpoint), so a test can tell whether
// connmgr asked for a token.
type countingProxy struct {
	*httptest.Server
	hits atomic.Int64
}

func newCountingProxy(t testing.TB, target, path string) *countingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("fixture: proxy target %q: %v", target, err)
	}
	p := &countingProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = u.Host
	}}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.TrimSuffix(r.URL.Path, "/") == strings.TrimSuffix(path, "/") {
			p.hits.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Server.Close)
	return p
}
