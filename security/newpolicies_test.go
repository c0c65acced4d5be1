package security_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// The rules every policy of #11 keeps: the API form masks secrets, the
// stored form holds none, a carried secret cannot go to a new origin, keys
// rotate re-seals every secret, a test reports its steps, and
// CLIENT_SECRET_JWT works for every OAuth policy.

// newPolicyAPIForms are the new policies as a client sends them.
var newPolicyAPIForms = map[connections.Policy]string{
	security.PolicyCustomTwoLegged: `{"policy": "OAUTH2_CUSTOM_TWO_LEGGED", "values": {"appId": "orders"},
		"secrets": {"appKey": "CANARY-appkey"},
		"tokenRequest": {"url": "https://auth.example.com/token", "headers": {"Content-Type": "application/json"},
			"body": "{\"id\": \"${values.appId}\", \"key\": \"${secrets.appKey}\"}"},
		"response": {"accessToken": "/data/token", "expiresIn": "/data/ttl"}}`,
	security.PolicyCustomThreeLegged: `{"policy": "OAUTH2_CUSTOM_THREE_LEGGED", "values": {"appId": "orders"},
		"secrets": {"appKey": "CANARY-appkey"},
		"authorizationRequest": {"url": "https://auth.example.com/authorize?client_id=${values.appId}&state=${state}&code_challenge=${codeChallenge}&code_challenge_method=S256&redirect_uri=${redirectUri}"},
		"tokenRequest": {"url": "https://auth.example.com/token",
			"body": "grant_type=authorization_code&code=${code}&code_verifier=${codeVerifier}&client_id=${values.appId}&client_secret=${secrets.appKey}"}}`,
	security.PolicyJWTBearer: `{"policy": "OAUTH2_JWT_BEARER", "tokenUrl": "https://auth.example.com/token",
		"assertion": {"issuer": "svc", "claims": {"tenant": "t1"}}, "privateKeyPem": "KEY",
		"clientId": "orders", "clientSecret": "CANARY-client-secret-of-32-bytes-at-least", "clientAuth": "CLIENT_SECRET_JWT"}`,
	security.PolicyTokenExchange: `{"policy": "OAUTH2_TOKEN_EXCHANGE", "tokenUrl": "https://auth.example.com/token",
		"clientId": "orders", "clientSecret": "CANARY-secret", "subjectToken": "CANARY-subject", "audience": "orders-api"}`,
}

func TestNewPoliciesAPIForm(t *testing.T) {
	keys := newJWTKeys(t)
	for p, form := range newPolicyAPIForms {
		t.Run(string(p), func(t *testing.T) {
			keyJSON, _ := json.Marshal(keys.rsaPEM)
			form = strings.Replace(form, `"KEY"`, string(keyJSON), 1)
			s, err := security.Decode([]byte(form))
			if err != nil {
				t.Fatalf("Decode() = %v", err)
			}
			c := &connections.Connection{Name: "Conn_Form", Role: connections.RoleInvoke, BaseURL: "https://api.example.com", Security: s}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			api, stored := string(security.Encode(s)), string(security.Stored(s))
			for _, r := range c.AllSecrets() {
				name := r.Path[strings.LastIndex(r.Path, ".")+1:]
				if strings.Contains(form, `"`+name+`"`) && !r.Value().IsSet() {
					t.Errorf("secret %s was not read", r.Path)
				}
			}
			for where, text := range map[string]string{"API form": api, "stored form": stored} {
				if strings.Contains(text, canary) || strings.Contains(text, pemBody(keys.rsaPEM)) {
					t.Errorf("%s holds a secret: %s", where, text)
				}
			}
			if !strings.Contains(api, `"********"`) {
				t.Errorf("API form %s shows no masked secret", api)
			}
			back, err := security.Load(p, []byte(stored))
			if err != nil {
				t.Fatalf("Load(Stored()) = %v", err)
			}
			if got := string(security.Stored(back)); got != stored {
				t.Errorf("Stored(Load(Stored())) = %s, want %s", got, stored)
			}
			// Unknown fields are named.
			bad := strings.Replace(form, `"policy"`, `"tokenEndpoint": "x", "policy"`, 1)
			if _, err := security.Decode([]byte(bad)); err == nil || !strings.Contains(err.Error(), "security.tokenEndpoint") {
				t.Errorf("Decode(unknown field) = %v, want it named", err)
			}
		})
	}
}

