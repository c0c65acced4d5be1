package invoke_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/outbound/outboundtest"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// forEngine runs f on each engine storetest.Engines lists.
func forEngine(t *testing.T, f func(t *testing.T, engine storetest.Engine)) {
	for _, e := range storetest.Engines(t) {
		t.Run(string(e), func(t *testing.T) { f(t, e) })
	}
}

// lowerHex writes the hex digits of s's percent-encodings in lower case.
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lower(b[i+1]), lower(b[i+2])
		}
	}
	return string(b)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// TestServeScrubsCredentials checks that no credential comes back to the
// caller in the target's headers (#8.3): the API key's query parameter is
// taken out of the URLs of Location, Content-Location and Link, the rest
// of them kept; any header that holds a credential otherwise, raw or
// encoded, is dropped; harmless headers pass.
func TestServeScrubsCredentials(t *testing.T) {
	s := newStack(t, storetest.SQLite)
	tokens := newTokenEndpoint(t)
	const (
		queryKey  = "qk/" + canary + "+= x"
		headerKey = "hk-" + canary + "/1"
		password  = "pw/" + canary + " +x"
		nameKey   = "nk-" + canary + "-1" // a token, fit for a header name
	)
	enc := url.QueryEscape(queryKey)
	for _, tt := range []struct {
		name     string
		security connections.Security
		// headers are the target's, made from the request it got.
		headers func(r *http.Request) map[string]string
		want    map[string]string // at the caller; "" means dropped
	}{
		{
			name:     "API key in the query: URLs keep the rest",
			security: &security.APIKey{In: security.InQuery, Name: "api_key", Key: connections.NewSecret(queryKey)},
			headers: func(r *http.Request) map[string]string {
				got := url.QueryEscape(r.URL.Query().Get("api_key"))
				return map[string]string{
					"Location":         "/base/x/?api_key=" + got + "&page=2",
					"Content-Location": "https://api.example/base/x?page=1&API_KEY=" + got + "#top",
					"Link": "<https://api.example/x?api_key=" + got + "&page=3>; rel=\"next\", " +
						"<https://api.example/x?page=1&api_key=" + got + ">; rel=\"first\"",
					"Etag": `"v1"`,
				}
			},
			want: map[string]string{
				"Location":         "/base/x/?page=2",
				"Content-Location": "https://api.example/base/x?page=1#top",
				"Link":             `<https://api.example/x?page=3>; rel="next", <https://api.example/x?page=1>; rel="first"`,
				"Etag":             `"v1"`,
			},
		},
		{
			name:     "API key in the query: elsewhere in a header",
			security: &security.APIKey{In: security.InQuery, Name: "api_key", Key: connections.NewSecret(queryKey)},
			headers: func(r *http.Request) map[string]string {
				return map[string]string{
					"Location":         "/login?next=" + url.QueryEscape("/x?api_key="+enc),
					"Content-Location": "/keys/" + url.PathEscape(queryKey),
					"Link":             "</x?k=" + lowerHex(enc) + `>; rel="self"`,
					"Warning":          `199 - "` + url.QueryEscape(enc) + `"`,
					"Content-Type":     "application/json",
				}
			},
			want: map[string]string{"Location": "", "Content-Location": "", "Link": "", "Warning": "",
				"Content-Type": "application/json"},
		},
		{
			name:     "API key in a header",
			security: &security.APIKey{Name: "X-Api-Key", Key: connections.NewSecret(headerKey)},
			headers: func(r *http.Request) map[string]string {
				return map[string]string{
					"Warning":               `199 - "key ` + r.Header.Get("X-Api-Key") + ` is old"`,
					"X-Ratelimit-Remaining": "9",
					"Link":                  `</orders?page=2>; rel="next"`,
					"Location":              "/x?api_key=1",
				}
			},
			want: map[string]string{"Warning": "", "X-Ratelimit-Remaining": "9", "Link": `</orders?page=2>; rel="next"`,
				"Location": "/x?api_key=1"},
		},
		{
			// A RateLimit header's name is the target's to choose too; it
			// reaches the caller canonicalised, in another case.
			name:     "API key in a RateLimit header's name",
			security: &security.APIKey{Name: "X-Api-Key", Key: connections.NewSecret(nameKey)},
			headers: func(r *http.Request) map[string]string {
				return map[string]string{
					"X-Ratelimit-" + r.Header.Get("X-Api-Key"): "1",
					"Ratelimit-" + r.Header.Get("X-Api-Key"):   "2",
					"X-Ratelimit-Limit":                        "10",
				}
			},
			want: map[string]string{"X-Ratelimit-" + nameKey: "", "Ratelimit-" + nameKey: "", "X-Ratelimit-Limit": "10"},
		},
		{
			name:     "Basic password",
			security: &security.Basic{Username: "user", Password: connections.NewSecret(password)},
			headers: func(r *http.Request) map[string]string {
				_, pass, _ := r.BasicAuth()
				return map[string]string{
					"Content-Location": "/users/user/" + url.PathEscape(pass),
					"Warning":          `199 - "` + url.QueryEscape(pass) + `"`,
					"Cache-Control":    "no-store",
				}
			},
			want: map[string]string{"Content-Location": "", "Warning": "", "Cache-Control": "no-store"},
		},
		{
			name: "OAuth tokens and client secret",
			security: &security.ClientCredentials{Client: security.Client{TokenURL: tokens.URL, ClientID: "scrub",
				ClientSecret: connections.NewSecret(clientSecret)}},
			headers: func(r *http.Request) map[string]string {
				tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
				return map[string]string{
					"Etag":               `"` + tok + `"`,
					"Link":               "<https://api.example/x?access_token=" + url.QueryEscape(tok) + `>; rel="self"`,
					"Content-Location":   "/t/" + url.PathEscape(refreshToken(tokens.requests.Load())),
					"X-Ratelimit-Policy": "10;w=1;c=" + clientSecret,
					"Location":           "/next",
				}
			},
			want: map[string]string{"Etag": "", "Link": "", "Content-Location": "", "X-Ratelimit-Policy": "",
				"Location": "/next"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.headers(r) {
					w.Header().Set(k, v)
				}
				w.WriteHeader(http.StatusFound)
			})
			c := s.create(t, &connections.Connection{Name: "Conn_Scrub", Role: connections.RoleInvoke,
				BaseURL: up.URL + "/base", Security: tt.security})
			t.Cleanup(func() { s.svc.Delete(context.Background(), "test", c.Name, nil) })
			rec, err := s.serve(getCall(c, "x"))
			if err != nil || rec.Code != http.StatusFound {
				t.Fatalf("Serve(%s) = %d, %v; want the target's 302", tt.name, rec.Code, err)
			}
			if n := len(up.requests()); n != 1 {
				t.Fatalf("upstream got %d requests, want 1", n)
			}
			for k, want := range tt.want {
				if got := strings.Join(rec.Header().Values(k), ", "); got != want {
					t.Errorf("Serve(%s) header %s = %q, want %q", tt.name, k, got, want)
				}
			}
			// Every credential holds the canary, which percent-encoding
			// leaves as it is.
			for k, vs := range rec.Header() {
				if strings.Contains(strings.ToLower(k), canary) {
					t.Errorf("Serve(%s) header name %s holds a credential", tt.name, k)
				}
				for _, v := range vs {
					if strings.Contains(v, canary) {
						t.Errorf("Serve(%s) header %s = %q holds a credential", tt.name, k, v)
					}
				}
			}
		})
	}
}

