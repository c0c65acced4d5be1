package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/console"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// session is a signed-in client: the cookie and the CSRF token.
type session struct {
	cookie *http.Cookie
	csrf   string
}

// signIn posts key to /console/session as the console's page does.
func (s *server) signIn(key string) *session {
	s.t.Helper()
	var body struct {
		CSRFToken string `json:"csrfToken"`
	}
	res := s.send("POST", "/console/session", url.Values{"key": {key}}, &body, "Origin", s.BrowserURL,
		"Sec-Fetch-Site", "same-origin", "Accept", "application/json")
	if res.StatusCode != http.StatusOK {
		s.t.Fatalf("sign in = %d, want 200", res.StatusCode)
	}
	for _, c := range res.Cookies() {
		if c.Name == "connmgr_session" {
			return &session{cookie: c, csrf: body.CSRFToken}
		}
	}
	s.t.Fatal("sign in set no connmgr_session cookie")
	return nil
}

// as sends a request with the session, as the console's page does
// (same-origin, with the CSRF token), unless header overrides that.
func (s *server) as(ss *session, method, path string, body, out any, header ...string) int {
	s.t.Helper()
	h := []string{"Cookie", ss.cookie.Name + "=" + ss.cookie.Value, "Origin", s.BrowserURL, "Sec-Fetch-Site", "same-origin",
		"X-CSRF-Token", ss.csrf}
	return s.send(method, path, body, out, append(h, header...)...).StatusCode
}

func (s *server) newConn(name string) map[string]any {
	return map[string]any{"name": name, "role": "INVOKE", "baseUrl": "https://api.example.com",
		"security": map[string]any{"policy": "BASIC", "username": "u", "password": "pw-" + name}}
}

