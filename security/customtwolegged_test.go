package security_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// twoLegged returns a custom two-legged connection.
func twoLegged(name string, flow security.CustomFlow, secrets map[string]string) *connections.Connection {
	s := map[string]connections.Secret{}
	for k, v := range secrets {
		s[k] = connections.NewSecret(v)
	}
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: &security.CustomTwoLegged{CustomFlow: flow, Secrets: s}}
}

// validationErrors returns the fields c.Validate reports.
func validationErrors(c *connections.Connection) map[string]string {
	out := map[string]string{}
	var ves connections.ValidationErrors
	if err := c.Validate(); errors.As(err, &ves) {
		for _, ve := range ves {
			out[ve.Field] = ve.Reason
		}
	}
	return out
}

func TestCustomTwoLeggedValidate(t *testing.T) {
	const tokenURL = "https://auth.example.com/oauth/token"
	form := "grant_type=client_credentials&client_id=${values.clientId}&client_secret=${secrets.clientSecret}"
	valid := func() security.CustomFlow {
		return security.CustomFlow{Values: map[string]string{"clientId": "orders"},
			TokenRequest: security.RequestTemplate{URL: tokenURL, Body: form}}
	}
	secrets := map[string]string{"clientSecret": canary + "-s"}
	tests := []struct {
		name    string
		change  func(f *security.CustomFlow, s map[string]string)
		field   string // "" when valid
		contain string
	}{
		{name: "valid"},
		{name: "JSON body with placeholders in strings", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Headers = map[string]string{"Content-Type": "application/json"}
			f.TokenRequest.Body = `{"id": "${values.clientId}", "secret": "x-${secrets.clientSecret}"}`
		}},
		{name: "token URL required", change: func(f *security.CustomFlow, _ map[string]string) { f.TokenRequest.URL = "" },
			field: "security.tokenRequest.url", contain: "required"},
		{name: "placeholder in the host", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.URL = "https://${values.clientId}.example.com/token"
		}, field: "security.tokenRequest.url", contain: "only after the host"},
		{name: "placeholder in the port", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.URL = "https://auth.example.com:${values.clientId}/token"
		}, field: "security.tokenRequest.url"},
		{name: "placeholder as the scheme", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.URL = "${values.clientId}://auth.example.com/token"
		}, field: "security.tokenRequest.url"},
		{name: "unknown placeholder", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Body = form + "&x=${clientSecret}"
		}, field: "security.tokenRequest.body", contain: "${clientSecret}"},
		{name: "access token in a token request", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Body = form + "&x=${accessToken}"
		}, field: "security.tokenRequest.body"},
		{name: "refresh token in the token request", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Body = form + "&x=${refreshToken}"
		}, field: "security.tokenRequest.body"},
		{name: "unclosed placeholder", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Body = form + "&x=${values.clientId"
		}, field: "security.tokenRequest.body", contain: "closing"},
		{name: "missing value", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Body = form + "&tenant=${values.tenant}"
		}, field: "security.values", contain: "tenant"},
		{name: "missing secret", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Body = form + "&k=${secrets.appKey}"
		}, field: "security.secrets", contain: "appKey"},
		{name: "unused value", change: func(f *security.CustomFlow, _ map[string]string) { f.Values["tenant"] = "t1" },
			field: "security.values.tenant", contain: "not used"},
		{name: "unused secret", change: func(_ *security.CustomFlow, s map[string]string) { s["appKey"] = canary + "-k" },
			field: "security.secrets.appKey", contain: "not used"},
		{name: "too many secrets", change: func(_ *security.CustomFlow, s map[string]string) {
			for i := range 33 {
				s[fmt.Sprintf("s%d", i)] = canary
			}
		}, field: "security.secrets", contain: "at most 32 secrets"},
		{name: "too many values", change: func(f *security.CustomFlow, _ map[string]string) {
			for i := range 33 {
				f.Values[fmt.Sprintf("v%d", i)] = "x"
			}
		}, field: "security.values", contain: "at most 32 values"},
		{name: "bad entry name", change: func(f *security.CustomFlow, _ map[string]string) { f.Values["a-b"] = "x" },
			field: "security.values.a-b"},
		{name: "placeholder outside a JSON string", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Headers = map[string]string{"Content-Type": "application/json"}
			f.TokenRequest.Body = `{"id": ${values.clientId}, "secret": "${secrets.clientSecret}"}`
		}, field: "security.tokenRequest.body", contain: "outside a JSON string"},
		{name: "invalid JSON body", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Headers = map[string]string{"Content-Type": "application/json"}
			f.TokenRequest.Body = `{"id": "${values.clientId}", "secret": "${secrets.clientSecret}"`
		}, field: "security.tokenRequest.body", contain: "JSON"},
		{name: "placeholders in an XML body", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Headers = map[string]string{"Content-Type": "application/xml"}
			f.TokenRequest.Body = `<id>${values.clientId}</id><s>${secrets.clientSecret}</s>`
		}, field: "security.tokenRequest.body"},
		{name: "header literal with LF", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Headers = map[string]string{"X-Id": "a\nb"}
		}, field: "security.tokenRequest.headers.X-Id", contain: "CR, LF or NUL"},
		{name: "header literal with NUL", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Headers = map[string]string{"X-Id": "a\x00${values.clientId}"}
		}, field: "security.tokenRequest.headers.X-Id"},
		{name: "header connmgr sets", change: func(f *security.CustomFlow, _ map[string]string) {
			f.TokenRequest.Headers = map[string]string{"Host": "evil.example"}
		}, field: "security.tokenRequest.headers.Host"},
		{name: "method", change: func(f *security.CustomFlow, _ map[string]string) { f.TokenRequest.Method = "TRACE" },
			field: "security.tokenRequest.method"},
		{name: "body with GET", change: func(f *security.CustomFlow, _ map[string]string) { f.TokenRequest.Method = "GET" },
			field: "security.tokenRequest.body"},
		{name: "method in lower case", change: func(f *security.CustomFlow, _ map[string]string) { f.TokenRequest.Method = "post" },
			field: "security.tokenRequest.method", contain: "upper case"},
		{name: "refresh request to another origin", change: func(f *security.CustomFlow, _ map[string]string) {
			f.RefreshRequest = &security.RequestTemplate{URL: "https://other.example.com/refresh",
				Body: "refresh_token=${refreshToken}&client_secret=${secrets.clientSecret}"}
		}, field: "security.refreshRequest.url", contain: "origin"},
		{name: "refresh request on another port", change: func(f *security.CustomFlow, _ map[string]string) {
			f.RefreshRequest = &security.RequestTemplate{URL: "https://auth.example.com:8443/oauth/token", Body: "rt=${refreshToken}"}
		}, field: "security.refreshRequest.url", contain: "origin"},
		{name: "refresh request without the refresh token", change: func(f *security.CustomFlow, _ map[string]string) {
			f.RefreshRequest = &security.RequestTemplate{URL: tokenURL, Body: "grant_type=refresh_token"}
		}, field: "security.refreshRequest", contain: "${refreshToken}"},
		{name: "pointer", change: func(f *security.CustomFlow, _ map[string]string) { f.Response.AccessToken = "data.token" },
			field: "security.response.accessToken", contain: "JSON pointer"},
		{name: "pointer escape", change: func(f *security.CustomFlow, _ map[string]string) { f.Response.ExpiresIn = "/a~2b" },
			field: "security.response.expiresIn"},
		{name: "apply in", change: func(f *security.CustomFlow, _ map[string]string) { f.Apply.In = "BODY" },
			field: "security.apply.in"},
		{name: "apply query without name", change: func(f *security.CustomFlow, _ map[string]string) { f.Apply.In = security.InQuery },
			field: "security.apply.name"},
		{name: "apply value without the token", change: func(f *security.CustomFlow, _ map[string]string) {
			f.Apply.Value = "Bearer ${values.clientId}"
		}, field: "security.apply.value", contain: "${accessToken}"},
		{name: "apply value with a secret", change: func(f *security.CustomFlow, _ map[string]string) {
			f.Apply.Value = "${secrets.clientSecret} ${accessToken}"
		}, field: "security.apply.value"},
		{name: "apply header that may not carry a token", change: func(f *security.CustomFlow, _ map[string]string) {
			f.Apply.Name = "Cookie"
		}, field: "security.apply.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, s := valid(), map[string]string{}
			for k, v := range secrets {
				s[k] = v
			}
			if tt.change != nil {
				tt.change(&f, s)
			}
			got := validationErrors(twoLegged("Conn_Custom", f, s))
			if tt.field == "" {
				if len(got) > 0 {
					t.Fatalf("Validate() = %v, want valid", got)
				}
				return
			}
			reason, ok := got[tt.field]
			if !ok || !strings.Contains(reason, tt.contain) {
				t.Errorf("Validate() = %v, want %s to be invalid (%q)", got, tt.field, tt.contain)
			}
			if strings.Contains(fmt.Sprint(got), canary) {
				t.Errorf("a validation error holds a secret: %v", got)
			}
		})
	}
}