// TestNewPoliciesDestinations replaces connections without sending their
// secrets again: a secret carried to a new origin is refused, a moved
// base URL needs the secrets again (tokens go there), and an entry of
// secrets left out is dropped, not carried.
func TestNewPoliciesDestinations(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		ctx := context.Background()
		flow := func(tokenURL string) security.CustomFlow {
			return security.CustomFlow{TokenRequest: security.RequestTemplate{URL: tokenURL, Body: "k=${secrets.appKey}&s=${secrets.other}"}}
		}
		orig := e.create(twoLegged("Conn_Dest", flow("https://auth.example.com/token"),
			map[string]string{"appKey": canary + "-appkey", "other": canary + "-other"}))
		tests := []struct {
			name  string
			conn  func() *connections.Connection
			field string // "" when accepted
		}{
			{name: "same origin, another path", conn: func() *connections.Connection {
				return twoLegged("Conn_Dest", flow("https://auth.example.com/v2/token"), map[string]string{"appKey": "", "other": ""})
			}},
			{name: "token URL on another host", conn: func() *connections.Connection {
				return twoLegged("Conn_Dest", flow("https://evil.example.com/token"), map[string]string{"appKey": "", "other": ""})
			}, field: "security.secrets.appKey"},
			{name: "refresh request elsewhere", conn: func() *connections.Connection {
				f := flow("https://auth.example.com/token")
				f.RefreshRequest = &security.RequestTemplate{URL: "https://auth.example.com:8443/r", Body: "r=${refreshToken}"}
				return twoLegged("Conn_Dest", f, map[string]string{"appKey": "", "other": ""})
			}, field: "security.refreshRequest.url"},
			{name: "base URL on another host", conn: func() *connections.Connection {
				c := twoLegged("Conn_Dest", flow("https://auth.example.com/token"), map[string]string{"appKey": "", "other": ""})
				c.BaseURL = "https://elsewhere.example.com"
				return c
			}, field: "baseUrl"},
			{name: "an entry left out is dropped", conn: func() *connections.Connection {
				c := twoLegged("Conn_Dest", security.CustomFlow{TokenRequest: security.RequestTemplate{URL: "https://auth.example.com/token",
					Body: "k=${secrets.appKey}"}}, map[string]string{"appKey": ""})
				return c
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := e.svc.Replace(ctx, "test", nil, tt.conn())
				var ves connections.ValidationErrors
				switch {
				case tt.field == "" && err != nil:
					t.Fatalf("Replace() = %v, want accepted", err)
				case tt.field != "" && (!errors.As(err, &ves) || !strings.Contains(err.Error(), tt.field)):
					t.Fatalf("Replace() = %v, want 422 on %s", err, tt.field)
				}
			})
		}
		got := e.get(orig.Name).Security.(*security.CustomTwoLegged)
		if len(got.Secrets) != 1 || got.Secrets["appKey"].Reveal() != canary+"-appkey" {
			t.Errorf("stored secrets %v, want appKey kept and other dropped", got.Secrets)
		}
	})
}

