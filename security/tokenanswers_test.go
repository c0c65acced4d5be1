package security_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// TestOddTokenAnswers: answers of a token endpoint that are 200 but no
// usable token fail with a reason that says what the endpoint said or
// what is wrong, for the standard policies and the custom flows: an OAuth
// error in a 200 (GitHub's form-encoded or JSON answer), an answer larger
// than the 1 MiB read, and a token or token type that cannot go in a
// header (CR, LF), which is never stored to fail every call after.
func TestOddTokenAnswers(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	var answer struct{ contentType, body string }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", answer.contentType)
		fmt.Fprint(w, answer.body)
	}))
	t.Cleanup(srv.Close)
	const form, js = "application/x-www-form-urlencoded; charset=utf-8", "application/json"
	big := `{"access_token":"` + canary + `-big","pad":"` + strings.Repeat("x", 1<<20) + `"}`
	tests := []struct {
		name, contentType, body string
		reason                  string
		custom                  bool // the custom flow reads it too
	}{
		{name: "OAuth error in a form-encoded 200", contentType: form, custom: true,
			body:   "error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.&error_uri=https%3A%2F%2Fdocs.github.com",
			reason: "bad_verification_code: The code passed is incorrect or expired."},
		{name: "OAuth error in a JSON 200", contentType: js, custom: true,
			body:   `{"error":"invalid_grant","error_description":"bad ` + canary + `-secret-odd-1 given"}`,
			reason: "invalid_grant: bad [redacted] given"},
		{name: "answer over 1 MiB", contentType: js, body: big, reason: "larger than 1 MiB", custom: true},
		{name: "access token with CR LF", contentType: js, body: `{"access_token":"` + canary + `-a\r\nX-Evil: 1","expires_in":60}`,
			reason: "access_token cannot be sent in a header", custom: true},
		{name: "token type with CR LF", contentType: js, body: `{"access_token":"` + canary + `-a","token_type":"Bearer\r\nX-Evil: 1"}`,
			reason: "token_type"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.at(t)
			answer.contentType, answer.body = tt.contentType, tt.body
			conns := []*connections.Connection{clientCredentials(fmt.Sprintf("Conn_Odd_%d", i), srv.URL+"/token", fmt.Sprintf("odd-%d", i))}
			if tt.custom {
				conns = append(conns, twoLegged(fmt.Sprintf("Conn_Odd_Custom_%d", i), security.CustomFlow{
					TokenRequest: security.RequestTemplate{URL: srv.URL + "/token", Body: "secret=${secrets.s}"}},
					map[string]string{"s": canary + "-secret-odd-1"}))
			}
			for _, c := range conns {
				c = e.create(c)
				_, err := e.m.Token(context.Background(), c)
				if err == nil {
					t.Fatalf("%s: Token() = nil error, want one saying %q", c.Name, tt.reason)
				}
				if te := tokenErr(t, e.record(err)); !strings.Contains(te.Reason, tt.reason) || !te.Permanent {
					t.Errorf("%s: TokenError = %+v, want a permanent one saying %q", c.Name, te, tt.reason)
				}
				if st := e.stored(c); st.Token != nil {
					t.Errorf("%s: a token was stored", c.Name)
				}
			}
		})
	}
}

// TestJSONTokenAnswerLabelledText: a JSON token answer sent as text/plain
// (or text/html) is read as JSON, as the custom flows read it; a
// form-encoded one as text/plain is still read as a form.
func TestJSONTokenAnswerLabelledText(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	var answer struct{ contentType, body string }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", answer.contentType)
		fmt.Fprint(w, answer.body)
	}))
	t.Cleanup(srv.Close)
	for i, tt := range []struct{ contentType, body string }{
		{"text/plain; charset=utf-8", "\n {\"access_token\":\"" + canary + "-text\",\"expires_in\":120,\"token_type\":\"bearer\"}"},
		{"text/html", `{"access_token":"` + canary + `-html","expires_in":"120"}`},
		{"text/plain", "access_token=" + canary + "-form&expires_in=120"},
	} {
		t.Run(tt.contentType, func(t *testing.T) {
			e := e.at(t)
			answer.contentType, answer.body = tt.contentType, tt.body
			c := e.create(clientCredentials(fmt.Sprintf("Conn_Text_%d", i), srv.URL+"/token", fmt.Sprintf("text-%d", i)))
			tok, err := e.m.Token(context.Background(), c)
			if e.record(err) != nil {
				t.Fatalf("Token() = %v", err)
			}
			if !strings.HasPrefix(tok.AccessToken.Reveal(), canary) || tok.Lifetime() != 2*time.Minute {
				t.Errorf("token lifetime %v, want the answer's token for 2m", tok.Lifetime())
			}
		})
	}
}

// TestTokenAnswerFieldTypes: a JSON token answer whose fields have other
// types than RFC 6749 gives them fails for what it is, never as a
// transient network failure: an access_token that is not a string is a
// permanent failure that says so; a refresh_token, token_type or error
// field that is not one is ignored, so the access token is still used.
func TestTokenAnswerFieldTypes(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	for i, tt := range []struct {
		name, body, reason string
	}{
		{"access_token a number", `{"access_token":12345,"expires_in":60}`, "access_token is not a string"},
		{"access_token an object", `{"access_token":{"v":"` + canary + `"},"expires_in":60}`, "access_token is not a string"},
		{"refresh_token a number", `{"access_token":"` + canary + `-a","refresh_token":5,"expires_in":60}`, ""},
		{"token_type a number, scope a list", `{"access_token":"` + canary + `-a","token_type":7,"scope":["a","b"],"expires_in":60}`, ""},
		{"error fields of other types", `{"access_token":"` + canary + `-a","error":null,"error_description":{"x":1},"error_uri":3,"expires_in":60}`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := e.at(t)
			body = tt.body
			c := e.create(clientCredentials(fmt.Sprintf("Conn_Types_%d", i), srv.URL+"/token", fmt.Sprintf("types-%d", i)))
			tok, err := e.m.Token(context.Background(), c)
			e.record(err)
			if tt.reason != "" {
				if te := tokenErr(t, err); !strings.Contains(te.Reason, tt.reason) || !te.Permanent {
					t.Errorf("TokenError = %+v, want a permanent one saying %q", te, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Token() = %v, want the access token", err)
			}
			if tok.AccessToken.Reveal() != canary+"-a" || tok.RefreshToken.IsSet() || tok.Lifetime() != time.Minute {
				t.Errorf("token %+v, want the access token for 1m without a refresh token", tok)
			}
		})
	}
}
