package audit_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

func ptr[T any](v T) *T { return &v }

// full returns a connection with every comparable field set.
func full() *connections.Connection {
	return &connections.Connection{
		ID: 1, Name: "Conn_Full", Description: "Orders", Keywords: []string{"orders"}, Role: connections.RoleInvoke,
		BaseURL: "https://api.example.com/v2",
		Security: &security.AuthorizationCode{AuthorizationURL: "https://auth.example.com/authorize",
			Client: security.Client{TokenURL: "https://auth.example.com/token", ClientID: "client",
				ClientSecret: connections.NewSecret("cs"), Scopes: []string{"a"}, Audience: "aud",
				ExtraParams: map[string]string{"tenant": "r"}, ClientAuth: security.ClientAuthBasic,
				PrivateKeyPEM: connections.NewSecret("pem"), KeyID: "kid"},
			Issuer: "https://auth.example.com"},
		TLS: &connections.TLS{ClientCertificatePEM: "cert", ClientKeyPEM: connections.NewSecret("key"), CACertificatesPEM: "ca",
			ServerName: "api.internal"},
		Headers: map[string]string{"X-Api-Version": "2"}, ForwardHeaders: []string{"X-Trace"},
		Timeout: time.Second, TestRequest: &connections.TestRequest{Method: "GET", RelativeURI: "/health"},
		RateLimit: &connections.RateLimit{RequestsPerSecond: 1, Burst: 1}, MaxConcurrent: 2, RejectedStatuses: []int{401},
		Fingerprint: "fp", Status: connections.StatusConfigured, StatusReason: "", StatusSince: t0,
		Version: 3, CreatedAt: t0, UpdatedAt: t0, CreatedBy: "a", UpdatedBy: "b",
	}
}

// TestComparedFields fails when a field is added to Connection and the
// audit log does not say whether it changed. The fields of the security
// policies and of TLS come from their types (TestChangedPolicyFields).
func TestComparedFields(t *testing.T) {
	notCompared := map[string]bool{
		// Immutable, or kept by connmgr rather than set by a replace.
		"ID": true, "Name": true, "Fingerprint": true, "Status": true, "StatusReason": true, "StatusSince": true,
		"LastTest": true, "Version": true, "CreatedAt": true, "UpdatedAt": true, "CreatedBy": true, "UpdatedBy": true,
		// Compared field by field, from their types.
		"Security": true, "TLS": true,
	}
	var want []string
	for f := range reflect.TypeFor[connections.Connection]().Fields() {
		if !notCompared[f.Name] {
			want = append(want, f.Name)
		}
	}
	got := audit.ComparedFields()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("compared fields = %q\nwant %q", got, want)
	}
}

// mutate changes v to another value of its type.
func mutate(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Float64:
		v.SetFloat(v.Float() + 1)
	case reflect.Slice:
		grown := reflect.AppendSlice(reflect.MakeSlice(v.Type(), 0, v.Len()+1), v)
		elem := reflect.New(v.Type().Elem()).Elem()
		if v.Len() > 0 {
			elem.Set(v.Index(0))
		}
		mutate(elem)
		v.Set(reflect.Append(grown, elem))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, k := range v.MapKeys() {
			m.SetMapIndex(k, v.MapIndex(k))
		}
		m.SetMapIndex(reflect.ValueOf("added"), reflect.ValueOf("v"))
		v.Set(m)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(v.Elem())
		if e := p.Elem(); e.Kind() == reflect.Struct {
			mutate(e.Field(0))
		} else {
			mutate(e)
		}
		v.Set(p)
	default:
		panic("mutate: unexpected kind " + v.Kind().String())
	}
}

// TestChangedEachField changes one field at a time and checks that exactly
// its name is reported.
func TestChangedEachField(t *testing.T) {
	seen := map[string]string{}
	for _, goName := range audit.ComparedFields() {
		t.Run(goName, func(t *testing.T) {
			a, b := full(), full()
			v := reflect.ValueOf(b).Elem()
			for part := range strings.SplitSeq(goName, ".") {
				v = v.FieldByName(part)
			}
			mutate(v)
			got := audit.Changed(a, b)
			if len(got) != 1 {
				t.Fatalf("Changed(%s changed) = %q, want one name", goName, got)
			}
			if other, dup := seen[got[0]]; dup {
				t.Errorf("Changed(%s changed) = %q, as for %s", goName, got, other)
			}
			seen[got[0]] = goName
			if back := audit.Changed(b, a); !slices.Equal(back, got) {
				t.Errorf("Changed(b, a) = %q, want %q", back, got)
			}
		})
	}
}

