package security_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	goauth "github.com/go-oauth2/oauth2/v4"
	oautherrors "github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/generates"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	oauthstore "github.com/go-oauth2/oauth2/v4/store"
)

// goServer is go-oauth2's authorization server in memory, speaking the
// standard dialect: /authorize (code, PKCE S256 required) and /token
// (authorization code, client credentials, password, refresh with
// rotation). Clients authenticate with HTTP Basic, in the body, or with a
// client_secret_jwt assertion (RFC 7523 §2.2, HS256) that go-jose
// verifies: iss and sub the client id, aud the token URL as one string,
// exp in the future, a jti never seen before.
type goServer struct {
	srv          *httptest.Server
	clientID     string
	clientSecret string
	now          func() time.Time

	jwts *secretJWTs

	mu       sync.Mutex
	requests []goRequest
}

// goRequest is a token request go-oauth2 answered.
type goRequest struct {
	Grant      string
	ClientAuth string // basic, body or client_secret_jwt
	Status     int
	Error      string
	Form       url.Values
}

const (
	goUser     = "alice"
	goPassword = canary + "-go-password"
)

func newGoServer(t testing.TB, clientID, clientSecret string, now func() time.Time) *goServer {
	t.Helper()
	gs := &goServer{clientID: clientID, clientSecret: clientSecret, now: now, jwts: &secretJWTs{now: now}}
	mgr := manage.NewDefaultManager()
	mgr.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: time.Hour, RefreshTokenExp: 24 * time.Hour, IsGenerateRefresh: true})
	mgr.SetClientTokenCfg(&manage.Config{AccessTokenExp: 30 * time.Minute})
	mgr.SetPasswordTokenCfg(&manage.Config{AccessTokenExp: time.Hour, RefreshTokenExp: 24 * time.Hour, IsGenerateRefresh: true})
	mgr.SetRefreshTokenCfg(&manage.RefreshingConfig{IsGenerateRefresh: true, IsRemoveRefreshing: true, IsRemoveAccess: true})
	mgr.MustTokenStorage(oauthstore.NewMemoryTokenStore())
	mgr.MapAccessGenerate(canaryAccess{generates.NewAccessGenerate()})
	mgr.MapAuthorizeGenerate(canaryCode{generates.NewAuthorizeGenerate()})
	redirect, err := url.Parse(callbackURL)
	if err != nil {
		t.Fatal(err)
	}
	clients := oauthstore.NewClientStore()
	if err := clients.Set(clientID, &models.Client{ID: clientID, Secret: clientSecret,
		Domain: redirect.Scheme + "://" + redirect.Host}); err != nil {
		t.Fatal(err)
	}
	mgr.MapClientStorage(clients)
	srv := server.NewServer(&server.Config{
		TokenType:            "Bearer",
		AllowedResponseTypes: []goauth.ResponseType{goauth.Code},
		AllowedGrantTypes: []goauth.GrantType{goauth.AuthorizationCode, goauth.ClientCredentials, goauth.PasswordCredentials,
			goauth.Refreshing},
		AllowedCodeChallengeMethods: []goauth.CodeChallengeMethod{goauth.CodeChallengeS256},
		ForcePKCE:                   true,
	}, mgr)
	srv.SetUserAuthorizationHandler(func(http.ResponseWriter, *http.Request) (string, error) { return "user-1", nil })
	srv.SetPasswordAuthorizationHandler(func(_ context.Context, _, username, password string) (string, error) {
		if username != goUser || password != goPassword {
			return "", oautherrors.ErrAccessDenied
		}
		return "user-1", nil
	})
	srv.SetClientInfoHandler(gs.clientInfo)
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if err := srv.HandleAuthorizeRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		_ = srv.HandleTokenRequest(rec, r)
		var body struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		gs.mu.Lock()
		gs.requests = append(gs.requests, goRequest{Grant: r.PostForm.Get("grant_type"), ClientAuth: authMethod(r),
			Status: rec.Code, Error: body.Error, Form: r.PostForm})
		gs.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	gs.srv = httptest.NewServer(mux)
	t.Cleanup(gs.srv.Close)
	return gs
}

func (gs *goServer) AuthURL() string  { return gs.srv.URL + "/authorize" }
func (gs *goServer) TokenURL() string { return gs.srv.URL + "/token" }

// log returns the token requests answered so far.
func (gs *goServer) log() []goRequest {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return slices.Clone(gs.requests)
}

func authMethod(r *http.Request) string {
	switch {
	case r.PostForm.Get("client_assertion") != "":
		return "client_secret_jwt"
	case r.Header.Get("Authorization") != "":
		return "basic"
	}
	return "body"
}

// clientInfo authenticates the client of a token request.
func (gs *goServer) clientInfo(r *http.Request) (string, string, error) {
	if a := r.PostForm.Get("client_assertion"); a != "" {
		if r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			return "", "", oautherrors.ErrInvalidClient
		}
		if err := gs.verifySecretJWT(a); err != nil {
			return "", "", oautherrors.ErrInvalidClient
		}
		return gs.clientID, gs.clientSecret, nil
	}
	if _, _, ok := r.BasicAuth(); ok {
		return server.ClientBasicHandler(r)
	}
	return server.ClientFormHandler(r)
}

// verifySecretJWT checks a client_secret_jwt assertion for the server's
// client.
func (gs *goServer) verifySecretJWT(assertion string) error {
	return gs.jwts.verify(assertion, gs.clientID, gs.clientSecret, gs.TokenURL())
}

// secretJWTs verifies client_secret_jwt assertions (RFC 7523 §2.2, HS256)
// with go-jose: iss and sub the client id, aud the token URL as one
// string, exp in the future, a jti never seen before.
type secretJWTs struct {
	now  func() time.Time
	mu   sync.Mutex
	jtis map[string]bool
}

func (s *secretJWTs) verify(assertion, clientID, secret, aud string) error {
	tok, err := josejwt.ParseSigned(assertion, []jose.SignatureAlgorithm{jose.HS256})
	if err != nil {
		return err
	}
	var claims josejwt.Claims
	var raw map[string]any
	if err := tok.Claims([]byte(secret), &claims, &raw); err != nil {
		return err
	}
	if _, one := raw["aud"].(string); !one {
		return errors.New("aud is not a single string")
	}
	if err := claims.ValidateWithLeeway(josejwt.Expected{Issuer: clientID, Subject: clientID,
		AnyAudience: josejwt.Audience{aud}, Time: s.now()}, 0); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jtis == nil {
		s.jtis = map[string]bool{}
	}
	if claims.ID == "" || s.jtis[claims.ID] {
		return errors.New("jti missing or reused")
	}
	s.jtis[claims.ID] = true
	return nil
}