// TestSessions holds the console's sessions to their rules on both
// engines: the cookie's attributes, the CSRF token and origin checks on
// every change, sign-out on the server, the idle and absolute ends, a
// revoked or expired key, the admin token, and the invoke routes, which
// take no session.
func TestSessions(t *testing.T) {
	t.Parallel()
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			s := newServer(t, engine)
			ctx := context.Background()

			t.Run("cookie", func(t *testing.T) {
				res := s.send("POST", "/console/session", url.Values{"key": {s.admin}}, nil, "Origin", s.BrowserURL,
					"Accept", "application/json")
				set := res.Header.Get("Set-Cookie")
				for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
					if !strings.Contains(set, want) {
						t.Errorf("Set-Cookie = %q, want %s", set, want)
					}
				}
				if strings.Contains(set, "Secure") || strings.Contains(set, "Max-Age") || strings.Contains(set, "Expires") {
					t.Errorf("Set-Cookie = %q, want no Secure on http, and a browser-session cookie", set)
				}
				if strings.Contains(res.Header.Get("Set-Cookie"), s.admin) {
					t.Error("the cookie holds the API key")
				}
				value := res.Cookies()[0].Value
				for _, row := range storetest.TableText(t, s.db.DB, "console_sessions") {
					if strings.Contains(row, value) {
						t.Errorf("console_sessions holds the session id itself: %q", row)
					}
				}
				if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
					t.Errorf("CSP = %q", csp)
				}
			})

			ss := s.signIn(s.admin)
			cases := []struct {
				name   string
				method string
				path   string
				header []string
				want   int
			}{
				{name: "read with the session", method: "GET", path: "/api/v1/connections", want: 200},
				{name: "read needs no CSRF token", method: "GET", path: "/api/v1/connections", header: []string{"X-CSRF-Token", ""}, want: 200},
				{name: "change with the token", method: "POST", path: "/api/v1/connections", want: 201},
				{name: "change without the token", method: "POST", path: "/api/v1/connections", header: []string{"X-CSRF-Token", ""}, want: 403},
				{name: "change with a forged token", method: "POST", path: "/api/v1/connections",
					header: []string{"X-CSRF-Token", strings.Repeat("0", 64)}, want: 403},
				{name: "change from another origin", method: "POST", path: "/api/v1/connections",
					header: []string{"Origin", "https://evil.example", "Sec-Fetch-Site", ""}, want: 403},
				{name: "change marked cross-site", method: "POST", path: "/api/v1/connections",
					header: []string{"Sec-Fetch-Site", "cross-site", "Origin", ""}, want: 403},
				{name: "change from nowhere", method: "POST", path: "/api/v1/connections",
					header: []string{"Sec-Fetch-Site", "", "Origin", ""}, want: 403},
				{name: "invoke takes no session", method: "POST", path: "/api/v1/connections/Conn_Created_1/invoke", want: 401},
				{name: "transparent invoke takes no session", method: "GET", path: "/invoke/Conn_Created_1/x", want: 401},
				{name: "a bad cookie", method: "GET", path: "/api/v1/connections", header: []string{"Cookie", "connmgr_session=nope"}, want: 401},
			}
			n := 0
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					var body any
					if c.method == "POST" && !strings.HasSuffix(c.path, "invoke") {
						n++
						body = s.newConn("Conn_Created_" + string(rune('0'+n)))
					}
					if got := s.as(ss, c.method, c.path, body, nil, c.header...); got != c.want {
						t.Errorf("%s %s = %d, want %d", c.method, c.path, got, c.want)
					}
				})
			}
			var list struct{ Items []map[string]any }
			s.call("GET", "/api/v1/connections", nil, &list)
			if len(list.Items) != 1 || list.Items[0]["createdBy"] != "console-admin" {
				t.Errorf("connections after the cases = %v, want only the one made with the token, by the session's key", list.Items)
			}

			t.Run("cross-site form post", func(t *testing.T) {
				// A plain HTML form on another site posting to the API and to
				// sign-in: no custom header can be set, the Origin is theirs.
				form := url.Values{"name": {"Conn_Forged"}, "role": {"INVOKE"}}
				res := s.send("POST", "/api/v1/connections", form, nil, "Cookie", ss.cookie.Name+"="+ss.cookie.Value,
					"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
				if res.StatusCode != http.StatusForbidden {
					t.Errorf("cross-site form post to the API = %d, want 403", res.StatusCode)
				}
				res = s.send("POST", "/console/session", url.Values{"key": {s.admin}}, nil, "Origin", "https://evil.example",
					"Sec-Fetch-Site", "cross-site")
				if res.StatusCode != http.StatusForbidden || res.Header.Get("Set-Cookie") != "" {
					t.Errorf("cross-site sign-in = %d (cookie %q), want 403 and no cookie", res.StatusCode, res.Header.Get("Set-Cookie"))
				}
			})

			t.Run("the key never in a URL", func(t *testing.T) {
				res := s.send("POST", "/console/session?key="+url.QueryEscape(s.admin), url.Values{}, nil, "Origin", s.BrowserURL)
				if res.StatusCode != http.StatusUnauthorized {
					t.Errorf("sign-in with the key in the query = %d, want 401 (the query is not read)", res.StatusCode)
				}
				res = s.send("POST", "/console/session", map[string]string{"key": s.admin}, nil, "Origin", s.BrowserURL)
				if res.StatusCode != http.StatusUnsupportedMediaType {
					t.Errorf("sign-in with JSON = %d, want 415", res.StatusCode)
				}
			})

			t.Run("sign-out ends the session on the server", func(t *testing.T) {
				other := s.signIn(s.admin)
				if got := s.as(other, "DELETE", "/console/session", nil, nil, "X-CSRF-Token", "forged"); got != http.StatusForbidden {
					t.Errorf("sign-out with a forged token = %d, want 403", got)
				}
				if got := s.as(other, "DELETE", "/console/session", nil, nil); got != http.StatusNoContent {
					t.Errorf("sign-out = %d, want 204", got)
				}
				if got := s.as(other, "GET", "/api/v1/connections", nil, nil); got != http.StatusUnauthorized {
					t.Errorf("the cookie after sign-out = %d, want 401", got)
				}
				if got := s.as(ss, "GET", "/api/v1/connections", nil, nil); got != http.StatusOK {
					t.Errorf("another session after this sign-out = %d, want 200", got)
				}
			})

			t.Run("idle and absolute ends", func(t *testing.T) {
				idle := s.signIn(s.admin)
				s.clock.advance(59 * time.Minute)
				if got := s.as(idle, "GET", "/console/session", nil, nil); got != http.StatusOK {
					t.Errorf("after 59 idle minutes = %d, want 200", got)
				}
				s.clock.advance(61 * time.Minute)
				if got := s.as(idle, "GET", "/api/v1/connections", nil, nil); got != http.StatusUnauthorized {
					t.Errorf("after 61 idle minutes = %d, want 401", got)
				}
				busy := s.signIn(s.admin)
				for i := 0; i < 10; i++ {
					s.clock.advance(50 * time.Minute)
					want := http.StatusOK
					if i == 9 { // 8 h 20 min after sign-in: past its 8 h
						want = http.StatusUnauthorized
					}
					if got := s.as(busy, "GET", "/api/v1/connections", nil, nil); got != want {
						t.Errorf("%v after sign-in, used every 50 min = %d, want %d", time.Duration(i+1)*50*time.Minute, got, want)
					}
				}
			})

			t.Run("revoked and expired keys end their sessions", func(t *testing.T) {
				k, secret, err := s.g.Keys.Create(ctx, access.NewKey{Name: "dev", Role: access.RoleDeveloper})
				if err != nil {
					t.Fatal(err)
				}
				dev := s.signIn(secret)
				if got := s.as(dev, "GET", "/api/v1/connections", nil, nil); got != http.StatusOK {
					t.Fatalf("developer session = %d", got)
				}
				if _, err := s.g.Keys.Revoke(ctx, k.ID); err != nil {
					t.Fatal(err)
				}
				if got := s.as(dev, "GET", "/api/v1/connections", nil, nil); got != http.StatusUnauthorized {
					t.Errorf("session of a revoked key = %d, want 401 at once", got)
				}
				exp := s.clock.Now().Add(10 * time.Minute)
				_, secret, err = s.g.Keys.Create(ctx, access.NewKey{Name: "short", Role: access.RoleViewer, ExpiresAt: &exp})
				if err != nil {
					t.Fatal(err)
				}
				short := s.signIn(secret)
				s.clock.advance(11 * time.Minute)
				if got := s.as(short, "GET", "/console/session", nil, nil); got != http.StatusUnauthorized {
					t.Errorf("session of an expired key = %d, want 401", got)
				}
			})

			t.Run("roles", func(t *testing.T) {
				s.call("POST", "/api/v1/connections", s.newConn("Conn_REST_Orders_One"), nil)
				viewer := s.signIn(s.key("viewer", access.RoleViewer))
				invoker := s.signIn(s.key("inv", access.RoleInvoker, "Conn_REST_Orders_*"))
				for _, c := range []struct {
					name   string
					ss     *session
					method string
					path   string
					want   int
				}{
					{"viewer reads", viewer, "GET", "/api/v1/connections/Conn_REST_Orders_One", 200},
					{"viewer may not change", viewer, "DELETE", "/api/v1/connections/Conn_REST_Orders_One", 403},
					{"viewer may not see keys", viewer, "GET", "/api/v1/apikeys", 403},
					{"invoker may not read", invoker, "GET", "/api/v1/connections/Conn_REST_Orders_One", 403},
					{"invoker sees no other connection", invoker, "GET", "/api/v1/connections/Conn_Created_1", 404},
					{"invoker lists nothing", invoker, "GET", "/api/v1/connections", 403},
				} {
					if got := s.as(c.ss, c.method, c.path, nil, nil); got != c.want {
						t.Errorf("%s: %s %s = %d, want %d", c.name, c.method, c.path, got, c.want)
					}
				}
				var body struct {
					Permissions []string
					Key         struct{ Connections []string }
				}
				s.as(invoker, "GET", "/console/session", nil, &body)
				if strings.Join(body.Permissions, ",") != "invoke" || strings.Join(body.Key.Connections, ",") != "Conn_REST_Orders_*" {
					t.Errorf("invoker session = %+v, want permission invoke and its pattern", body)
				}
			})
		})
	}
}

