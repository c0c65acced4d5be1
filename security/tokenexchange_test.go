package security_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// tokenExchange returns a token exchange connection to tokenURL as op's
// client; subject is a connection name, or with prefix "token:" a fixed
// subject token.
func tokenExchange(name, tokenURL, subject string) *connections.Connection {
	p := &security.TokenExchange{Client: security.Client{TokenURL: tokenURL, ClientID: opClient,
		ClientSecret: connections.NewSecret(opSecret), Audience: "https://orders.example.com", Scopes: []string{"orders.read"}},
		RequestedTokenType: "urn:ietf:params:oauth:token-type:access_token", Resource: "https://orders.example.com/v1"}
	if tok, ok := strings.CutPrefix(subject, "token:"); ok {
		p.SubjectToken = connections.NewSecret(tok)
	} else {
		p.SubjectConnection = subject
	}
	return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: "https://orders.example.com/v1", Security: p}
}

func TestTokenExchangeValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *security.TokenExchange)
		field  string
	}{
		{name: "valid"},
		{name: "neither subject", change: func(p *security.TokenExchange) { p.SubjectConnection = "" }, field: "security.subjectToken"},
		{name: "both subjects", change: func(p *security.TokenExchange) { p.SubjectToken = connections.NewSecret(canary) },
			field: "security.subjectToken"},
		{name: "itself", change: func(p *security.TokenExchange) { p.SubjectConnection = "Conn_TE" },
			field: "security.subjectConnection"},
		{name: "not a name", change: func(p *security.TokenExchange) { p.SubjectConnection = "a b" }, field: "security.subjectConnection"},
		{name: "token type", change: func(p *security.TokenExchange) { p.SubjectTokenType = "a b" }, field: "security.subjectTokenType"},
		{name: "resource with fragment", change: func(p *security.TokenExchange) { p.Resource = "https://x/#f" },
			field: "security.resource"},
		{name: "resource relative", change: func(p *security.TokenExchange) { p.Resource = "/v1" }, field: "security.resource"},
		{name: "client id", change: func(p *security.TokenExchange) { p.ClientID = "" }, field: "security.clientId"},
		{name: "reserved extra param", change: func(p *security.TokenExchange) { p.ExtraParams = map[string]string{"subject_token": "x"} },
			field: "security.extraParams.subject_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tokenExchange("Conn_TE", "https://auth.example.com/token", "Conn_Subject")
			if tt.change != nil {
				tt.change(c.Security.(*security.TokenExchange))
			}
			got := validationErrors(c)
			if _, ok := got[tt.field]; tt.field != "" && !ok || tt.field == "" && len(got) > 0 {
				t.Errorf("Validate() = %v, want an error on %q", got, tt.field)
			}
		})
	}
	c := tokenExchange("Conn_TE", "https://auth.example.com/token", "Conn_Subject")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.Security.(*security.TokenExchange).SubjectTokenType; got != "urn:ietf:params:oauth:token-type:access_token" {
		t.Errorf("default subjectTokenType = %q", got)
	}
}