// TestServeRejectCooldown checks that a target that rejects every token
// cannot make connmgr ask the token endpoint more than once per
// cool-down (#8.9), through the proxy and the real token manager: the
// first rejection drops the token and the call is retried with a new one;
// later ones within the cool-down are passed on.
func TestServeRejectCooldown(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		for _, tt := range []struct {
			name       string
			concurrent bool
			rounds     int // of 20 calls, the clock moved past the cool-down between them
			min, max   int64
		}{
			{name: "20 calls in turn", rounds: 1, min: 1, max: 2},
			{name: "20 calls at once", concurrent: true, rounds: 1, min: 1, max: 2},
			{name: "a round after the cool-down", rounds: 2, min: 3, max: 4},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s := newStack(t, engine)
				tokens := newTokenEndpoint(t)
				up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusUnauthorized)
				})
				c := s.create(t, oauthConn("Conn_Rejects", up.URL, tokens.URL))
				for round := range tt.rounds {
					if round > 0 {
						s.clock.Advance(11 * time.Second) // the default cool-down is 10s
					}
					var wg sync.WaitGroup
					for range 20 {
						call := func() {
							rec, err := s.serve(getCall(c, "orders"))
							if err != nil || rec.Code != http.StatusUnauthorized {
								t.Errorf("Serve() = %d, %v; want the target's 401", rec.Code, err)
							}
						}
						if tt.concurrent {
							wg.Go(call)
						} else {
							call()
						}
					}
					wg.Wait()
				}
				if n := tokens.requests.Load(); n < tt.min || n > tt.max {
					t.Errorf("%d rounds of 20 rejected calls made %d token requests, want %d to %d", tt.rounds, n, tt.min, tt.max)
				}
			})
		}
	})
}

