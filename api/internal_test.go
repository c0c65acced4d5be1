package api

// The tests of internals: the decoders of untrusted input, the cursors and
// problemFor. Everything that goes through HTTP is in package api_test,
// on the server that wire.Build makes.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security"
)

// FuzzCreateBody feeds arbitrary bodies to the create decoder and
// validation: never a panic, and every rejection is a 4xx problem.
func FuzzCreateBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"X","role":"INVOKE","baseUrl":"https://api.example.com","security":{"policy":"NONE"}}`,
		`{"name":"X","role":"INVOKE","baseUrl":"https://a.example.com","security":{"policy":"API_KEY","key":"k","in":"QUERY","name":"k"}}`,
		`{"name":"X","role":"TRIGGER","baseUrl":"http://[::1]:80/x?y=1","timeoutMs":100,"security":{"policy":"OAUTH2_AUTHORIZATION_CODE","authorizationUrl":"https://a.example.com/a","tokenUrl":"https://a.example.com/t","clientId":"c","clientSecret":"s","scopes":["a"],"extraParams":{"x":"y"}}}`,
		`{"name":"X","role":"INVOKE","baseUrl":"https://a.example.com","tls":{"clientCertificatePem":"x","clientKeyPem":"y"},"tokenRejectedStatuses":[401,403],"security":{"policy":"OAUTH2_CLIENT_CREDENTIALS","tokenUrl":"https://a.example.com/t","clientId":"c","clientAuth":"TLS_CLIENT_AUTH"}}`,
		`{"security":null}`, `{"rateLimit":{"requestsPerSecond":1e309}}`, `[`, `{"headers":{"":""}}`,
		`{"security":{"policy":"OAUTH2_AUTHORIZATION_CODE","issuer":"https://a.example.com","requireIss":true,"clientId":"c","clientSecret":"s","scopes":["openid"]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b connectionBody
		err := decodeJSON(bytes.NewReader(body), &b)
		if err == nil {
			var conn *connections.Connection
			if conn, err = b.toConnection(b.Name); err == nil {
				err = conn.Validate()
			}
		}
		if err != nil {
			if p := problemFor(err); p.status < 400 || p.status >= 500 {
				t.Fatalf("body %q: error %v maps to %d", body, err, p.status)
			}
		}
	})
}

// FuzzMergePatch applies arbitrary merge patches to a stored connection:
// never a panic, every rejection a 4xx problem, and a patch never changes
// the name.
func FuzzMergePatch(f *testing.F) {
	for _, s := range []string{`{}`, `{"description":"x"}`, `{"security":{"password":"p"}}`,
		`{"security":{"policy":"API_KEY","key":"k"}}`, `{"security":null}`, `{"name":"Other"}`, `{"timeoutMs":null}`,
		`{"tls":{"clientKeyPem":null}}`, `{"keywords":[1]}`, `{"status":"CONFIGURED","version":9}`} {
		f.Add([]byte(s))
	}
	old := &connections.Connection{ID: 7, Name: "P", Role: connections.RoleInvoke, BaseURL: "https://api.example.com",
		Security: &security.Basic{Username: "u", Password: connections.NewSecret("pw")}, Version: 3,
		Status: connections.StatusDraft}
	f.Fuzz(func(t *testing.T, patch []byte) {
		var p map[string]json.RawMessage
		if decodeJSON(bytes.NewReader(patch), &p) != nil || p == nil {
			return
		}
		c, err := mergeConnection(old, p)
		if err != nil {
			if pe := problemFor(err); pe.status < 400 || pe.status >= 500 {
				t.Fatalf("patch %q: error %v maps to %d", patch, err, pe.status)
			}
			return
		}
		if c.Name != old.Name {
			t.Fatalf("patch %q renamed the connection to %q", patch, c.Name)
		}
	})
}

// ifMatchOf parses header values as If-Match.
func ifMatchOf(values ...string) (connections.Match, error) {
	req := httptest.NewRequest("PUT", "/", nil)
	for _, v := range values {
		req.Header.Add("If-Match", v)
	}
	return ifMatch(&gin.Context{Request: req})
}