// policyJSON returns the stored form of a policy with each field at path
// set to a value of its kind, the one at changed to another value.
func policyJSON(fields []security.Field, changed string) []byte {
	m := map[string]any{}
	for _, f := range fields {
		if f.Secret {
			continue
		}
		v := map[string]any{"string": "a", "boolean": true, "integer": 1, "number": 1.5, "array": []string{"a"},
			"object": map[string]string{"k": "a"}}[f.Kind]
		if f.Path == changed {
			v = map[string]any{"string": "b", "boolean": false, "integer": 2, "number": 2.5, "array": []string{"b"},
				"object": map[string]string{"k": "b"}}[f.Kind]
		}
		parts := strings.Split(f.Path, ".")
		at := m
		for _, p := range parts[:len(parts)-1] {
			if _, ok := at[p].(map[string]any); !ok {
				at[p] = map[string]any{}
			}
			at = at[p].(map[string]any)
		}
		at[parts[len(parts)-1]] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// TestChangedPolicyFields changes each non-secret field of each policy
// (as the registry describes them) and of the TLS settings alone: exactly
// its path is reported, so a field added to a policy is audited without
// another list to keep.
func TestChangedPolicyFields(t *testing.T) {
	for p, fields := range security.Describe() {
		for _, f := range fields {
			if f.Secret {
				continue
			}
			t.Run(string(p)+"/"+f.Path, func(t *testing.T) {
				a, b := full(), full()
				var err error
				if a.Security, err = security.Load(p, policyJSON(fields, "")); err != nil {
					t.Fatal(err)
				}
				if b.Security, err = security.Load(p, policyJSON(fields, f.Path)); err != nil {
					t.Fatal(err)
				}
				want := []string{"security." + f.Path}
				if got := audit.Changed(a, b); !slices.Equal(got, want) {
					t.Errorf("Changed(%s changed) = %q, want %q", f.Path, got, want)
				}
			})
		}
	}
	tlsFields := map[string]func(tls *connections.TLS){
		"tls.clientCertificatePem": func(tls *connections.TLS) { tls.ClientCertificatePEM += "x" },
		"tls.caCertificatesPem":    func(tls *connections.TLS) { tls.CACertificatesPEM = "" },
		"tls.serverName":           func(tls *connections.TLS) { tls.ServerName = "other.internal" },
	}
	for name, change := range tlsFields {
		t.Run(name, func(t *testing.T) {
			a, b := full(), full()
			change(b.TLS)
			if got, want := audit.Changed(a, b), []string{name}; !slices.Equal(got, want) {
				t.Errorf("Changed(%s changed) = %q, want %q", name, got, want)
			}
		})
	}
}

func TestChanged(t *testing.T) {
	client := func(c *connections.Connection) *security.Client {
		return &c.Security.(*security.AuthorizationCode).Client
	}
	tests := []struct {
		name   string
		change func(old, cur *connections.Connection)
		want   []string
	}{
		{"nothing", func(old, cur *connections.Connection) {}, []string{}},
		{"keywords nil and empty", func(old, cur *connections.Connection) { old.Keywords, cur.Keywords = []string{}, nil },
			[]string{}},
		{"headers nil and empty", func(old, cur *connections.Connection) { old.Headers, cur.Headers = map[string]string{}, nil },
			[]string{}},
		{"keyword order", func(old, cur *connections.Connection) {
			old.Keywords, cur.Keywords = []string{"a", "b"}, []string{"b", "a"}
		}, []string{"keywords"}},
		{"equal test request elsewhere", func(old, cur *connections.Connection) {
			cur.TestRequest = &connections.TestRequest{Method: "GET", RelativeURI: "/health"}
		}, []string{}},
		{"test request removed", func(old, cur *connections.Connection) { cur.TestRequest = nil }, []string{"testRequest"}},
		{"rate limit removed", func(old, cur *connections.Connection) { cur.RateLimit = nil }, []string{"rateLimit"}},
		{"burst", func(old, cur *connections.Connection) {
			cur.RateLimit = &connections.RateLimit{RequestsPerSecond: 1, Burst: 9}
		}, []string{"rateLimit"}},
		{"value prefix", func(old, cur *connections.Connection) {
			old.Security = &security.APIKey{Name: "X-Key", ValuePrefix: ptr("")}
			cur.Security = &security.APIKey{Name: "X-Key", ValuePrefix: ptr("Bearer ")}
		}, []string{"security.valuePrefix"}},
		{"header value", func(old, cur *connections.Connection) { cur.Headers = map[string]string{"X-Api-Version": "3"} },
			[]string{"headers"}},
		{"rejected statuses", func(old, cur *connections.Connection) { cur.RejectedStatuses = []int{401, 403} },
			[]string{"tokenRejectedStatuses"}},
		{"what connmgr keeps", func(old, cur *connections.Connection) {
			cur.ID, cur.Status, cur.Version, cur.CreatedBy, cur.UpdatedBy = 9, connections.StatusError, 9, "x", "y"
			cur.StatusReason, cur.StatusSince, cur.Fingerprint = "refused", t0.Add(time.Hour), "other"
			cur.CreatedAt, cur.UpdatedAt = t0.Add(time.Hour), t0.Add(time.Hour)
			cur.LastTest = &connections.TestResult{At: t0, Result: connections.TestFailure}
		}, []string{}},
		{"secrets only", func(old, cur *connections.Connection) {
			for _, r := range cur.AllSecrets() {
				r.Set(connections.NewSecret("other"))
			}
		}, []string{}},
		{"TLS removed", func(old, cur *connections.Connection) { cur.TLS = nil },
			[]string{"tls.caCertificatesPem", "tls.clientCertificatePem", "tls.serverName"}},
		{"policy switched", func(old, cur *connections.Connection) { cur.Security = &security.None{} },
			[]string{"security.audience", "security.authorizationUrl", "security.clientAuth", "security.clientId",
				"security.extraParams", "security.issuer", "security.keyId", "security.policy", "security.scopes", "security.tokenUrl"}},
		{"several, sorted", func(old, cur *connections.Connection) {
			client(cur).TokenURL, cur.Description, client(cur).Scopes = "https://auth.example.com/t2", "d", nil
			cur.Headers = map[string]string{"X-Api-Version": "2", "X-New": "1"}
			cur.BaseURL = "https://api2.example.com"
		}, []string{"baseUrl", "description", "headers", "security.scopes", "security.tokenUrl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, cur := full(), full()
			tt.change(old, cur)
			if got := audit.Changed(old, cur); !slices.Equal(got, tt.want) || got == nil {
				t.Errorf("Changed = %#v, want %#v", got, tt.want)
			}
		})
	}
}

// orders returns a client-credentials connection as a client would create
// it, with clientSecret set when secret is not "".
func orders(name, secret string) *connections.Connection {
	return &connections.Connection{Name: name, Description: "Orders API", Keywords: []string{"orders"},
		Role: connections.RoleInvoke, BaseURL: "https://api.example.com/v2",
		Security: &security.ClientCredentials{Client: security.Client{
			TokenURL: "https://auth.example.com/oauth2/token", ClientID: "orders-client",
			ClientSecret: connections.NewSecret(secret), Scopes: []string{"orders.read"}}},
		Headers: map[string]string{"X-Api-Version": "2"}}
}

// clientOf returns the OAuth client of a client-credentials connection.
func clientOf(c *connections.Connection) *security.Client {
	return &c.Security.(*security.ClientCredentials).Client
}

// changedOf returns the "changed" detail of a connection.updated event.
func changedOf(e audit.Event) []string {
	names := []string{}
	raw, _ := e.Detail["changed"].([]any)
	for _, n := range raw {
		s, _ := n.(string)
		names = append(names, s)
	}
	return names
}

// secretAt returns the value of c's secret at path.
func secretAt(c *connections.Connection, path string) string {
	r, _ := c.SecretAt(path)
	return r.Value().Reveal()
}

func TestConnectionChanged(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc := &connections.Service{Store: store.NewConnections(env.db, storetest.KeyRing(t)),
			Fingerprints: connections.NewFingerprinter(testKey),
			Observers:    []func(context.Context, connections.Change){env.log.ConnectionChanged}}
		fp := env.log.Fingerprint
		tests := []struct {
			name    string
			change  func(c *connections.Connection, created connections.Secret)
			changed []string
			secrets []string // "action field" of the secret events, in order
			reset   bool
		}{
			{name: "nothing", change: func(c *connections.Connection, _ connections.Secret) {}, changed: []string{}},
			{name: "only the secret", change: func(c *connections.Connection, _ connections.Secret) {
				clientOf(c).ClientSecret = connections.NewSecret(canary("clientSecret2"))
			}, changed: []string{}, secrets: []string{"secret.changed security.clientSecret"}, reset: true},
			{name: "only a header", change: func(c *connections.Connection, _ connections.Secret) { c.Headers["X-Tenant"] = "acme" },
				changed: []string{"headers"}},
			{name: "description and keywords", change: func(c *connections.Connection, _ connections.Secret) {
				c.Description, c.Keywords = "Orders API, production", []string{"orders", "finance"}
			}, changed: []string{"description", "keywords"}},
			{name: "scopes and token URL on the same host", change: func(c *connections.Connection, _ connections.Secret) {
				clientOf(c).Scopes = []string{"orders.read", "orders.write"}
				clientOf(c).TokenURL = "https://auth.example.com/oauth2/v2/token"
			}, changed: []string{"security.scopes", "security.tokenUrl"}, reset: true},
			{name: "new host, same secret re-sent", change: func(c *connections.Connection, created connections.Secret) {
				c.BaseURL = "https://orders.example.net/v2"
				clientOf(c).ClientSecret = created
			}, changed: []string{"baseUrl"}, reset: true},
			{name: "settings", change: func(c *connections.Connection, _ connections.Secret) {
				c.Timeout, c.MaxConcurrent, c.ForwardHeaders = 5*time.Second, 3, []string{"X-Trace"}
				c.RateLimit = &connections.RateLimit{RequestsPerSecond: 2}
				c.TestRequest = &connections.TestRequest{RelativeURI: "/health"}
			}, changed: []string{"forwardHeaders", "maxConcurrent", "rateLimit", "testRequest", "timeoutMs"}},
			{name: "role", change: func(c *connections.Connection, _ connections.Secret) { c.Role = connections.RoleTriggerInvoke },
				changed: []string{"role"}},
			{name: "policy switch to BASIC", change: func(c *connections.Connection, _ connections.Secret) {
				c.Security = &security.Basic{Username: "svc", Password: connections.NewSecret(canary("password"))}
			}, changed: []string{"security.clientAuth", "security.clientId", "security.policy", "security.scopes",
				"security.tokenUrl", "security.username"},
				secrets: []string{"secret.removed security.clientSecret", "secret.set security.password"}, reset: true},
			{name: "policy switch to API_KEY", change: func(c *connections.Connection, _ connections.Secret) {
				c.Security = &security.APIKey{Key: connections.NewSecret(canary("key"))}
			}, changed: []string{"security.clientAuth", "security.clientId", "security.in", "security.name",
				"security.policy", "security.scopes", "security.tokenUrl", "security.valuePrefix"},
				secrets: []string{"secret.removed security.clientSecret", "secret.set security.key"}, reset: true},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := "Conn_" + string(rune('A'+i))
				created := orders(name, canary("clientSecret"))
				if err := svc.Create(ctx, "alice", created); err != nil {
					t.Fatalf("Create = %v", err)
				}
				createdSecret := clientOf(created).ClientSecret
				upd := orders(name, "")
				tt.change(upd, createdSecret)
				if err := svc.Replace(audit.WithRequest(ctx, "bob", "req-"+name), "bob", nil, upd); err != nil {
					t.Fatalf("Replace = %v", err)
				}
				if err := svc.Delete(ctx, "carol", name, nil); err != nil {
					t.Fatalf("Delete = %v", err)
				}

				events := all(t, env.log, audit.Filter{Connection: name})
				wantActions := []string{audit.ActionConnectionCreated, audit.ActionSecretSet, audit.ActionConnectionUpdated}
				for _, s := range tt.secrets {
					wantActions = append(wantActions, strings.Fields(s)[0])
				}
				wantActions = append(wantActions, audit.ActionConnectionDeleted)
				if got := actions(events); !slices.Equal(got, wantActions) {
					t.Fatalf("actions = %q, want %q", got, wantActions)
				}
				summary := map[string]any{"role": "INVOKE", "policy": "OAUTH2_CLIENT_CREDENTIALS", "host": "api.example.com"}
				if e := events[0]; e.Actor != "alice" || !reflect.DeepEqual(e.Detail, summary) {
					t.Errorf("created event = %+v, want actor alice, detail %v", e, summary)
				}
				set := map[string]any{"field": "security.clientSecret", "fingerprint": fp(createdSecret.Reveal())}
				if e := events[1]; e.Actor != "alice" || !reflect.DeepEqual(e.Detail, set) {
					t.Errorf("secret.set event = %+v, want actor alice, detail %v", e, set)
				}
				updated := events[2]
				if got := changedOf(updated); updated.Actor != "bob" || updated.RequestID != "req-"+name ||
					!slices.Equal(got, tt.changed) || updated.Detail["credentialsReset"] != tt.reset {
					t.Errorf("updated event = %+v, want actor bob, request id req-%s, changed %q, credentialsReset %v",
						updated, name, tt.changed, tt.reset)
				}
				for j, s := range tt.secrets {
					e := events[3+j]
					field := strings.Fields(s)[1]
					sf := strings.TrimPrefix(field, "security.")
					want := map[string]any{"field": field}
					switch e.Action {
					case audit.ActionSecretSet:
						want["fingerprint"] = fp(secretAt(upd, sf))
					case audit.ActionSecretRemoved:
						want["oldFingerprint"] = fp(createdSecret.Reveal())
					case audit.ActionSecretChanged:
						want["oldFingerprint"] = fp(createdSecret.Reveal())
						want["fingerprint"] = fp(secretAt(upd, sf))
						if want["oldFingerprint"] == want["fingerprint"] {
							t.Errorf("secret.changed with equal fingerprints %v", want)
						}
					}
					if e.Actor != "bob" || !reflect.DeepEqual(e.Detail, want) {
						t.Errorf("event %s = %+v, want actor bob, detail %v", s, e, want)
					}
				}
				deleted := events[len(events)-1]
				if deleted.Actor != "carol" || deleted.Detail["role"] != string(upd.Role) ||
					deleted.Detail["policy"] != string(upd.Policy()) {
					t.Errorf("deleted event = %+v, want actor carol, role %s, policy %s", deleted, upd.Role, upd.Policy())
				}
			})
		}

		t.Run("fingerprints follow the value", func(t *testing.T) {
			const name = "Conn_Rotate"
			a, b := canary("a"), canary("b")
			for i, secret := range []string{a, b, b, a} {
				var err error
				if i == 0 {
					err = svc.Create(ctx, "alice", orders(name, secret))
				} else {
					err = svc.Replace(ctx, "alice", nil, orders(name, secret))
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			var fps [][2]any
			for _, e := range all(t, env.log, audit.Filter{Connection: name}) {
				switch e.Action {
				case audit.ActionSecretSet, audit.ActionSecretChanged:
					fps = append(fps, [2]any{e.Detail["oldFingerprint"], e.Detail["fingerprint"]})
				}
			}
			want := [][2]any{{nil, fp(a)}, {fp(a), fp(b)}, {fp(b), fp(a)}} // b re-sent unchanged: no event
			if !reflect.DeepEqual(fps, want) {
				t.Errorf("fingerprints (old, new) = %v, want %v", fps, want)
			}
		})

		t.Run("no secret in the log", func(t *testing.T) {
			values := storetest.TableText(t, env.db.DB, "audit_events")
			fingerprints := 0
			for _, v := range values {
				if strings.Contains(v, "canary-") {
					t.Errorf("audit_events holds a secret: %q", v)
				}
				fingerprints += strings.Count(v, "hmac-sha256:")
			}
			if fingerprints < len(tests) {
				t.Errorf("audit_events holds %d fingerprints in %d values, want at least %d", fingerprints, len(values), len(tests))
			}
		})
	})
}

