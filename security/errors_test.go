package security_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// hydraInvalidClient is Ory Hydra's error_description when a client
// registered for client_secret_basic sends its secret in the body.
const hydraInvalidClient = "Client authentication failed (e.g., unknown client, no client authentication included, " +
	"or unsupported authentication method). The OAuth 2.0 Client supports client authentication method " +
	"'client_secret_basic', but method 'client_secret_post' was requested. You must configure the OAuth 2.0 " +
	"client's 'token_endpoint_auth_method' value to accept 'client_secret_post'."

// TestProviderErrorReason: what the token endpoint said reaches the
// TokenError, the token's last error and the status reason: the RFC 6749
// error code with a sanitised error_description, or for a bare HTTP error
// its status (#9 item 3).
func TestProviderErrorReason(t *testing.T) {
	// The secret has characters that URL encodings change.
	secret := func(id string) string { return canary + "-s3cr+t/" + id + "=%&" }
	tests := []struct {
		name   string
		status int
		code   string // "" answers a plain-text body
		desc   func(secret string) string
		want   string // the whole reason, when given
		has    []string
		capped bool // the description is longer than 200 characters
	}{
		{name: "Hydra's invalid_client", status: http.StatusUnauthorized, code: "invalid_client",
			desc: func(string) string { return hydraInvalidClient },
			has:  []string{"invalid_client: ", "'client_secret_basic', but method 'client_secret_post' was requested"}},
		{name: "code and description", status: http.StatusBadRequest, code: "invalid_scope",
			desc: func(string) string { return "scope orders.admin is not allowed for this client" },
			want: "invalid_scope: scope orders.admin is not allowed for this client"},
		{name: "code without description", status: http.StatusBadRequest, code: "unauthorized_client",
			desc: func(string) string { return "" }, want: "unauthorized_client"},
		{name: "control characters dropped", status: http.StatusBadRequest, code: "invalid_request",
			desc: func(string) string { return "bad\x00 re\x1bquest\u202e\r\n\tsee\x7f the docs" },
			want: "invalid_request: bad request see the docs"},
		{name: "secret redacted, raw and URL-encoded", status: http.StatusUnauthorized, code: "invalid_client",
			desc: func(s string) string {
				return "raw " + s + " query " + url.QueryEscape(s) + " path " + url.PathEscape(s)
			},
			want: "invalid_client: raw [redacted] query [redacted] path [redacted]"},
		{name: "secret split by control characters", status: http.StatusUnauthorized, code: "invalid_client",
			desc: func(s string) string { return "got " + s[:4] + "\x00" + s[4:9] + "\u200b" + s[9:] },
			want: "invalid_client: got [redacted]"},
		{name: "long description capped at 200 characters", status: http.StatusBadRequest, code: "invalid_request",
			desc: func(string) string { return strings.Repeat("é", 300) }, capped: true},
		{name: "bare HTTP 400", status: http.StatusBadRequest,
			want: "HTTP 400 from the token endpoint, no OAuth error given"},
		{name: "bare HTTP 503", status: http.StatusServiceUnavailable,
			want: "HTTP 503 from the token endpoint, no OAuth error given"},
		{name: "code outside RFC 6749's characters", status: http.StatusBadRequest, code: "invalid request\"<b>",
			desc: func(string) string { return "x" }, want: "HTTP 400 from the token endpoint, no OAuth error given"},
	}
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				id := fmt.Sprintf("reason-%d", i)
				c := clientCredentials(fmt.Sprintf("Conn_Reason_%d", i), ts.URL(), id)
				oauthClient(c).ClientSecret = connections.NewSecret(secret(id))
				c = e.create(c)
				desc := ""
				if tt.desc != nil {
					desc = tt.desc(secret(id))
				}
				ts.script(func(s *tokenServer) {
					s.description = &desc
					s.fail = &tokenFailure{status: tt.status, code: tt.code}
				})
				defer ts.recover()

				_, err := e.m.Token(ctx, c)
				if !errors.Is(e.record(err), security.ErrTokenUnavailable) {
					t.Fatalf("Token() = %v, want ErrTokenUnavailable", err)
				}
				te := tokenErr(t, err)
				reason := te.Reason
				if tt.want != "" && reason != tt.want {
					t.Errorf("TokenError.Reason = %q, want %q", reason, tt.want)
				}
				for _, s := range tt.has {
					if !strings.Contains(reason, s) {
						t.Errorf("TokenError.Reason = %q, want it to contain %q", reason, s)
					}
				}
				if tt.capped {
					d := strings.TrimPrefix(reason, tt.code+": ")
					if n := utf8.RuneCountInString(d); n > 200 || n < 190 || !utf8.ValidString(d) {
						t.Errorf("a description of %d characters is shown with %d (valid UTF-8: %v), want at most 200",
							utf8.RuneCountInString(desc), n, utf8.ValidString(d))
					}
				}
				wantCode := tt.code
				if tt.want == httpReason(tt.status) {
					wantCode = "" // none, or none worth echoing
				}
				if te.OAuthCode != wantCode {
					t.Errorf("TokenError.OAuthCode = %q, want %q", te.OAuthCode, wantCode)
				}
				if te.Status != tt.status {
					t.Errorf("TokenError.Status = %d, want %d", te.Status, tt.status)
				}
				for _, s := range []string{secret(id), url.QueryEscape(secret(id)), url.PathEscape(secret(id)), canary, "BODY"} {
					if strings.Contains(reason, s) {
						t.Errorf("TokenError.Reason = %q holds %q", reason, s)
					}
				}
				info, err := e.m.Info(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				if info.LastError != reason {
					t.Errorf("Info().LastError = %q, want %q", info.LastError, reason)
				}
				if got := e.get(c.Name); got.Status != connections.StatusError || !strings.HasPrefix(got.StatusReason, reason) {
					t.Errorf("status = %s %q, want ERROR with a reason that starts with %q", got.Status, got.StatusReason, reason)
				}
			})
		}
	})
}