// TestIfMatchParse: RFC 9110 §13.1.1 against version 3.
func TestIfMatchParse(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		// cond: "none" (no precondition), "match", "412", "400".
		want string
	}{
		{"absent", nil, "none"},
		{"empty", []string{""}, "none"},
		{"any", []string{"*"}, "none"},
		{"the version", []string{`"3"`}, "match"},
		{"another version", []string{`"2"`}, "412"},
		{"a list with the version", []string{`"1", "3"`}, "match"},
		{"a list without it", []string{`"1","2"`}, "412"},
		{"two fields", []string{`"1"`, `"3"`}, "match"},
		{"empty list elements", []string{`, "1" ,, "3",`}, "match"},
		{"weak tag of the version", []string{`W/"3"`}, "412"},
		{"weak and strong", []string{`W/"3", "3"`}, "match"},
		{"a tag connmgr never issued", []string{`"stale"`}, "412"},
		{"an empty tag", []string{`""`}, "412"},
		{"a tag with a comma", []string{`"a,b", "3"`}, "match"},
		{"leading zero", []string{`"03"`}, "412"},
		{"zero", []string{`"0"`}, "412"},
		{"negative", []string{`"-3"`}, "412"},
		{"huge", []string{`"99999999999999999999"`}, "412"},
		{"unquoted", []string{`3`}, "400"},
		{"unterminated", []string{`"3`}, "400"},
		{"weak without a tag", []string{`W/`}, "400"},
		{"lower-case weak", []string{`w/"3"`}, "400"},
		{"no comma between tags", []string{`"1" "3"`}, "400"},
		{"a space inside", []string{`"3 4"`}, "400"},
		{"a control character inside", []string{"\"3\x01\""}, "400"},
		{"only commas", []string{`,,`}, "400"},
		{"star in a list", []string{`"3", *`}, "400"},
		{"garbage after a tag", []string{`"3"x`}, "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ifMatchOf(tt.values...)
			got := "none"
			switch {
			case err != nil:
				got = "400"
				if p := problemFor(err); p.status != http.StatusBadRequest || p.code != "malformed_request" {
					t.Errorf("error %v maps to %d %s", err, p.status, p.code)
				}
			case m == nil:
			case m(3):
				got = "match"
			default:
				got = "412"
			}
			if got != tt.want {
				t.Errorf("If-Match %q = %s, want %s", tt.values, got, tt.want)
			}
		})
	}
}

// FuzzIfMatch: any header value parses without a panic, and a strong tag
// of the version always matches when it is well-formed.
func FuzzIfMatch(f *testing.F) {
	for _, s := range []string{`"3"`, `W/"3"`, `"1", "2"`, `*`, `,`, `"`, `W/`, "\"\x80\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		m, err := ifMatchOf(v)
		if err != nil || m == nil {
			return
		}
		m2, err := ifMatchOf(v, `"3"`)
		if err != nil || m2 == nil || !m2(3) {
			t.Fatalf("If-Match %q plus \"3\" does not match version 3 (%v)", v, err)
		}
	})
}

// TestCursors: a cursor opens only with the key and kind it was issued
// for.
func TestCursors(t *testing.T) {
	cs := cursors{[]byte("the key")}
	good := cs.encode("connections", "Conn_B")
	if got, err := cs.decode("connections", good); err != nil || got != "Conn_B" {
		t.Fatalf("decode(encode(Conn_B)) = %q, %v", got, err)
	}
	tampered := []byte(good)
	tampered[len(tampered)-1] ^= 1
	tests := []struct{ name, kind, cursor string }{
		{"another kind", "audit", good},
		{"another key", "connections", cursors{[]byte("another key")}.encode("connections", "Conn_B")},
		{"tampered", "connections", string(tampered)},
		{"no signature", "connections", strings.Split(good, ".")[0]},
		{"not base64", "connections", "a!b.c"},
		{"empty", "connections", "."},
		{"too long", "connections", good + strings.Repeat("A", 1024)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := cs.decode(tt.kind, tt.cursor); err == nil {
				t.Errorf("decode(%q, %q) = %q, want an error", tt.kind, tt.cursor, got)
			} else if p := problemFor(err); p.status != 400 || p.code != "invalid_cursor" {
				t.Errorf("decode(%q) error maps to %d %s, want 400 invalid_cursor", tt.cursor, p.status, p.code)
			}
		})
	}
}