// TestServeRejectedStatuses checks the connection's tokenRejectedStatuses
// through the real token manager (#9.6): a listed 403 drops the token and
// the call goes again with a new one, its body replayed; by default a 403
// is the target's answer like any other.
func TestServeRejectedStatuses(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		for _, tt := range []struct {
			name     string
			rejects  []int
			want     int // status to the caller
			requests int // upstream
			tokens   int64
		}{
			{name: "403 listed", rejects: []int{401, 403}, want: http.StatusOK, requests: 2, tokens: 2},
			{name: "default", want: http.StatusForbidden, requests: 1, tokens: 1},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s := newStack(t, engine)
				tokens := newTokenEndpoint(t)
				// The target takes only tokens after the first, as a target
				// that revoked the first would.
				up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					if r.Header.Get("Authorization") == "Bearer "+accessToken(1) {
						w.WriteHeader(http.StatusForbidden)
					}
				})
				c := oauthConn("Conn_Fabric", up.URL, tokens.URL)
				c.RejectedStatuses = tt.rejects
				c = s.create(t, c)
				call := getCall(c, "items")
				call.Method = http.MethodPost
				call.Body, call.ContentLength = body(`{"item":1}`)
				rec, err := s.serve(call)
				if err != nil || rec.Code != tt.want {
					t.Errorf("Serve(%s) = %d, %v; want %d", tt.name, rec.Code, err, tt.want)
				}
				reqs := up.requests()
				if len(reqs) != tt.requests {
					t.Fatalf("upstream got %d requests, want %d", len(reqs), tt.requests)
				}
				for i, r := range reqs {
					if r.body != `{"item":1}` {
						t.Errorf("request %d body = %q, want the call's", i, r.body)
					}
				}
				if n := tokens.requests.Load(); n != tt.tokens {
					t.Errorf("token requests = %d, want %d", n, tt.tokens)
				}
			})
		}
	})
}

// TestServeWarmMakesNoQueries checks that once a token is cached, calls
// through the proxy read nothing from the database (#10.5), for a token
// policy and a static one.
func TestServeWarmMakesNoQueries(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		s := newStack(t, engine)
		tokens := newTokenEndpoint(t)
		up := newUpstream(t, nil)
		conns := []*connections.Connection{
			s.create(t, oauthConn("Conn_Warm_OAuth", up.URL, tokens.URL)),
			s.create(t, &connections.Connection{Name: "Conn_Warm_Key", Role: connections.RoleInvoke, BaseURL: up.URL,
				Security: &security.APIKey{Key: connections.NewSecret("key-" + canary)}}),
		}
		for _, c := range conns { // warm: the token is obtained and cached
			if rec, err := s.serve(getCall(c, "x")); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("Serve(%s) = %d, %v; want 200", c.Name, rec.Code, err)
			}
		}
		queries := countQueries(t, s.db.DB)
		for range 20 {
			for _, c := range conns {
				if rec, err := s.serve(getCall(c, "x")); err != nil || rec.Code != http.StatusOK {
					t.Fatalf("Serve(%s) = %d, %v; want 200", c.Name, rec.Code, err)
				}
			}
		}
		if n := queries.Load(); n != 0 {
			t.Errorf("40 warm calls made %d database queries, want 0", n)
		}
		if n := tokens.requests.Load(); n != 1 {
			t.Errorf("token requests = %d, want 1", n)
		}
		s.get(t, "Conn_Warm_Key")
		if queries.Load() == 0 {
			t.Error("the query counter counts nothing")
		}
	})
}