// httpReason is the reason of a bare HTTP error.
func httpReason(status int) string {
	return fmt.Sprintf("HTTP %d from the token endpoint, no OAuth error given", status)
}

// TestProviderErrorEchoesSecret: a token endpoint that echoes the client
// secret as its error code, or the Basic credentials it was sent in its
// description (form-encoded, BASIC_HEADER, and raw, BASIC_HEADER_RAW),
// has neither shown: not in the reason, the code, the token's last error
// or the status reason.
func TestProviderErrorEchoesSecret(t *testing.T) {
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		for i, auth := range []security.ClientAuth{security.ClientAuthBasic, security.ClientAuthBasicRaw} {
			t.Run(string(auth), func(t *testing.T) {
				e := e.at(t)
				id := fmt.Sprintf("echo-%d", i)
				secret := canary + "EchoedSecret" + strconv.Itoa(i) // letters and digits: a valid error code
				c := clientCredentials(fmt.Sprintf("Conn_Echo_%d", i), ts.URL(), id)
				oauthClient(c).ClientSecret = connections.NewSecret(secret)
				oauthClient(c).ClientAuth = auth
				c = e.create(c)
				sent := []string{
					base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret))),
					base64.StdEncoding.EncodeToString([]byte(id + ":" + secret)),
				}
				desc := "you sent Basic " + sent[0] + " or " + sent[1]
				ts.script(func(s *tokenServer) {
					s.description = &desc
					s.fail = &tokenFailure{status: http.StatusUnauthorized, code: secret}
				})
				defer ts.recover()

				_, err := e.m.Token(ctx, c)
				te := tokenErr(t, e.record(err))
				info, err := e.m.Info(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				got := e.get(c.Name)
				for what, text := range map[string]string{"TokenError.Reason": te.Reason, "TokenError.OAuthCode": te.OAuthCode,
					"Info().LastError": info.LastError, "StatusReason": got.StatusReason} {
					for _, s := range append([]string{secret, canary}, sent...) {
						if strings.Contains(text, s) {
							t.Errorf("%s = %q holds %q", what, text, s)
						}
					}
				}
				if te.Reason != httpReason(http.StatusUnauthorized) {
					t.Errorf("TokenError.Reason = %q, want %q", te.Reason, httpReason(http.StatusUnauthorized))
				}
			})
		}
	})
}