// TestTokenExchangeZitadel exchanges at zitadel's op the token of a JWT
// bearer connection (op's own access token) for another: the subject
// token is the subject connection's current one, also after it changed;
// a fixed subject token works too; BASIC_HEADER and CLIENT_SECRET_JWT
// authenticate the client; unusable subjects are clear errors.
func TestTokenExchangeZitadel(t *testing.T) {
	keys := newJWTKeys(t)
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		e.secret(pemBody(keys.rsaPEM))
		ctx := context.Background()
		p := newOPServer(t, e.clock.Now)
		p.addKey("svc-orders", "key-1", keys.rsaPub)
		subject := e.create(jwtBearer("Conn_Subject", p.TokenURL(), "svc-orders", p.issuer, keys.rsaPEM, ""))

		for _, auth := range []security.ClientAuth{security.ClientAuthBasic, security.ClientAuthSecretJWT} {
			t.Run(string(auth), func(t *testing.T) {
				e := e.at(t)
				c := tokenExchange("Conn_TE_"+string(auth), p.TokenURL(), subject.Name)
				c.Security.(*security.TokenExchange).ClientAuth = auth
				c = e.create(c)
				tok, err := e.m.Token(ctx, c)
				if e.record(err) != nil {
					t.Fatalf("Token() = %v", err)
				}
				sub, err := e.m.Token(ctx, subject)
				if e.record(err) != nil {
					t.Fatal(err)
				}
				r := p.last(t)
				want := map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
					"subject_token": sub.AccessToken.Reveal(), "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
					"requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
					"audience":             "https://orders.example.com", "resource": "https://orders.example.com/v1", "scope": "orders.read"}
				for k, v := range want {
					if got := r.Form.Get(k); got != v {
						t.Errorf("exchange %s = %.40q, want %.40q", k, got, v)
					}
				}
				wantAuth := map[security.ClientAuth]string{security.ClientAuthBasic: "basic", security.ClientAuthSecretJWT: "client_secret_jwt"}[auth]
				if r.Status != 200 || r.ClientAuth != wantAuth {
					t.Errorf("provider saw %s, want %s, answered 200", r, wantAuth)
				}
				if tok.AccessToken.Equal(sub.AccessToken) || tok.TokenType != "Bearer" {
					t.Errorf("exchanged token is the subject token or not Bearer (%q)", tok.TokenType)
				}

				// The subject's token changes: the next exchange sends the new one.
				newSub, err := e.m.Refresh(ctx, subject)
				if e.record(err) != nil {
					t.Fatal(err)
				}
				if _, err := e.m.Refresh(ctx, c); e.record(err) != nil {
					t.Fatal(err)
				}
				if got := p.last(t).Form.Get("subject_token"); got != newSub.AccessToken.Reveal() || newSub.AccessToken.Equal(sub.AccessToken) {
					t.Errorf("the exchange after the subject's refresh sent the old subject token")
				}
			})
		}

		t.Run("fixed subject token", func(t *testing.T) {
			e := e.at(t)
			sub, err := e.m.Token(ctx, subject)
			if e.record(err) != nil {
				t.Fatal(err)
			}
			c := e.create(tokenExchange("Conn_TE_Fixed", p.TokenURL(), "token:"+sub.AccessToken.Reveal()))
			if _, err := e.m.Token(ctx, c); e.record(err) != nil {
				t.Fatalf("Token() = %v", err)
			}
			if r := p.last(t); r.Status != 200 || r.Form.Get("subject_token") != sub.AccessToken.Reveal() {
				t.Errorf("provider saw %s, want the fixed subject token exchanged", r)
			}
		})

		t.Run("unusable subjects", func(t *testing.T) {
			e := e.at(t)
			e.create(tokenExchange("Conn_TE_A", p.TokenURL(), "Conn_TE_B"))
			e.create(tokenExchange("Conn_TE_B", p.TokenURL(), "Conn_TE_A"))
			// Created while its subject does not exist, so that only the
			// exchange can refuse it.
			e.create(tokenExchange("Conn_TE_Static", p.TokenURL(), "Conn_Basic"))
			e.create(&connections.Connection{Name: "Conn_Basic", Role: connections.RoleInvoke, BaseURL: "https://x.example.com",
				Security: &security.Basic{Username: "u", Password: connections.NewSecret(canary + "-pw")}})
			before := len(p.log())
			for _, tt := range []struct{ name, subject, reason string }{
				{"Conn_TE_A", "", "cycle: Conn_TE_A → Conn_TE_B → Conn_TE_A"},
				{"Conn_TE_Missing", "Conn_Nobody", `"Conn_Nobody" does not exist`},
				{"Conn_TE_Static", "", `"Conn_Basic" (policy BASIC) has no access token`},
			} {
				var c *connections.Connection
				if tt.subject != "" {
					c = e.create(tokenExchange(tt.name, p.TokenURL(), tt.subject))
				} else {
					c = e.get(tt.name)
				}
				_, err := e.m.Token(ctx, c)
				if te := tokenErr(t, e.record(err)); !strings.Contains(te.Reason, tt.reason) || !te.Permanent {
					t.Errorf("%s: TokenError = %+v, want permanent %q", tt.name, te, tt.reason)
				}
			}
			if got := len(p.log()); got != before {
				t.Errorf("%d token requests were made for unusable subjects", got-before)
			}
			err := e.svc.Create(ctx, "test", tokenExchange("Conn_TE_Self", p.TokenURL(), "Conn_TE_Self"))
			if err == nil || !strings.Contains(err.Error(), "security.subjectConnection") {
				t.Errorf("Create(naming itself) = %v, want 422 on security.subjectConnection", err)
			}
		})
	})
}

// TestTokenExchangeSubjectOrigin: a token exchange may not send another
// connection's token to a token URL that token does not already go to;
// else whoever may create a connection could collect any connection's
// token at a server of their own. A create or replace with the subject
// there is refused naming tokenUrl; an exchange whose subject came later
// is refused when it would send the token.
func TestTokenExchangeSubjectOrigin(t *testing.T) {
	keys := newJWTKeys(t)
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		e.secret(pemBody(keys.rsaPEM))
		ctx := context.Background()
		p := newOPServer(t, e.clock.Now)
		p.addKey("svc-orders", "key-1", keys.rsaPub)
		subject := e.create(jwtBearer("Conn_Subject", p.TokenURL(), "svc-orders", p.issuer, keys.rsaPEM, ""))
		var hits atomic.Int32
		collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			http.Error(w, "no", http.StatusTeapot)
		}))
		defer collector.Close()

		err := e.svc.Create(ctx, "test", tokenExchange("Conn_TE_Collector", collector.URL+"/token", subject.Name))
		if !hasField(err, "security.tokenUrl", "may not be sent") {
			t.Errorf("Create(a foreign tokenUrl) = %v, want a validation error on security.tokenUrl", err)
		}
		e.create(tokenExchange("Conn_TE_Moved", p.TokenURL(), subject.Name))
		err = e.svc.Replace(ctx, "test", nil, tokenExchange("Conn_TE_Moved", collector.URL+"/token", subject.Name))
		if !hasField(err, "security.tokenUrl", "may not be sent") {
			t.Errorf("Replace(a foreign tokenUrl) = %v, want a validation error on security.tokenUrl", err)
		}

		c := e.create(tokenExchange("Conn_TE_Collector", collector.URL+"/token", "Conn_Subject_Later"))
		e.create(jwtBearer("Conn_Subject_Later", p.TokenURL(), "svc-orders", p.issuer, keys.rsaPEM, ""))
		_, err = e.m.Token(ctx, c)
		e.record(err)
		if te := tokenErr(t, err); !strings.Contains(te.Reason, "may not be sent") || !te.Permanent {
			t.Errorf("Token() with a foreign tokenUrl = %v, want a permanent refusal naming where the subject token may go", err)
		}
		if n := hits.Load(); n != 0 {
			t.Errorf("the collector got %d requests, want none", n)
		}
	})
}