// TestTesterEndToEnd tests connections with the real token manager and
// store (#9.1): a test obtains the token and calls the target with it,
// and the outcome is the connection's stored status, reason and last
// test, none of which holds a credential or a body.
func TestTesterEndToEnd(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/missing") {
				w.WriteHeader(http.StatusNotFound)
			}
			w.Write([]byte("body " + canary))
		})
		dead := "http://" + outboundtest.ClosedPort(t) + "/api"
		for _, tt := range []struct {
			name    string
			base    string
			request *connections.TestRequest
			refuse  bool // the token endpoint refuses the client
			result  string
			steps   []step
			status  connections.Status
			sent    int // requests the target got
		}{
			{name: "dead base URL", base: dead, result: connections.TestFailure,
				steps: []step{tokenOK, reqFail("GET /api: connection refused")}, status: connections.StatusError},
			{name: "dead base URL with a test request", base: dead, request: &connections.TestRequest{RelativeURI: "/health"},
				result: connections.TestFailure, steps: []step{tokenOK, reqFail("GET /api/health: connection refused")},
				status: connections.StatusError},
			{name: "token refused", base: up.URL, refuse: true, result: connections.TestFailure,
				steps:  []step{{invoke.StepToken, connections.TestFailure, "invalid_client: client authentication failed for [redacted]"}, reqSkipped},
				status: connections.StatusError},
			{name: "probe answered 404", base: up.URL + "/missing", result: connections.TestSuccess,
				steps:  []step{tokenOK, reqOK("GET /missing: HTTP 404 (reachable; set testRequest to check an answer)")},
				status: connections.StatusConfigured, sent: 1},
			{name: "test request answered 404", base: up.URL, request: &connections.TestRequest{RelativeURI: "/v1/missing"},
				result: connections.TestFailure, steps: []step{tokenOK, reqFail("GET /v1/missing: HTTP 404 from the target")},
				status: connections.StatusError, sent: 1},
			{name: "test request answered 200", base: up.URL, request: &connections.TestRequest{RelativeURI: "/v1/health"},
				result: connections.TestSuccess, steps: []step{tokenOK, reqOK("GET /v1/health: HTTP 200")},
				status: connections.StatusConfigured, sent: 1},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s := newStack(t, engine)
				tokens := newTokenEndpoint(t)
				if tt.refuse {
					tokens.failWith(func(w http.ResponseWriter) {
						w.Header().Set("Content-Type", "application/json")
						w.WriteHeader(http.StatusUnauthorized)
						w.Write([]byte(`{"error":"invalid_client","error_description":"client authentication failed for ` +
							clientSecret + `"}`))
					})
				}
				before := len(up.requests())
				c := oauthConn("Conn_Tested", tt.base, tokens.URL)
				c.TestRequest = tt.request
				c = s.create(t, c)
				got, err := s.tester.Test(t.Context(), c)
				if err != nil {
					t.Fatalf("Test(%s) error = %v", tt.name, err)
				}
				if got.Result != tt.result || fmt.Sprint(steps(got)) != fmt.Sprint(tt.steps) {
					t.Errorf("Test(%s) = %s %q, want %s %q", tt.name, got.Result, steps(got), tt.result, tt.steps)
				}
				stored := s.get(t, c.Name)
				wantReason := ""
				if tt.status != connections.StatusConfigured {
					wantReason = "test failed at " + got.Detail
				}
				if stored.Status != tt.status || stored.StatusReason != wantReason {
					t.Errorf("after Test(%s) the connection is %s %q, want %s %q", tt.name, stored.Status,
						stored.StatusReason, tt.status, wantReason)
				}
				if stored.LastTest == nil || fmt.Sprint(steps(stored.LastTest)) != fmt.Sprint(tt.steps) {
					t.Errorf("after Test(%s) the stored last test = %+v, want the steps %q", tt.name, stored.LastTest, tt.steps)
				}
				for _, text := range []string{got.Detail, stored.StatusReason, fmt.Sprint(steps(got))} {
					if strings.Contains(text, canary) {
						t.Errorf("Test(%s) detail or reason %q holds a credential or a body", tt.name, text)
					}
				}
				sent := up.requests()[before:]
				if len(sent) != tt.sent {
					t.Fatalf("the target got %d requests, want %d", len(sent), tt.sent)
				}
				for _, r := range sent {
					if r.header.Get("Authorization") != "Bearer "+accessToken(tokens.requests.Load()) {
						t.Errorf("the test request carried Authorization %q, want the fresh token", r.header.Get("Authorization"))
					}
				}
			})
		}
	})
}