// TestSessionsAdminToken: a session signed in with CONNMGR_ADMIN_TOKEN
// (no stored key) works, and ends when the token is changed.
func TestSessionsAdminToken(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, storetest.SQLite)
	ring := storetest.KeyRing(t)
	token := strings.Repeat("a", 40)
	s := serverWith(t, db, ring, token)
	ss := s.signIn(token)
	if got := s.as(ss, "POST", "/api/v1/connections", s.newConn("Conn_By_Token"), nil); got != http.StatusCreated {
		t.Fatalf("create with the admin token's session = %d, want 201", got)
	}
	changed := serverWith(t, db, ring, strings.Repeat("b", 40))
	if got := changed.as(ss, "GET", "/api/v1/connections", nil, nil); got != http.StatusUnauthorized {
		t.Errorf("the session once CONNMGR_ADMIN_TOKEN changed = %d, want 401", got)
	}
	if got := serverWith(t, db, ring, "").as(ss, "GET", "/api/v1/connections", nil, nil); got != http.StatusUnauthorized {
		t.Errorf("the session once CONNMGR_ADMIN_TOKEN is unset = %d, want 401", got)
	}
	if got := s.as(ss, "GET", "/api/v1/connections", nil, nil); got != http.StatusOK {
		t.Errorf("the session where the token is still configured = %d, want 200", got)
	}
}

