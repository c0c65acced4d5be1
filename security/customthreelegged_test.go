package security_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// threeLegged returns a custom three-legged connection to go-oauth2 in
// its standard dialect: code and PKCE, the client authenticated in the
// body, refresh with the refresh token.
func threeLegged(name, authURL, tokenURL, clientID, secret string) *connections.Connection {
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v1",
		Security: &security.CustomThreeLegged{
			AuthorizationRequest: security.AuthorizationRequest{URL: authURL + "?response_type=code&client_id=${values.clientId}" +
				"&redirect_uri=${redirectUri}&scope=orders.read&state=${state}&code_challenge=${codeChallenge}&code_challenge_method=S256"},
			CustomFlow: security.CustomFlow{Values: map[string]string{"clientId": clientID},
				TokenRequest: security.RequestTemplate{URL: tokenURL,
					Body: "grant_type=authorization_code&code=${code}&code_verifier=${codeVerifier}&redirect_uri=${redirectUri}" +
						"&client_id=${values.clientId}&client_secret=${secrets.clientSecret}"},
				RefreshRequest: &security.RequestTemplate{URL: tokenURL,
					Body: "grant_type=refresh_token&refresh_token=${refreshToken}&client_id=${values.clientId}&client_secret=${secrets.clientSecret}"}},
			Secrets: map[string]connections.Secret{"clientSecret": connections.NewSecret(secret)}}}
}

func TestCustomThreeLeggedValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *security.CustomThreeLegged)
		field  string
	}{
		{name: "valid"},
		{name: "authorization URL required", change: func(p *security.CustomThreeLegged) { p.AuthorizationRequest.URL = "" },
			field: "security.authorizationRequest.url"},
		{name: "no state", change: func(p *security.CustomThreeLegged) {
			p.AuthorizationRequest.URL = strings.Replace(p.AuthorizationRequest.URL, "${state}", "fixed", 1)
		}, field: "security.authorizationRequest.url"},
		{name: "no code challenge", change: func(p *security.CustomThreeLegged) {
			p.AuthorizationRequest.URL = strings.Replace(p.AuthorizationRequest.URL, "${codeChallenge}", "x", 1)
		}, field: "security.authorizationRequest.url"},
		{name: "a secret in the authorization URL", change: func(p *security.CustomThreeLegged) {
			p.AuthorizationRequest.URL += "&s=${secrets.clientSecret}"
		}, field: "security.authorizationRequest.url"},
		{name: "the verifier in the authorization URL", change: func(p *security.CustomThreeLegged) {
			p.AuthorizationRequest.URL += "&v=${codeVerifier}"
		}, field: "security.authorizationRequest.url"},
		{name: "placeholder in the authorization host", change: func(p *security.CustomThreeLegged) {
			p.AuthorizationRequest.URL = "https://${values.clientId}.example.com/authorize?state=${state}&c=${codeChallenge}"
		}, field: "security.authorizationRequest.url"},
		{name: "no code in the exchange", change: func(p *security.CustomThreeLegged) {
			p.TokenRequest.Body = strings.Replace(p.TokenRequest.Body, "${code}", "x", 1)
		}, field: "security.tokenRequest"},
		{name: "no verifier in the exchange", change: func(p *security.CustomThreeLegged) {
			p.TokenRequest.Body = strings.Replace(p.TokenRequest.Body, "${codeVerifier}", "x", 1)
		}, field: "security.tokenRequest"},
		{name: "state in the exchange", change: func(p *security.CustomThreeLegged) { p.TokenRequest.Body += "&s=${state}" },
			field: "security.tokenRequest.body"},
		{name: "code in the refresh", change: func(p *security.CustomThreeLegged) { p.RefreshRequest.Body += "&c=${code}" },
			field: "security.refreshRequest.body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := threeLegged("Conn_Three", "https://auth.example.com/authorize", "https://auth.example.com/token", "app", canary+"-s")
			if tt.change != nil {
				tt.change(c.Security.(*security.CustomThreeLegged))
			}
			got := validationErrors(c)
			if _, ok := got[tt.field]; tt.field != "" && !ok || tt.field == "" && len(got) > 0 {
				t.Errorf("Validate() = %v, want an error on %q", got, tt.field)
			}
		})
	}
	if got := connections.InitialStatus(&security.CustomThreeLegged{}); got != connections.StatusNeedsConsent {
		t.Errorf("InitialStatus = %s, want NEEDS_CONSENT", got)
	}
}