// TestTokenExchangeSubjectPolicy: only an access token is exchanged. AWS
// SigV4's token is its temporary credentials, secret access key included,
// and a BASIC connection has no token: as subjects they are refused on
// create, and at token time when they came later, before any request
// and without a secret in the reason.
func TestTokenExchangeSubjectPolicy(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		ctx := context.Background()
		sts := newFakeSTS(t, e.clock.Now)
		var hits atomic.Int32
		collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			http.Error(w, "no", http.StatusTeapot)
		}))
		defer collector.Close()
		// The exchange's token URL is the AWS connection's base URL's
		// origin, so that the origin rule lets it through.
		aws := func(name string) *connections.Connection {
			return &connections.Connection{Name: name, Role: connections.RoleInvoke, BaseURL: collector.URL,
				Security: &security.AWSSigV4{AccessKeyID: "AKIASTATIC", SecretAccessKey: connections.NewSecret(canary + "-static"),
					Region: "eu-west-1", Service: "execute-api", AssumeRole: &security.AssumeRole{RoleARN: "arn:aws:iam::123456789012:role/orders",
						STSURL: sts.srv.URL}}}
		}
		basic := &connections.Connection{Name: "Conn_Basic", Role: connections.RoleInvoke, BaseURL: collector.URL,
			Security: &security.Basic{Username: "u", Password: connections.NewSecret(canary + "-pw")}}
		e.create(aws("Conn_AWS"))
		e.create(basic)
		for _, subject := range []string{"Conn_AWS", "Conn_Basic"} {
			err := e.svc.Create(ctx, "test", tokenExchange("Conn_TE_"+subject, collector.URL+"/token", subject))
			if !hasField(err, "security.subjectConnection", "no access token") || strings.Contains(err.Error(), canary) {
				t.Errorf("Create(subject %s) = %v, want a validation error on security.subjectConnection", subject, err)
			}
		}

		c := e.create(tokenExchange("Conn_TE_Later", collector.URL+"/token", "Conn_AWS_Later"))
		e.create(aws("Conn_AWS_Later"))
		_, err := e.m.Token(ctx, c)
		e.record(err)
		te := tokenErr(t, err)
		if !strings.Contains(te.Reason, "(policy AWS_SIGV4) has no access token") || !te.Permanent || strings.Contains(te.Reason, canary) {
			t.Errorf("Token() of an AWS_SIGV4 subject = %+v, want a permanent refusal naming its policy", te)
		}
		if hits.Load() != 0 || sts.count() != 0 {
			t.Errorf("%d requests to the token URL, %d to STS; want none", hits.Load(), sts.count())
		}
	})
}

// hasField reports whether err is a validation error on field whose
// reason contains reason.
func hasField(err error, field, reason string) bool {
	var ves connections.ValidationErrors
	return errors.As(err, &ves) && slices.ContainsFunc(ves, func(ve *connections.ValidationError) bool {
		return ve.Field == field && strings.Contains(ve.Reason, reason)
	})
}

// TestTokenExchangeNotAnAccessToken: an issued token of type N_A (RFC 8693
// §2.2.1; servers differ in its case) is sent as a bearer token.
func TestTokenExchangeNotAnAccessToken(t *testing.T) {
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		e := newTokenEnv(t, engine)
		for i, typ := range []string{"N_A", "n_a"} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"access_token": "issued-%d", "token_type": %q, "expires_in": 300,
					"issued_token_type": "urn:ietf:params:oauth:token-type:jwt"}`, i, typ)
			}))
			defer srv.Close()
			c := e.create(tokenExchange(fmt.Sprintf("Conn_TE_NA_%d", i), srv.URL+"/token", "token:subject-token"))
			tok, err := e.m.Token(context.Background(), c)
			if err != nil || tok.TokenType != "Bearer" {
				t.Errorf("token_type %s: Token() = %+v, %v; want a bearer token", typ, tok, err)
			}
		}
	})
}