// TestSessionsReplicas: on PostgreSQL, replicas share sessions: a browser
// signed in on one is served by another, and a sign-out or a revocation
// on one ends the session on all at once.
func TestSessionsReplicas(t *testing.T) {
	t.Parallel()
	storetest.RequirePostgres(t)
	ring := storetest.KeyRing(t)
	dbURL := storetest.CreatePostgres(t)
	a := serverOn(t, openPostgres(t, dbURL), ring)
	b := serverOn(t, openPostgres(t, dbURL), ring)
	_, secret, err := a.g.Keys.Create(context.Background(), access.NewKey{Name: "ops", Role: access.RoleDeveloper})
	if err != nil {
		t.Fatal(err)
	}
	ss := a.signIn(secret)
	if got := b.as(ss, "POST", "/api/v1/connections", b.newConn("Conn_On_B"), nil); got != http.StatusCreated {
		t.Fatalf("create on replica b with a session of replica a = %d, want 201", got)
	}
	if got := b.as(ss, "DELETE", "/console/session", nil, nil); got != http.StatusNoContent {
		t.Fatalf("sign out on b = %d", got)
	}
	if got := a.as(ss, "GET", "/api/v1/connections", nil, nil); got != http.StatusUnauthorized {
		t.Errorf("on a after sign-out on b = %d, want 401", got)
	}
	ss = b.signIn(secret)
	a.revoke("ops")
	// b caches keys, but a session's key is read with the session, from
	// the database: no wait for LISTEN/NOTIFY.
	if got := b.as(ss, "GET", "/api/v1/connections", nil, nil); got != http.StatusUnauthorized {
		t.Errorf("on b right after the key was revoked on a = %d, want 401", got)
	}
}

// TestSecureCookie: behind an https public URL the cookie is Secure and
// carries the __Host- prefix (no Domain, Path=/), and an Origin of that
// URL may sign in.
func TestSecureCookie(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, storetest.SQLite)
	keys := access.NewKeys(store.NewAPIKeys(db))
	_, key, err := keys.Create(context.Background(), access.NewKey{Name: "tls-admin", Role: access.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := access.NewSessions(access.SessionConfig{Keys: keys, Store: store.NewSessions(db),
		PublicURL: "https://connmgr.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := console.New(console.Config{Sessions: sessions, OpenAPI: connmgr.OpenAPI})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/console/session", strings.NewReader(url.Values{"key": {key}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://connmgr.example.com")
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	set := rec.Header().Get("Set-Cookie")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(set, "__Host-connmgr_session=") ||
		!strings.Contains(set, "; Secure") || strings.Contains(set, "Domain") {
		t.Errorf("sign-in behind https = %d, Set-Cookie %q; want 303 and a Secure __Host- cookie", rec.Code, set)
	}
	if got := rec.Header().Get("Location"); got != "/console/" {
		t.Errorf("a plain form sign-in goes to %q, want /console/", got)
	}
	if rec.Header().Get("Cross-Origin-Opener-Policy") != "same-origin" {
		t.Errorf("COOP behind https = %q, want same-origin", rec.Header().Get("Cross-Origin-Opener-Policy"))
	}
}