// TestNewPoliciesKeysRotate re-seals every secret of the new policies
// under a new key (store.Reseal, as keys rotate does) and reads them back
// with the new key alone.
func TestNewPoliciesKeysRotate(t *testing.T) {
	keys := newJWTKeys(t)
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		ctx := context.Background()
		db := storetest.Open(t, engine)
		oldSpec, err := keyring.GenerateKeySpec("old")
		if err != nil {
			t.Fatal(err)
		}
		newSpec, err := keyring.GenerateKeySpec("new")
		if err != nil {
			t.Fatal(err)
		}
		ring := func(spec string) *keyring.KeyRing {
			r, err := keyring.ParseKeyRing(spec)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		svc := &connections.Service{Store: store.NewConnections(db, ring(oldSpec)),
			Fingerprints: connections.NewFingerprinter([]byte("k"))}
		want := map[string]map[string]string{}
		for p, form := range newPolicyAPIForms {
			keyJSON, _ := json.Marshal(keys.rsaPEM)
			s, err := security.Decode([]byte(strings.Replace(form, `"KEY"`, string(keyJSON), 1)))
			if err != nil {
				t.Fatal(err)
			}
			c := &connections.Connection{Name: "Conn_" + string(p), Role: connections.RoleInvoke, BaseURL: "https://api.example.com", Security: s}
			if err := svc.Create(ctx, "test", c); err != nil {
				t.Fatalf("Create(%s) = %v", p, err)
			}
			want[c.Name] = map[string]string{}
			for _, r := range c.AllSecrets() {
				want[c.Name][r.Path] = r.Value().Reveal()
			}
		}
		if _, ok := want["Conn_OAUTH2_CUSTOM_TWO_LEGGED"]["secrets.appKey"]; !ok {
			t.Fatalf("the two-legged connection has no secret secrets.appKey: %v", want)
		}
		if _, err := store.Reseal(ctx, db, ring(newSpec+","+oldSpec)); err != nil {
			t.Fatalf("Reseal() = %v", err)
		}
		fresh := store.NewConnections(db, ring(newSpec))
		for name, secrets := range want {
			c, err := fresh.Get(ctx, name)
			if err != nil {
				t.Fatalf("Get(%s) with the new key alone = %v", name, err)
			}
			for path, v := range secrets {
				if r, ok := c.SecretAt(path); !ok || r.Value().Reveal() != v {
					t.Errorf("%s: secret %s not read back after the rotation", name, path)
				}
			}
		}
	})
}

