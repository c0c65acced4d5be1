package security_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// oidcProvider is an OpenID Provider in process: zitadel's op, an
// OpenID-certified library, on its example in-memory storage, with one
// client for connmgr's callback and a user who signs in at once.
type oidcProvider struct {
	srv     *httptest.Server
	storage *storage.Storage
	issuer  string
	tokens  atomic.Int32 // token requests

	mu sync.Mutex
	// tamper, when set, rewrites the ID token of a token response: it
	// changes the claims and returns the key to sign them with (nil: drop
	// the ID token).
	tamper func(claims jwt.MapClaims) (key any)
}

const (
	oidcClient = "connmgr-oidc"
	oidcSecret = canary + "-oidc-secret"
)

func newOIDCProvider(t *testing.T) *oidcProvider {
	t.Helper()
	p := &oidcProvider{srv: httptest.NewUnstartedServer(nil)}
	p.issuer = "http://" + p.srv.Listener.Addr().String()
	p.storage = storage.NewStorageWithClients(storage.NewUserStore(p.issuer),
		map[string]*storage.Client{oidcClient: storage.WebClient(oidcClient, oidcSecret, callbackURL)})
	provider, err := op.NewProvider(&op.Config{CryptoKey: sha256.Sum256([]byte(t.Name())), CodeMethodS256: true,
		GrantTypeRefreshToken: true}, p.storage, op.StaticIssuer(p.issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// The client's login page: the user signs in and is sent back to the
	// authorization endpoint's callback.
	login := op.NewIssuerInterceptor(provider.IssuerFromRequest).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.FormValue("authRequestID")
		if err := p.storage.CheckUsernamePassword("test-user2", "verysecure", id); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, op.AuthCallbackURL(provider)(r.Context(), id), http.StatusFound)
	})
	mux.Handle("/login/username", login)
	mux.Handle("/", p.tokenResponses(provider))
	p.srv.Config.Handler = mux
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

// signingKey returns the provider's own ID token signing key.
func (p *oidcProvider) signingKey(t *testing.T) any {
	t.Helper()
	k, err := p.storage.SigningKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return k.Key()
}