// TestCustomTwoLeggedDefaults checks the defaults Validate fills in.
func TestCustomTwoLeggedDefaults(t *testing.T) {
	c := twoLegged("Conn_Custom", security.CustomFlow{Values: map[string]string{"id": "x"},
		TokenRequest: security.RequestTemplate{URL: "https://auth.example.com/t", Body: "id=${values.id}"}}, nil)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := c.Security.(*security.CustomTwoLegged)
	want := security.CustomFlow{Values: p.Values, TokenRequest: security.RequestTemplate{Method: "POST",
		URL: "https://auth.example.com/t", Body: "id=${values.id}"},
		Response: security.TokenResponse{AccessToken: "/access_token", ExpiresIn: "/expires_in",
			RefreshToken: "/refresh_token", TokenType: "/token_type"},
		Apply: security.TokenPlacement{In: security.InHeader, Name: "Authorization", Value: "Bearer ${accessToken}"}}
	if got := fmt.Sprintf("%+v", p.CustomFlow); got != fmt.Sprintf("%+v", want) {
		t.Errorf("defaults = %s, want %s", got, fmt.Sprintf("%+v", want))
	}
}

// TestCustomTwoLeggedGoOAuth2 obtains tokens from go-oauth2 with templates
// in the standard dialect: a form body with client credentials, the
// client authenticated by an HTTP Basic header made with base64(...) or
// in the body; the token is applied to target calls.
func TestCustomTwoLeggedGoOAuth2(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		const clientID, secret = "orders-custom", canary + "-go-secret"
		gs := newGoServer(t, clientID, secret, e.clock.Now)
		tests := []struct {
			name    string
			headers map[string]string
			body    string
			auth    string
		}{
			{name: "Basic", headers: map[string]string{"Authorization": "Basic ${base64(values.clientId:secrets.clientSecret)}"},
				body: "grant_type=client_credentials&scope=orders.read", auth: "basic"},
			{name: "body", body: "grant_type=client_credentials&client_id=${values.clientId}&client_secret=${secrets.clientSecret}",
				auth: "body"},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				c := e.create(twoLegged(fmt.Sprintf("Conn_Custom_Go_%d", i), security.CustomFlow{
					Values:       map[string]string{"clientId": clientID},
					TokenRequest: security.RequestTemplate{URL: gs.TokenURL(), Headers: tt.headers, Body: tt.body}},
					map[string]string{"clientSecret": secret}))
				req := httptest.NewRequest(http.MethodGet, "https://api.example.com/v1/orders", nil)
				a, err := e.m.Apply(context.Background(), c, req)
				if e.record(err) != nil {
					t.Fatalf("Apply() = %v", err)
				}
				log := gs.log()
				last := log[len(log)-1]
				if last.Status != http.StatusOK || last.Grant != "client_credentials" || last.ClientAuth != tt.auth {
					t.Errorf("go-oauth2 saw %+v, want a %s-authenticated client_credentials request answered 200", last, tt.auth)
				}
				if got := req.Header.Get("Authorization"); got != "Bearer "+a.Token.AccessToken.Reveal() ||
					!strings.HasPrefix(a.Token.AccessToken.Reveal(), canary+"-AT-") {
					t.Errorf("target Authorization = %q, want Bearer and go-oauth2's token", got)
				}
				if got := a.Token.Lifetime(); got != 30*time.Minute {
					t.Errorf("token lifetime = %v, want go-oauth2's expires_in of 30m", got)
				}
				if got := e.get(c.Name).Status; got != connections.StatusConfigured {
					t.Errorf("status = %s, want CONFIGURED", got)
				}
			})
		}
		t.Run("wrong secret", func(t *testing.T) {
			e := e.at(t)
			c := e.create(twoLegged("Conn_Custom_Go_Wrong", security.CustomFlow{Values: map[string]string{"clientId": clientID},
				TokenRequest: security.RequestTemplate{URL: gs.TokenURL(),
					Body: "grant_type=client_credentials&client_id=${values.clientId}&client_secret=${secrets.clientSecret}"}},
				map[string]string{"clientSecret": canary + "-wrong"}))
			_, err := e.m.Token(context.Background(), c)
			te := tokenErr(t, e.record(err))
			if te.Status != http.StatusUnauthorized || te.OAuthCode != "invalid_client" || !te.Permanent {
				t.Errorf("TokenError = %+v, want go-oauth2's 401 invalid_client, permanent", te)
			}
		})
	})
}