func TestObservers(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		c := orders("Conn_Obs", "s")
		req := audit.WithRequest(context.Background(), "alice", "req-1")
		cancelled, cancel := context.WithCancel(req)
		cancel()
		tests := []struct {
			name    string
			observe func()
			want    audit.Event
		}{
			{"status", func() {
				env.log.StatusChanged(context.Background(), c, connections.StatusConfigured, connections.StatusError, "token endpoint: 503")
			}, audit.Event{Actor: audit.SystemActor, Action: audit.ActionStatusChanged, Connection: c.Name,
				Detail: map[string]any{"from": "CONFIGURED", "to": "ERROR", "detail": "token endpoint: 503"}}},
			{"token failed", func() { env.log.TokenFailed(context.Background(), c, "invalid_grant") },
				audit.Event{Actor: audit.SystemActor, Action: audit.ActionTokenRefreshFail, Connection: c.Name,
					Detail: map[string]any{"reason": "invalid_grant"}}},
			{"consent started", func() { env.log.Consent(req, c, audit.ActionConsentStarted, "") },
				audit.Event{Actor: "alice", RequestID: "req-1", Action: audit.ActionConsentStarted, Connection: c.Name,
					Detail: map[string]any{"detail": ""}}},
			{"consent failed", func() { env.log.Consent(req, c, audit.ActionConsentFailed, "access_denied") },
				audit.Event{Actor: "alice", RequestID: "req-1", Action: audit.ActionConsentFailed, Connection: c.Name,
					Detail: map[string]any{"detail": "access_denied"}}},
			{"consent finished", func() { env.log.Consent(req, c, audit.ActionConsentFinished, "token obtained") },
				audit.Event{Actor: "alice", RequestID: "req-1", Action: audit.ActionConsentFinished, Connection: c.Name,
					Detail: map[string]any{"detail": "token obtained"}}},
			{"tested", func() {
				env.log.Tested(req, c, &connections.TestResult{Result: connections.TestSuccess, Detail: "HTTP 200"})
			},
				audit.Event{Actor: "alice", RequestID: "req-1", Action: audit.ActionConnectionTested, Connection: c.Name,
					Detail: map[string]any{"result": "SUCCESS", "detail": "HTTP 200"}}},
			{"key created", func() { env.log.APIKey(req, audit.ActionAPIKeyCreated, "k-1", "ci", "developer") },
				audit.Event{Actor: "alice", RequestID: "req-1", Action: audit.ActionAPIKeyCreated,
					Detail: map[string]any{"id": "k-1", "name": "ci", "role": "developer"}}},
			{"key revoked", func() { env.log.APIKey(req, audit.ActionAPIKeyRevoked, "k-1", "ci", "developer") },
				audit.Event{Actor: "alice", RequestID: "req-1", Action: audit.ActionAPIKeyRevoked,
					Detail: map[string]any{"id": "k-1", "name": "ci", "role": "developer"}}},
			{"after the request was cancelled", func() {
				env.log.Tested(cancelled, c, &connections.TestResult{Result: connections.TestFailure, Detail: "HTTP 500"})
			},
				audit.Event{Actor: "alice", RequestID: "req-1", Action: audit.ActionConnectionTested, Connection: c.Name,
					Detail: map[string]any{"result": "FAILURE", "detail": "HTTP 500"}}},
			{"no connection", func() { env.log.TokenFailed(context.Background(), nil, "gone") },
				audit.Event{Actor: audit.SystemActor, Action: audit.ActionTokenRefreshFail,
					Detail: map[string]any{"reason": "gone"}}},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				env.clock.Set(t0.Add(time.Duration(i) * time.Second))
				tt.observe()
				got, _, err := env.log.List(context.Background(), audit.Filter{Limit: 1})
				if err != nil || len(got) != 1 {
					t.Fatalf("List = %v, %v", got, err)
				}
				tt.want.ID, tt.want.At = got[0].ID, env.clock.Now()
				if !reflect.DeepEqual(got[0], tt.want) {
					t.Errorf("recorded %+v\nwant     %+v", got[0], tt.want)
				}
			})
		}
		env.log.ConnectionChanged(context.Background(), connections.Change{})
		if n := len(all(t, env.log, audit.Filter{})); n != len(tests) {
			t.Errorf("log holds %d events after an empty change, want %d", n, len(tests))
		}
		if env.log.Failures() != 0 {
			t.Errorf("Failures() = %d, want 0", env.log.Failures())
		}
	})
}