// tokenResponses counts token requests and applies tamper to the ID
// tokens the provider answers.
func (p *oidcProvider) tokenResponses(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth/token" {
			next.ServeHTTP(w, r)
			return
		}
		p.tokens.Add(1)
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		p.mu.Lock()
		tamper := p.tamper
		p.mu.Unlock()
		var res map[string]any
		if tamper != nil && rec.Code == http.StatusOK && json.Unmarshal(body, &res) == nil {
			if raw, ok := res["id_token"].(string); ok {
				res["id_token"] = retoken(raw, tamper)
				if res["id_token"] == "" {
					delete(res, "id_token")
				}
				body, _ = json.Marshal(res)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}

// retoken re-signs the claims of raw as tamper says, keeping its header's
// key id; "" when tamper drops it.
func retoken(raw string, tamper func(jwt.MapClaims) any) string {
	claims := jwt.MapClaims{}
	parsed, _, err := jwt.NewParser().ParseUnverified(raw, claims)
	if err != nil {
		return "not a JWT"
	}
	key := tamper(claims)
	if key == nil {
		return ""
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = parsed.Header["kid"]
	s, err := tok.SignedString(key)
	if err != nil {
		return "cannot sign"
	}
	return s
}

// TestOpenIDConnect runs consent against zitadel's OpenID Provider: with
// scope openid the authorization URL carries a fresh nonce kept with the
// state, the endpoints come from the issuer's discovery document, and the
// ID token of the code exchange is verified (signature with the JWKS, iss,
// aud, nonce); one that fails is refused and no token is stored (#9 item
// 10).
func TestOpenIDConnect(t *testing.T) {
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// browser changes the authorization URL before the browser opens it.
		browser func(q url.Values)
		tamper  func(t *testing.T, p *oidcProvider) func(jwt.MapClaims) any
		refused string // in the error, "" when the consent succeeds
	}{
		{name: "verified"},
		{name: "nonce changed on the way", browser: func(q url.Values) { q.Set("nonce", "forged-nonce-0123456789") },
			refused: "nonce"},
		{name: "signed by another key", refused: "signature",
			tamper: func(*testing.T, *oidcProvider) func(jwt.MapClaims) any {
				return func(jwt.MapClaims) any { return otherKey }
			}},
		{name: "iss not the issuer", refused: "iss",
			tamper: func(t *testing.T, p *oidcProvider) func(jwt.MapClaims) any {
				key := p.signingKey(t)
				return func(c jwt.MapClaims) any { c["iss"] = "https://evil.example"; return key }
			}},
		{name: "aud another client", refused: "aud",
			tamper: func(t *testing.T, p *oidcProvider) func(jwt.MapClaims) any {
				key := p.signingKey(t)
				return func(c jwt.MapClaims) any { c["aud"] = []string{"someone-else"}; return key }
			}},
		{name: "no ID token", refused: "id_token",
			tamper: func(*testing.T, *oidcProvider) func(jwt.MapClaims) any {
				return func(jwt.MapClaims) any { return nil }
			}},
	}
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newConsentEnv(t, engine)
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				p := newOIDCProvider(t)
				if tt.tamper != nil {
					p.tamper = tt.tamper(t, p)
				}
				// The issuer alone: the endpoints are discovered.
				c := e.create(&connections.Connection{Name: fmt.Sprintf("Conn_OIDC_%d", i), Role: connections.RoleInvoke,
					BaseURL: "https://api.example.com/v1", Security: &security.AuthorizationCode{Issuer: p.issuer,
						Client: security.Client{ClientID: oidcClient, ClientSecret: connections.NewSecret(oidcSecret),
							Scopes: []string{"openid", "profile"}}}})

				authURL := e.start(c)
				u, err := url.Parse(authURL)
				if err != nil {
					t.Fatal(err)
				}
				if got := u.Scheme + "://" + u.Host + u.Path; got != p.issuer+"/authorize" {
					t.Errorf("authorization URL goes to %s, want the discovered %s/authorize", got, p.issuer)
				}
				q := u.Query()
				pc := e.states.last(t)
				if nonce := q.Get("nonce"); len(nonce) < 22 || nonce != pc.Nonce {
					t.Errorf("authorization URL nonce = %q, want the consent's fresh nonce (at least 128 bits)", nonce)
				}
				var kept string
				if err := e.db.Table("oauth_states").Select("nonce").Where("fingerprint = ? AND connection_id = ?", c.Fingerprint, c.ID).
					Order("created_at DESC").Limit(1).Scan(&kept).Error; err != nil || kept != pc.Nonce {
					t.Errorf("nonce kept with the state = %q, %v; want %q", kept, err, pc.Nonce)
				}
				if again, _, err := e.k.Start(ctx, c, "alice"); err != nil || strings.Contains(again, url.QueryEscape(pc.Nonce)) {
					t.Errorf("a second Start() = %v, same nonce %v; want a fresh nonce", err, err == nil)
				}
				if tt.browser != nil {
					tt.browser(q)
					u.RawQuery = q.Encode()
				}

				cb := authorize(t, u.String(), callbackURL)
				if cb.Get("code") == "" {
					t.Fatalf("the provider redirected without a code: %v", cb)
				}
				_, err = e.k.Complete(ctx, cb)
				e.record(err)
				if p.tokens.Load() != 1 {
					t.Errorf("code exchanges = %d, want 1", p.tokens.Load())
				}
				st := e.stored(c)
				if tt.refused == "" {
					if err != nil {
						t.Fatalf("Complete() = %v, want a verified ID token", err)
					}
					if st.Token == nil {
						t.Errorf("no token stored after consent")
					}
					if got := e.get(c.Name).Status; got != connections.StatusConfigured {
						t.Errorf("status = %s, want CONFIGURED", got)
					}
					return
				}
				if !errors.Is(err, security.ErrTokenUnavailable) || !strings.Contains(err.Error(), "ID token") ||
					!strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("Complete() = %v, want the ID token refused for its %s", err, tt.refused)
				}
				if st.Token != nil {
					t.Errorf("a token was stored although the ID token was refused")
				}
				if got := e.get(c.Name).Status; got != connections.StatusNeedsConsent {
					t.Errorf("status = %s, want NEEDS_CONSENT", got)
				}
			})
		}
	})
}