// jsonDialect is a token endpoint of its own dialect: a JSON body in,
// {"data": {"token": ..., "ttl": "3600", "refresh": ...}} out. It records
// what it received.
type jsonDialect struct {
	srv *httptest.Server

	mu     sync.Mutex
	got    []dialectRequest
	n      int
	answer func(n int, r dialectRequest) (int, string) // default: a token
}

type dialectRequest struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

func newJSONDialect(t testing.TB) *jsonDialect {
	d := &jsonDialect{}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := dialectRequest{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header, Body: string(b)}
		d.mu.Lock()
		d.n++
		n, answer := d.n, d.answer
		d.got = append(d.got, req)
		d.mu.Unlock()
		status, body := http.StatusOK, fmt.Sprintf(`{"data":{"token":"%s-AT-%d","ttl":"3600","refresh":"%s-RT-%d"}}`,
			canary, n, canary, n)
		if answer != nil {
			status, body = answer(n, req)
		}
		ctype := "application/json"
		if form, ok := strings.CutPrefix(body, "form:"); ok {
			ctype, body = "application/x-www-form-urlencoded", form
		}
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *jsonDialect) last(t testing.TB) dialectRequest {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.got) == 0 {
		t.Fatal("the token endpoint got no request")
	}
	return d.got[len(d.got)-1]
}