func TestOneEncodedPath(t *testing.T) {
	tests := []struct {
		rel  string
		want bool
	}{
		{"", false},
		{"/", false},
		{"/orders", false},
		{"/orders%2F17", true},
		{"/orders%2f17", true},
		{"orders%2F17", true},
		{"/a%5Cb", true},
		{"/a%5cb", true},
		{"/a%2", false},
		{"/%2", false},
		{"/a/b%2Fc", false},
		{"/a%2Fb/", false},
		{"/a%252Fb", false},
		{"/a%20b", false},
	}
	for _, tt := range tests {
		if got := oneEncodedPath(tt.rel); got != tt.want {
			t.Errorf("oneEncodedPath(%q) = %v, want %v", tt.rel, got, tt.want)
		}
	}
}

// TestProblemFor: domain errors, wrapped as services wrap them, map to
// their status and code; an unknown error is a 500 that says nothing of
// its cause.
func TestProblemFor(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("doing something: %w", err) }
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{wrap(connections.ErrNotFound), 404, "connection_not_found"},
		{wrap(connections.ErrExists), 409, "connection_exists"},
		{wrap(connections.ErrVersionMismatch), 412, "precondition_failed"},
		{wrap(connections.ErrUnavailable), 503, "database_unavailable"},
		{wrap(fmt.Errorf("%w: role TRIGGER", connections.ErrNotInvocable)), 403, "connection_not_invocable"},
		{connections.ValidationErrors{{Field: "baseUrl", Reason: "bad"}}, 422, "validation_failed"},
		{wrap(security.ErrNeedsConsent), 409, "consent_required"},
		{wrap(security.ErrConsentStale), 409, "consent_stale"},
		{wrap(security.ErrNoConsent), 409, "not_authorization_code"},
		{wrap(security.ErrNoTokens), 409, "policy_has_no_token"},
		{fmt.Errorf("%w: %w", security.ErrTokenUnavailable, &security.TokenError{Reason: "invalid_client", Permanent: true}), 502, "token_unavailable"},
		{fmt.Errorf("%w: %w", security.ErrTokenUnavailable, &security.TokenError{Reason: "timeout"}), 503, "token_unavailable"},
		{wrap(invoke.ErrLoop), 508, "loop_detected"},
		{wrap(invoke.ErrInvalidRelativeURI), 400, "invalid_relative_uri"},
		{wrap(invoke.ErrTemplate), 422, "template_mismatch"},
		{wrap(invoke.ErrBodyTooLarge), 413, "payload_too_large"},
		{&http.MaxBytesError{Limit: 10}, 413, "payload_too_large"},
		{wrap(outbound.ErrEgressDenied), 403, "egress_denied"},
		{wrap(invoke.ErrUpstreamTimeout), 504, "upstream_timeout"},
		{wrap(invoke.ErrUpstreamUnreachable), 502, "upstream_unreachable"},
		{&invoke.LimitError{Reason: "busy"}, 429, "rate_limited"},
		{wrap(context.Canceled), 499, "client_closed_request"},
		{wrap(access.ErrUnauthenticated), 401, "unauthorized"},
		{wrap(access.ErrKeyNotFound), 404, "api_key_not_found"},
		{errors.New("CANARY-internal detail"), 500, "internal_error"},
	}
	for _, tt := range tests {
		p := problemFor(tt.err)
		if p.status != tt.status || p.code != tt.code {
			t.Errorf("problemFor(%v) = %d %s, want %d %s", tt.err, p.status, p.code, tt.status, tt.code)
		}
		if strings.Contains(p.detail, "CANARY") {
			t.Errorf("problemFor(%v) shows the cause: %q", tt.err, p.detail)
		}
	}
}

// TestProblemForNoConsent: the answer to consent for a policy without a
// consent flow names each policy that has one, and only those.
func TestProblemForNoConsent(t *testing.T) {
	detail := problemFor(security.ErrNoConsent).detail
	for _, name := range security.Policies() {
		_, consent := security.New(name).(connections.ConsentPolicy)
		if named := regexp.MustCompile(`\b` + string(name) + `\b`).MatchString(detail); named != consent {
			t.Errorf("problemFor(ErrNoConsent) = %q: names %s %v, want %v", detail, name, named, consent)
		}
	}
}
