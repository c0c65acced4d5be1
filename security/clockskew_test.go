package security_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// TestAssertionsToleratePlainClockSkew: a provider whose clock is a few
// seconds behind connmgr's still accepts the JWT bearer assertion
// (zitadel's op, which allows one second of iat in the future) and the
// CLIENT_SECRET_JWT client assertion (go-jose without leeway): both are
// issued a little in the past, the bearer assertion's exp still
// lifetimeSeconds after its iat.
func TestAssertionsToleratePlainClockSkew(t *testing.T) {
	keys := newJWTKeys(t)
	for _, ahead := range []time.Duration{5 * time.Second, 20 * time.Second} {
		t.Run(fmt.Sprintf("connmgr %v ahead", ahead), func(t *testing.T) {
			e := newTokenEnv(t, storetest.SQLite)
			e.secret(pemBody(keys.rsaPEM))
			// The provider runs on the real clock, connmgr's is ahead.
			e.clock.Advance(time.Until(e.clock.Now()).Truncate(time.Second)*-1 + ahead)
			p := newOPServer(t, time.Now)
			p.addKey("svc", "key-1", keys.rsaPub)
			c := jwtBearer("Conn_JWT_Skew", p.TokenURL(), "svc", p.issuer, keys.rsaPEM, "RS256")
			jb := c.Security.(*security.JWTBearer)
			jb.ClientID, jb.ClientSecret, jb.ClientAuth = opClient, connections.NewSecret(opSecret), security.ClientAuthSecretJWT
			c = e.create(c)
			if _, err := e.m.Token(context.Background(), c); e.record(err) != nil {
				t.Fatalf("Token() = %v; want the provider to accept assertions from a clock %v ahead", err, ahead)
			}
			r := p.last(t)
			if r.ClientAuth != "client_secret_jwt" {
				t.Errorf("provider saw %s, want client_secret_jwt", r)
			}
			claims := checkBearerAssertion(t, r.Form.Get("assertion"), "RS256", keys.rsaPub)
			if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 300 || int64(iat) >= e.clock.Now().Unix() {
				t.Errorf("assertion iat %v exp %v, want iat before now and exp 300s after it", iat, exp)
			}
		})
	}
}

// TestAssumeRoleExpirationOnSTSClock: STS's Expiration is a time on STS's
// clock. One already past on connmgr's (its clock ahead of STS's) says
// nothing about how long the credentials last: they are kept for the
// durationSeconds asked for, not for the default token lifetime.
func TestAssumeRoleExpirationOnSTSClock(t *testing.T) {
	for _, tt := range []struct {
		name     string
		lifetime time.Duration // Expiration - now, on connmgr's clock
		want     time.Duration
	}{
		{"STS 2h behind", 15*time.Minute - 2*time.Hour, 15 * time.Minute},
		{"clocks agree", 15 * time.Minute, 15 * time.Minute},
		{"shorter than asked", 10 * time.Minute, 10 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokenEnv(t, storetest.SQLite)
			sts := newFakeSTS(t, e.clock.Now)
			sts.lifetime = tt.lifetime
			c := e.create(&connections.Connection{Name: "Conn_AWS_Skew", Role: connections.RoleInvoke, BaseURL: "https://api.example.com",
				Security: &security.AWSSigV4{AccessKeyID: "AKIASTATIC", SecretAccessKey: connections.NewSecret(canary + "-static"),
					Region: "eu-west-1", Service: "execute-api", AssumeRole: &security.AssumeRole{RoleARN: "arn:aws:iam::123456789012:role/orders",
						DurationSeconds: 900, STSURL: sts.srv.URL}}})
			tok, err := e.m.Token(context.Background(), c)
			if e.record(err) != nil {
				t.Fatal(err)
			}
			if got := tok.Lifetime(); got != tt.want {
				t.Errorf("temporary credentials kept for %v, want %v", got, tt.want)
			}
		})
	}
}

// TestJWTAccessTokenLifetimeUnderClockSkew: without expires_in, a JWT
// access token's lifetime comes from its exp; when it has an iat too, the
// lifetime is at most exp - iat (the issuer's clock ahead of connmgr's
// does not make it live longer), and an exp already past on connmgr's
// clock (connmgr's clock ahead) is exp - iat rather than the default.
func TestJWTAccessTokenLifetimeUnderClockSkew(t *testing.T) {
	const defaultTTL = 45 * time.Minute
	e := newTokenEnv(t, storetest.SQLite, func(cfg *security.ManagerConfig) { cfg.DefaultTTL = defaultTTL })
	var access string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer"}`, access)
	}))
	t.Cleanup(srv.Close)
	for i, tt := range []struct {
		name  string
		skew  time.Duration // the issuer's clock minus connmgr's
		noIat bool
		want  time.Duration
	}{
		{name: "clocks agree", want: 5 * time.Minute},
		{name: "issuer 10m ahead", skew: 10 * time.Minute, want: 5 * time.Minute},
		{name: "issuer 10m behind", skew: -10 * time.Minute, want: 5 * time.Minute},
		{name: "issuer 10m behind, no iat", skew: -10 * time.Minute, noIat: true, want: defaultTTL},
		{name: "issuer 2m behind, no iat", skew: -2 * time.Minute, noIat: true, want: 3 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := e.at(t)
			iat := e.clock.Now().Add(tt.skew)
			claims := jwt.MapClaims{"sub": "svc", "exp": iat.Add(5 * time.Minute).Unix()}
			if !tt.noIat {
				claims["iat"] = iat.Unix()
			}
			access = jwtToken(t, jwt.SigningMethodHS256, []byte("k"), claims)
			e.secret(access)
			c := e.create(clientCredentials(fmt.Sprintf("Conn_JWT_Access_%d", i), srv.URL+"/token", fmt.Sprintf("jwt-access-%d", i)))
			tok, err := e.m.Token(context.Background(), c)
			if e.record(err) != nil {
				t.Fatal(err)
			}
			if got := tok.Lifetime(); got != tt.want {
				t.Errorf("lifetime %v, want %v", got, tt.want)
			}
		})
	}
}