func (d *jsonDialect) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

func (d *jsonDialect) script(answer func(n int, r dialectRequest) (int, string)) {
	d.mu.Lock()
	d.answer = answer
	d.mu.Unlock()
}

// dialectResponse reads the JSON dialect's answers.
var dialectResponse = security.TokenResponse{AccessToken: "/data/token", ExpiresIn: "/data/ttl", RefreshToken: "/data/refresh"}

// TestCustomTwoLeggedEncoding fills placeholders with awkward values and
// checks what the endpoint received: escaped as JSON string content in a
// JSON body, form-encoded in a form body, percent-encoded in the URL's
// path and query, as they are in a header, and refused in a header when
// they hold CR or LF.
func TestCustomTwoLeggedEncoding(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	d := newJSONDialect(t)
	odd := `qu"ote back\slash ünï€ode & a=b /slash ?q #h %41 +`
	secret := canary + `-"s\e&c=r+e/t` + "\u2028\ttab"
	withLF := canary + "-line\nbreak"
	tests := []struct {
		name    string
		req     security.RequestTemplate
		secrets map[string]string
		check   func(t *testing.T, r dialectRequest)
		refused string // in the TokenError, and no request made
	}{
		{
			name: "JSON body",
			req: security.RequestTemplate{Headers: map[string]string{"Content-Type": "application/json"},
				Body: `{"app_key": "${values.odd}", "app_secret": "${secrets.s}", "both": "${values.odd}|${secrets.s}"}`},
			check: func(t *testing.T, r dialectRequest) {
				var got map[string]string
				if err := json.Unmarshal([]byte(r.Body), &got); err != nil {
					t.Fatalf("body %q is not JSON: %v", r.Body, err)
				}
				if got["app_key"] != odd || got["app_secret"] != secret || got["both"] != odd+"|"+secret {
					t.Errorf("JSON body decodes to %q, want the values as they are", got)
				}
				if ct := r.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			},
		},
		{
			name: "form body",
			req:  security.RequestTemplate{Body: "key=${values.odd}&secret=${secrets.s}&fixed=1"},
			check: func(t *testing.T, r dialectRequest) {
				req := httptest.NewRequest(r.Method, "/", strings.NewReader(r.Body))
				req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
				if err := req.ParseForm(); err != nil {
					t.Fatal(err)
				}
				if req.PostForm.Get("key") != odd || req.PostForm.Get("secret") != secret || req.PostForm.Get("fixed") != "1" ||
					len(req.PostForm) != 3 {
					t.Errorf("form = %q, want key, secret and fixed as they are", req.PostForm)
				}
			},
		},
		{
			name: "URL path and query",
			req:  security.RequestTemplate{Method: "GET", URL: "/t/${values.odd}/token?k=${values.odd}&s=${secrets.s}"},
			check: func(t *testing.T, r dialectRequest) {
				u := httptest.NewRequest(r.Method, r.Path+"?"+r.Query, nil).URL
				if got := u.Path; got != "/t/"+odd+"/token" {
					t.Errorf("path decodes to %q, want the value as one segment", got)
				}
				if strings.Count(r.Path, "/") != 3 {
					t.Errorf("path %q has other segments than the template's", r.Path)
				}
				if q := u.Query(); q.Get("k") != odd || q.Get("s") != secret || len(q) != 2 {
					t.Errorf("query = %q, want k and s as they are", q)
				}
			},
		},
		{
			name: "header",
			req: security.RequestTemplate{Headers: map[string]string{"X-App-Key": "k=${values.odd}",
				"Authorization": "Basic ${base64(values.odd:secrets.s)}"}},
			check: func(t *testing.T, r dialectRequest) {
				if got := r.Header.Get("X-App-Key"); got != "k="+odd {
					t.Errorf("X-App-Key = %q, want k=%s", got, odd)
				}
				req := httptest.NewRequest("GET", "/", nil)
				req.Header = r.Header
				if id, s, ok := req.BasicAuth(); !ok || id != odd || s != secret {
					t.Errorf("Basic credentials = %q:%q, want the value and the secret", id, s)
				}
			},
		},
		{
			name:    "header refuses a line break",
			req:     security.RequestTemplate{Headers: map[string]string{"X-Secret": "${secrets.s}", "X-Key": "${values.odd}"}},
			secrets: map[string]string{"s": withLF},
			refused: "CR, LF or NUL into header X-Secret",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.at(t)
			tt.req.URL = d.srv.URL + cmpOr(tt.req.URL, "/token")
			secrets := cmpOrMap(tt.secrets, map[string]string{"s": secret})
			flow := security.CustomFlow{Values: map[string]string{"odd": odd}, TokenRequest: tt.req, Response: dialectResponse}
			c := e.create(twoLegged(fmt.Sprintf("Conn_Encoding_%d", i), flow, secrets))
			before := d.count()
			tok, err := e.m.Token(context.Background(), c)
			e.record(err)
			if tt.refused != "" {
				if te := tokenErr(t, err); !strings.Contains(te.Reason, tt.refused) || !te.Permanent {
					t.Errorf("Token() = %v, want a permanent refusal: %s", err, tt.refused)
				}
				if d.count() != before {
					t.Errorf("a request was sent")
				}
				return
			}
			if err != nil {
				t.Fatalf("Token() = %v", err)
			}
			if !strings.HasPrefix(tok.AccessToken.Reveal(), canary+"-AT-") || tok.Lifetime() != time.Hour {
				t.Errorf("token %q for %v, want the dialect's /data/token for its ttl 3600", "…", tok.Lifetime())
			}
			tt.check(t, d.last(t))
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func cmpOrMap(a, b map[string]string) map[string]string {
	if a != nil {
		return a
	}
	return b
}

// TestCustomTwoLeggedResponse reads odd token responses with the pointers
// and classifies failures.
func TestCustomTwoLeggedResponse(t *testing.T) {
	const defaultTTL = 42 * time.Minute
	e := newTokenEnv(t, storetest.SQLite, func(cfg *security.ManagerConfig) { cfg.DefaultTTL = defaultTTL })
	d := newJSONDialect(t)
	jwtAccess := func() string {
		return jwtToken(t, jwt.SigningMethodHS256, []byte("k"), jwt.MapClaims{"sub": canary,
			"exp": e.clock.Now().Add(17 * time.Minute).Unix()})
	}
	tests := []struct {
		name     string
		status   int
		body     func() string
		response *security.TokenResponse // default dialectResponse
		lifetime time.Duration
		refresh  bool
		// for failures
		reason    string
		permanent bool
		code      int
	}{
		{name: "ttl as a string", status: 200, body: func() string { return `{"data":{"token":"` + canary + `-a","ttl":"120"}}` },
			lifetime: 2 * time.Minute},
		{name: "ttl as a number", status: 200, body: func() string { return `{"data":{"token":"` + canary + `-a","ttl":90.7}}` },
			lifetime: 90 * time.Second},
		{name: "ttl beyond a day", status: 200, body: func() string { return `{"data":{"token":"` + canary + `-a","ttl":9999999}}` },
			lifetime: 24 * time.Hour},
		{name: "no ttl, JWT exp", status: 200, body: func() string { return `{"data":{"token":"` + jwtAccess() + `"}}` },
			lifetime: 17 * time.Minute},
		{name: "no ttl, default", status: 200, body: func() string { return `{"data":{"token":"` + canary + `-a","ttl":"soon"}}` },
			lifetime: defaultTTL},
		{name: "refresh token", status: 200, refresh: true, lifetime: time.Hour,
			body: func() string { return `{"data":{"token":"` + canary + `-a","ttl":3600,"refresh":"` + canary + `-r"}}` }},
		{name: "form-encoded answer", status: 200, response: &security.TokenResponse{}, lifetime: 5 * time.Minute,
			body: func() string { return "form:access_token=" + canary + "-a&expires_in=300&token_type=bearer" }},
		{name: "no token", status: 200, body: func() string { return `{"data":{"tok":"x"}}` },
			reason: "no string at /data/token (response.accessToken)", permanent: true},
		{name: "token not a string", status: 200, body: func() string { return `{"data":{"token":12}}` },
			reason: "no string at /data/token", permanent: true},
		{name: "not JSON", status: 200, body: func() string { return canary + " <html>" }, reason: "not JSON", permanent: true},
		{name: "OAuth error", status: 401, code: 401, permanent: true,
			body: func() string {
				return `{"error":"invalid_client","error_description":"bad secret ` + canary + `-json-secret\n!"}`
			},
			reason: "invalid_client: bad secret [redacted] !"},
		{name: "plain 400", status: 400, code: 400, permanent: true, body: func() string { return canary + " body" },
			reason: "HTTP 400 from the token endpoint, no OAuth error given"},
		{name: "503 is transient", status: 503, code: 503, body: func() string { return `{"error":"server_error"}` },
			reason: "server_error"},
		{name: "redirect is not followed", status: 302, code: 302, permanent: true, body: func() string { return "" },
			reason: "HTTP 302"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.at(t)
			d.script(func(int, dialectRequest) (int, string) { return tt.status, tt.body() })
			flow := security.CustomFlow{TokenRequest: security.RequestTemplate{URL: d.srv.URL + "/token",
				Headers: map[string]string{"Content-Type": "application/json"}, Body: `{"secret": "${secrets.s}"}`},
				Response: dialectResponse}
			if tt.response != nil {
				flow.Response = *tt.response
			}
			c := e.create(twoLegged(fmt.Sprintf("Conn_Response_%d", i), flow, map[string]string{"s": canary + "-json-secret"}))
			tok, err := e.m.Token(context.Background(), c)
			e.record(err)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Token() = %v", err)
				}
				if tok.Lifetime() != tt.lifetime || tok.RefreshToken.IsSet() != tt.refresh {
					t.Errorf("token lifetime %v, refresh token %v; want %v, %v", tok.Lifetime(), tok.RefreshToken.IsSet(), tt.lifetime, tt.refresh)
				}
				return
			}
			te := tokenErr(t, err)
			if !strings.Contains(te.Reason, tt.reason) || te.Permanent != tt.permanent || te.Status != tt.code {
				t.Errorf("TokenError = %+v, want %q, permanent %v, status %d", te, tt.reason, tt.permanent, tt.code)
			}
		})
	}
}

