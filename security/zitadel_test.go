package security_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// opServer is zitadel's OpenID Provider (op, OpenID-certified) in process,
// for the JWT profile grant (RFC 7523 §2.1) and token exchange (RFC
// 8693). Its storage is zitadel's example storage with the keys of JWT
// profile issuers, every requested scope allowed and access tokens
// issued by exchange. In front of op, a client_secret_jwt assertion (which
// op does not support: it verifies RS256, ES256 and PS256 only) is
// verified with go-jose and replaced by the HTTP Basic authentication op
// takes for token exchange. It records every token request.
type opServer struct {
	srv    *httptest.Server
	issuer string
	st     *opStorage
	jwts   *secretJWTs

	mu       sync.Mutex
	requests []opRequest
}

// opRequest is a token request as it reached the provider.
type opRequest struct {
	Form       url.Values
	BasicID    string
	ClientAuth string // basic, client_secret_jwt or none
	Status     int
}

// opStorage is the example storage with what the tests configure.
type opStorage struct {
	*storage.Storage
	mu   sync.Mutex
	keys map[string]any // public keys by issuer + "/" + key id
}

// GetKeyByIDAndClientID implements op.JWTProfileKeyStorage: the public
// key of a JWT profile issuer.
func (s *opStorage) GetKeyByIDAndClientID(_ context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[clientID+"/"+keyID]
	if !ok {
		return nil, errors.New("key not found")
	}
	return &jose.JSONWebKey{KeyID: keyID, Use: "sig", Key: k}, nil
}

// ValidateJWTProfileScopes implements op.Storage: every scope is granted.
func (s *opStorage) ValidateJWTProfileScopes(_ context.Context, _ string, scopes []string) ([]string, error) {
	return scopes, nil
}

// ValidateTokenExchangeRequest implements op.TokenExchangeStorage: an
// access token is issued for the requested scopes.
func (s *opStorage) ValidateTokenExchangeRequest(_ context.Context, r op.TokenExchangeRequest) error {
	if r.GetRequestedTokenType() == "" {
		r.SetRequestedTokenType(oidc.AccessTokenType)
	}
	r.SetCurrentScopes(r.GetScopes())
	return nil
}

// opClient and opSecret are the provider's client for token exchange.
const (
	opClient = "connmgr-exchange"
	opSecret = canary + "-op-secret-at-least-32-bytes-long"
)

func newOPServer(t *testing.T, now func() time.Time) *opServer {
	t.Helper()
	p := &opServer{srv: httptest.NewUnstartedServer(nil), jwts: &secretJWTs{now: now}}
	p.issuer = "http://" + p.srv.Listener.Addr().String()
	p.st = &opStorage{keys: map[string]any{}, Storage: storage.NewStorageWithClients(storage.NewUserStore(p.issuer),
		map[string]*storage.Client{opClient: storage.WebClient(opClient, opSecret, callbackURL)})}
	provider, err := op.NewProvider(&op.Config{CryptoKey: sha256.Sum256([]byte(t.Name())), CodeMethodS256: true},
		p.st, op.StaticIssuer(p.issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	p.srv.Config.Handler = p.front(provider)
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

// TokenURL is the provider's token endpoint.
func (p *opServer) TokenURL() string { return p.issuer + "/oauth/token" }

// addKey registers the public key of a JWT profile issuer.
func (p *opServer) addKey(issuer, keyID string, public any) {
	p.st.mu.Lock()
	p.st.keys[issuer+"/"+keyID] = public
	p.st.mu.Unlock()
}

// log returns the token requests so far.
func (p *opServer) log() []opRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.requests)
}

func (p *opServer) last(t testing.TB) opRequest {
	t.Helper()
	log := p.log()
	if len(log) == 0 {
		t.Fatal("the provider got no token request")
	}
	return log[len(log)-1]
}

// front records token requests and turns a verified client_secret_jwt
// into HTTP Basic authentication for op.
func (p *opServer) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth/token" {
			next.ServeHTTP(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(b))
		req := opRequest{Form: form, ClientAuth: "none"}
		if id, _, ok := r.BasicAuth(); ok {
			req.BasicID, req.ClientAuth = id, "basic"
		}
		if a := form.Get("client_assertion"); a != "" {
			if err := p.jwts.verify(a, opClient, opSecret, p.TokenURL()); err != nil {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = fmt.Fprintf(w, `{"error":"invalid_client","error_description":%q}`, "client_secret_jwt: "+err.Error())
				return
			}
			req.ClientAuth = "client_secret_jwt"
			for _, k := range []string{"client_assertion", "client_assertion_type", "client_id"} {
				form.Del(k)
			}
			if form.Get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange" {
				r.SetBasicAuth(url.QueryEscape(opClient), url.QueryEscape(opSecret))
			}
			b = []byte(form.Encode())
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		req.Status = rec.Code
		p.mu.Lock()
		p.requests = append(p.requests, req)
		p.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

func (r opRequest) String() string {
	return fmt.Sprintf("%s grant, client auth %s, answered %d", r.Form.Get("grant_type"), r.ClientAuth, r.Status)
}