// TestCustomThreeLeggedGoOAuth2 gives consent through go-oauth2's
// authorization endpoint (PKCE S256 forced), exchanges the code with the
// token request template, refreshes with the refresh request (go-oauth2
// rotates and revokes the old one), and needs consent again once the
// refresh token is dead.
func TestCustomThreeLeggedGoOAuth2(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		ctx := context.Background()
		const clientID, secret = "orders-three", canary + "-three-secret"
		gs := newGoServer(t, clientID, secret, e.clock.Now)
		states := &recordingStates{ConsentStates: store.NewConsentStates(e.db, e.ring)}
		k := security.NewConsent(states, e.conns, e.m, callbackURL)
		c := e.create(threeLegged("Conn_Three_Go", gs.AuthURL(), gs.TokenURL(), clientID, secret))
		if c.Status != connections.StatusNeedsConsent {
			t.Errorf("a new connection is %s, want NEEDS_CONSENT", c.Status)
		}

		authURL, _, err := k.Start(ctx, c, "alice")
		if e.record(err) != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(authURL)
		if err != nil {
			t.Fatal(err)
		}
		q, pc := u.Query(), states.last(t)
		if q.Get("state") != pc.State || q.Get("code_challenge") != oauth2.S256ChallengeFromVerifier(pc.Verifier.Reveal()) ||
			q.Get("redirect_uri") != callbackURL || q.Get("client_id") != clientID {
			t.Errorf("authorization URL query %v, want the consent's state, S256 challenge, callback and client", q)
		}
		cb := authorize(t, authURL, callbackURL)
		if _, err := k.Complete(ctx, cb); e.record(err) != nil {
			t.Fatalf("Complete() = %v", err)
		}
		if _, err := k.Complete(ctx, cb); !errors.Is(err, security.ErrInvalidState) {
			t.Errorf("Complete() with the state again = %v, want ErrInvalidState", err)
		}
		log := gs.log()
		if last := log[len(log)-1]; last.Grant != "authorization_code" || last.Status != 200 || last.ClientAuth != "body" ||
			last.Form.Get("code_verifier") != pc.Verifier.Reveal() {
			t.Errorf("go-oauth2 saw %+v, want the code exchanged with the verifier, answered 200", last)
		}
		if got := e.get(c.Name).Status; got != connections.StatusConfigured {
			t.Errorf("status after consent = %s, want CONFIGURED", got)
		}
		first := e.stored(c).Token
		if first == nil || !first.RefreshToken.IsSet() {
			t.Fatalf("no token with a refresh token stored after consent")
		}

		second, err := e.m.Refresh(ctx, c)
		if e.record(err) != nil {
			t.Fatalf("Refresh() = %v", err)
		}
		if second.RefreshToken.Equal(first.RefreshToken) || second.AccessToken.Equal(first.AccessToken) {
			t.Errorf("the refresh kept the old tokens; go-oauth2 rotates both")
		}
		log = gs.log()
		if last := log[len(log)-1]; last.Grant != "refresh_token" || last.Status != 200 {
			t.Errorf("go-oauth2 saw %+v, want a refresh answered 200", last)
		}

		// The old refresh token is dead at go-oauth2: a refresh with it
		// means consent again.
		e.seed(c, canary+"-AT-old", first.RefreshToken.Reveal(), e.clock.Now(), time.Hour)
		_, err = e.m.Refresh(ctx, c)
		if e.record(err); !errors.Is(err, security.ErrNeedsConsent) {
			t.Errorf("Refresh() with a dead refresh token = %v, want ErrNeedsConsent", err)
		}
		if got := e.get(c.Name).Status; got != connections.StatusNeedsConsent {
			t.Errorf("status = %s, want NEEDS_CONSENT", got)
		}
	})
}