// TestCustomTwoLeggedRefresh refreshes with the refresh request, falls
// back to the token request when the refresh token is dead, and applies
// the token in the query.
func TestCustomTwoLeggedRefresh(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	d := newJSONDialect(t)
	ctx := context.Background()
	flow := security.CustomFlow{Values: map[string]string{"app": "orders"},
		TokenRequest: security.RequestTemplate{URL: d.srv.URL + "/token", Headers: map[string]string{"Content-Type": "application/json"},
			Body: `{"app": "${values.app}", "secret": "${secrets.s}"}`},
		RefreshRequest: &security.RequestTemplate{URL: d.srv.URL + "/refresh?app=${values.app}",
			Headers: map[string]string{"X-Refresh": "${refreshToken}"}},
		Response: dialectResponse, Apply: security.TokenPlacement{In: security.InQuery, Name: "access_token"}}
	c := e.create(twoLegged("Conn_Refresh", flow, map[string]string{"s": canary + "-s"}))
	first, err := e.m.Token(ctx, c)
	if e.record(err) != nil {
		t.Fatal(err)
	}
	second, err := e.m.Refresh(ctx, c)
	if e.record(err) != nil {
		t.Fatal(err)
	}
	r := d.last(t)
	if r.Path != "/refresh" || r.Header.Get("X-Refresh") != first.RefreshToken.Reveal() || r.Query != "app=orders" {
		t.Errorf("refresh went to %s?%s with X-Refresh %q, want /refresh?app=orders with the first refresh token", r.Path, r.Query,
			r.Header.Get("X-Refresh"))
	}
	if second.AccessToken.Equal(first.AccessToken) {
		t.Errorf("the refresh returned the old token")
	}

	// A dead refresh token: the token request starts afresh.
	d.script(func(n int, r dialectRequest) (int, string) {
		if r.Path == "/refresh" {
			return 400, `{"error":"invalid_grant"}`
		}
		return 200, fmt.Sprintf(`{"data":{"token":"%s-AT-%d","ttl":"3600"}}`, canary, n)
	})
	third, err := e.m.Refresh(ctx, c)
	if e.record(err) != nil {
		t.Fatalf("Refresh() after the refresh token died = %v, want a token from the token request", err)
	}
	if got := d.last(t).Path; got != "/token" {
		t.Errorf("last request to %s, want /token", got)
	}
	if !third.RefreshToken.Equal(second.RefreshToken) {
		t.Errorf("a token response without a refresh token dropped the stored one")
	}

	req := httptest.NewRequest(http.MethodGet, "https://api.example.com/v1/orders?access_token=caller&a=1", nil)
	a, err := e.m.Apply(ctx, c, req)
	if e.record(err) != nil {
		t.Fatal(err)
	}
	if got, want := req.URL.RawQuery, "a=1&access_token="+third.AccessToken.Reveal(); got != want || a.QueryParam != "access_token" {
		t.Errorf("query = %q, QueryParam %q; want %q, access_token", got, a.QueryParam, want)
	}
}