// TestNewPoliciesTest runs a connection test of a custom two-legged
// connection: the token step and the request step with the token.
func TestNewPoliciesTest(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	d := newJSONDialect(t)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("X-Token"), "tok "+canary+"-AT-") {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(target.Close)
	client := loopbackClient(t, 0)
	proxy := invoke.NewProxy(e.m, func(*connections.Connection) (http.RoundTripper, error) { return client.Transport, nil }, nil)
	tester := &invoke.Tester{Proxy: proxy, Tokens: e.m, Status: e.svc, Now: e.clock.Now}
	c := twoLegged("Conn_Tested", security.CustomFlow{TokenRequest: security.RequestTemplate{URL: d.srv.URL + "/token",
		Body: "secret=${secrets.s}"}, Response: dialectResponse,
		Apply: security.TokenPlacement{Name: "X-Token", Value: "tok ${accessToken}"}}, map[string]string{"s": canary + "-s"})
	c.BaseURL = target.URL
	c = e.create(c)
	r, err := tester.Test(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if r.Result != connections.TestSuccess || len(r.Steps) != 2 || r.Steps[0].Step != invoke.StepToken ||
		r.Steps[0].Result != connections.TestSuccess || r.Steps[1].Step != invoke.StepRequest || r.Steps[1].Result != connections.TestSuccess {
		t.Errorf("Test() = %+v, want the token and request steps succeeding", r)
	}
	if got := e.get(c.Name).Status; got != connections.StatusConfigured {
		t.Errorf("status after the test = %s, want CONFIGURED", got)
	}
	d.script(func(int, dialectRequest) (int, string) { return 401, `{"error":"invalid_client"}` })
	r, err = tester.Test(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if r.Result != connections.TestFailure || r.Steps[0].Result != connections.TestFailure ||
		!strings.Contains(r.Steps[0].Detail, "invalid_client") || r.Steps[1].Result != connections.TestSkipped {
		t.Errorf("Test() = %+v, want the token step failing with invalid_client and the request skipped", r)
	}
}

// TestClientSecretJWTEveryPolicy authenticates every OAuth policy built on
// Client with CLIENT_SECRET_JWT at go-oauth2, whose client_secret_jwt
// assertions go-jose verifies (HS256, iss = sub = client id, aud the token
// URL as one string, fresh jti).
func TestClientSecretJWTEveryPolicy(t *testing.T) {
	e := newTokenEnv(t, storetest.SQLite)
	ctx := context.Background()
	const clientID, secret = "orders-jwt", canary + "-a-client-secret-of-32-bytes-or-more"
	gs := newGoServer(t, clientID, secret, e.clock.Now)
	client := security.Client{TokenURL: gs.TokenURL(), ClientID: clientID, ClientSecret: connections.NewSecret(secret),
		ClientAuth: security.ClientAuthSecretJWT}
	conns := map[string]connections.Security{
		"client_credentials": &security.ClientCredentials{Client: client},
		"password":           &security.Password{Client: client, Username: goUser, Password: connections.NewSecret(goPassword)},
	}
	for grant, s := range conns {
		t.Run(grant, func(t *testing.T) {
			e := e.at(t)
			c := e.create(&connections.Connection{Name: "Conn_SecretJWT_" + grant, Role: connections.RoleInvoke,
				BaseURL: "https://api.example.com", Security: s})
			for range 2 { // a fresh jti each time
				if _, err := e.m.Refresh(ctx, c); e.record(err) != nil {
					t.Fatalf("Refresh() = %v", err)
				}
				log := gs.log()
				if last := log[len(log)-1]; last.Grant != grant || last.ClientAuth != "client_secret_jwt" || last.Status != 200 {
					t.Errorf("go-oauth2 saw %+v, want a %s request authenticated by client_secret_jwt, answered 200", last, grant)
				}
			}
		})
	}
	t.Run("authorization_code", func(t *testing.T) {
		e := e.at(t)
		states := &recordingStates{ConsentStates: store.NewConsentStates(e.db, e.ring)}
		k := security.NewConsent(states, e.conns, e.m, callbackURL)
		c := e.create(&connections.Connection{Name: "Conn_SecretJWT_code", Role: connections.RoleInvoke,
			BaseURL: "https://api.example.com", Security: &security.AuthorizationCode{AuthorizationURL: gs.AuthURL(), Client: client}})
		u, _, err := k.Start(ctx, c, "alice")
		if e.record(err) != nil {
			t.Fatal(err)
		}
		if _, err := k.Complete(ctx, authorize(t, u, callbackURL)); e.record(err) != nil {
			t.Fatalf("Complete() = %v", err)
		}
		if _, err := e.m.Refresh(ctx, c); e.record(err) != nil {
			t.Fatalf("Refresh() = %v", err)
		}
		log := gs.log()
		for _, r := range log[len(log)-2:] {
			if r.ClientAuth != "client_secret_jwt" || r.Status != 200 {
				t.Errorf("go-oauth2 saw %+v, want client_secret_jwt answered 200", r)
			}
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		e := e.at(t)
		wrong := client
		wrong.ClientSecret = connections.NewSecret(canary + "-another-secret-of-32-bytes-or-more")
		c := e.create(&connections.Connection{Name: "Conn_SecretJWT_wrong", Role: connections.RoleInvoke,
			BaseURL: "https://api.example.com", Security: &security.ClientCredentials{Client: wrong}})
		_, err := e.m.Token(ctx, c)
		if te := tokenErr(t, e.record(err)); te.OAuthCode != "invalid_client" {
			t.Errorf("TokenError = %+v, want invalid_client", te)
		}
	})
}
