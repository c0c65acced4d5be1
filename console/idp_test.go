package console_test

import (
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	oauth2 "github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	oauthserver "github.com/go-oauth2/oauth2/v4/server"
	oauthstore "github.com/go-oauth2/oauth2/v4/store"
)

// tokenEndpoint is an OAuth 2.0 client-credentials token endpoint that a
// test can break: then it answers invalid_client with a description, as a
// provider that disabled the client does.
type tokenEndpoint struct {
	URL      string
	broken   atomic.Bool
	requests atomic.Int64
	// description is what a broken endpoint says (error_description).
	description string
	expiresIn   int
}

func newTokenEndpoint(t *testing.T, expiresIn int, description string) *tokenEndpoint {
	te := &tokenEndpoint{expiresIn: expiresIn, description: description}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := te.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if te.broken.Load() {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": te.description})
			return
		}
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "unsupported_grant_type"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-" + time.Now().Format("150405.000") + "-" + string(rune('a'+n%26)),
			"token_type": "Bearer", "expires_in": te.expiresIn})
	}))
	t.Cleanup(ts.Close)
	te.URL = ts.URL
	return te
}

// newTarget is an API that answers 200 to everything.
func newTarget(t *testing.T) string {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// idp is an OAuth 2.0 authorization server (go-oauth2) with a login
// form: GET /authorize shows it, POST /authorize checks the password and
// issues the code; PKCE S256 is required. The browser reaches it as
// idpHost (another site than connmgr), connmgr's token requests as
// 127.0.0.1.
type idp struct {
	// AuthorizeURL is for the browser; TokenURL for connmgr.
	AuthorizeURL, TokenURL string
	user, password         string

	mu     sync.Mutex
	logins int
}

var loginForm = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Test IdP</title></head>
<body><h1>Sign in to Test IdP</h1><p>{{.Client}} asks for {{.Scope}}</p>
<form method="post" action="/authorize">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<label>Username <input id="idp-user" name="username"></label>
<label>Password <input id="idp-password" name="password" type="password"></label>
<button id="idp-sign-in" type="submit">Allow</button></form></body></html>`))

func newIDP(t *testing.T, clientID, secret, redirectURI string) *idp {
	t.Helper()
	p := &idp{user: "alice", password: "wonderland"}
	mgr := manage.NewDefaultManager()
	mgr.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: time.Hour, RefreshTokenExp: 24 * time.Hour, IsGenerateRefresh: true})
	mgr.MustTokenStorage(oauthstore.NewMemoryTokenStore())
	redirect, err := url.Parse(redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	clients := oauthstore.NewClientStore()
	_ = clients.Set(clientID, &models.Client{ID: clientID, Secret: secret, Domain: redirect.Scheme + "://" + redirect.Host})
	mgr.MapClientStorage(clients)
	srv := oauthserver.NewServer(&oauthserver.Config{TokenType: "Bearer", AllowedResponseTypes: []oauth2.ResponseType{oauth2.Code},
		AllowedGrantTypes:           []oauth2.GrantType{oauth2.AuthorizationCode, oauth2.Refreshing},
		AllowedCodeChallengeMethods: []oauth2.CodeChallengeMethod{oauth2.CodeChallengeS256}, ForcePKCE: true}, mgr)
	srv.SetUserAuthorizationHandler(func(w http.ResponseWriter, r *http.Request) (string, error) {
		if r.Method == http.MethodPost && r.PostFormValue("username") == p.user && r.PostFormValue("password") == p.password {
			p.mu.Lock()
			p.logins++
			p.mu.Unlock()
			return p.user, nil
		}
		params := map[string]string{}
		for _, k := range []string{"response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"} {
			if v := r.FormValue(k); v != "" {
				params[k] = v
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		return "", loginForm.Execute(w, map[string]any{"Client": r.FormValue("client_id"), "Scope": r.FormValue("scope"), "Params": params})
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if err := srv.HandleAuthorizeRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) { _ = srv.HandleTokenRequest(w, r) })
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p.AuthorizeURL = "http://" + net.JoinHostPort(idpHost, port) + "/authorize"
	p.TokenURL = ts.URL + "/token"
	return p
}

func (p *idp) loginCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logins
}
