package security_test

import (
	"context"
	"fmt"
	"testing"
	"time"

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
