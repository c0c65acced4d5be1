package connections_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// doc is a document declaring c with labels.
func doc(c *connections.Connection, labels map[string]string) connections.Document {
	c = c.Clone()
	if labels == nil {
		labels = map[string]string{}
	}
	c.Labels = labels
	return connections.Document{Connection: c}
}

// actions summarises a plan as "name:action" in plan order.
func actions(p *connections.Plan) []string {
	var out []string
	for _, it := range p.Items {
		out = append(out, it.Name+":"+string(it.Action))
	}
	return out
}

func version(t *testing.T, svc *connections.Service, name string) int64 {
	t.Helper()
	c, err := svc.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return c.Version
}

// TestApply: create, unchanged on a second apply (versions kept), update
// with a field diff and secrets as changed/unchanged only, dry runs that
// write nothing, prune by selector and prefix.
func TestApply(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, _ := newService(env)
		orders := newConn("Conn_REST_Orders_Invoke_OAuth", security.PolicyClientCredentials)
		billing := newConn("Conn_REST_Billing_Invoke_Basic", security.PolicyBasic)
		other := newConn("Other_Team", security.PolicyNone)
		team := map[string]string{"team": "orders"}
		docs := []connections.Document{doc(orders, team), doc(billing, team)}
		if err := svc.Create(ctx, "someone", other.Clone()); err != nil {
			t.Fatal(err)
		}

		plan, err := svc.Apply(ctx, "ci", docs, connections.ApplyOptions{DryRun: true})
		if err != nil {
			t.Fatalf("dry run: %v", err)
		}
		if got, want := actions(plan), []string{orders.Name + ":create", billing.Name + ":create"}; !slices.Equal(got, want) {
			t.Fatalf("dry run plan = %v, want %v", got, want)
		}
		if _, err := svc.Get(ctx, orders.Name); !errors.Is(err, connections.ErrNotFound) {
			t.Fatalf("a dry run created %s (Get: %v)", orders.Name, err)
		}
		if !slices.ContainsFunc(plan.Items[0].Changes, func(c connections.FieldChange) bool {
			return c.Field == "spec.security.clientSecret" && c.Secret && c.Change == connections.SecretSet && c.New == ""
		}) {
			t.Errorf("the create of %s does not list its secret as set: %+v", orders.Name, plan.Items[0].Changes)
		}

		if _, err := svc.Apply(ctx, "ci", docs, connections.ApplyOptions{}); err != nil {
			t.Fatalf("apply: %v", err)
		}
		stored, err := svc.Get(ctx, orders.Name)
		if err != nil || stored.Labels["team"] != "orders" || stored.CreatedBy != "ci" {
			t.Fatalf("after apply, %s = %+v (%v), want it created by ci with label team=orders", orders.Name, stored, err)
		}
		v1, v2 := version(t, svc, orders.Name), version(t, svc, billing.Name)

		again, err := svc.Apply(ctx, "ci", docs, connections.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := actions(again), []string{orders.Name + ":unchanged", billing.Name + ":unchanged"}; !slices.Equal(got, want) {
			t.Errorf("second apply = %v, want %v", got, want)
		}
		if version(t, svc, orders.Name) != v1 || version(t, svc, billing.Name) != v2 {
			t.Errorf("the second apply changed versions")
		}

		// A file that moves the API and rotates the password.
		moved := orders.Clone()
		moved.BaseURL = "https://api.example.com/v2"
		rotated := billing.Clone()
		sec[*security.Basic](t, rotated).Password = connections.NewSecret("new-password-value")
		changed := []connections.Document{doc(moved, team), doc(rotated, team)}
		dry, err := svc.Apply(ctx, "ci", changed, connections.ApplyOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			item int
			want connections.FieldChange
		}{
			{"field diff", 0, connections.FieldChange{Field: "spec.baseUrl", Old: "https://api.example.com/v1", New: "https://api.example.com/v2"}},
			{"secret sent again, same value", 0, connections.FieldChange{Field: "spec.security.clientSecret", Secret: true, Change: connections.SecretUnchanged}},
			{"secret rotated", 1, connections.FieldChange{Field: "spec.security.password", Secret: true, Change: connections.SecretChanged}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				it := dry.Items[tt.item]
				if it.Action != connections.ActionUpdate || !slices.Contains(it.Changes, tt.want) {
					t.Errorf("plan of %s = %s %+v, want update with %+v", it.Name, it.Action, it.Changes, tt.want)
				}
			})
		}
		if fmt.Sprintf("%+v", dry) != "" && strings.Contains(fmt.Sprintf("%+v", dry), "new-password-value") {
			t.Error("the plan shows a secret")
		}
		if version(t, svc, orders.Name) != v1 {
			t.Error("a dry run wrote")
		}
		applied, err := svc.Apply(ctx, "ci", changed, connections.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if applied.Items[0].Version != v1+1 || !applied.Items[0].Done {
			t.Errorf("update of %s: version %d done %v, want %d and done", orders.Name, applied.Items[0].Version, applied.Items[0].Done, v1+1)
		}

		// Prune: only what the selector (or prefix) covers, never other teams'.
		pruneTests := []struct {
			name string
			docs []connections.Document
			opts connections.ApplyOptions
			want []string
			err  string
		}{
			{"no scope", changed[:1], connections.ApplyOptions{Prune: true, DryRun: true}, nil, "prune"},
			{"bad selector", changed[:1], connections.ApplyOptions{Prune: true, DryRun: true, Selector: map[string]string{"bad key": "x"}}, nil, "selector.bad key"},
			{"selector", changed[:1], connections.ApplyOptions{Prune: true, DryRun: true, Selector: team},
				[]string{orders.Name + ":unchanged", billing.Name + ":delete"}, ""},
			{"prefix", changed[:1], connections.ApplyOptions{Prune: true, DryRun: true, Prefix: "Conn_REST_"},
				[]string{orders.Name + ":unchanged", billing.Name + ":delete"}, ""},
			{"selector of nobody", changed[:1], connections.ApplyOptions{Prune: true, DryRun: true, Selector: map[string]string{"team": "x"}},
				[]string{orders.Name + ":unchanged"}, ""},
			{"applied", changed[:1], connections.ApplyOptions{Prune: true, Selector: team},
				[]string{orders.Name + ":unchanged", billing.Name + ":delete"}, ""},
		}
		for _, tt := range pruneTests {
			t.Run("prune "+tt.name, func(t *testing.T) {
				p, err := svc.Apply(ctx, "ci", tt.docs, tt.opts)
				if tt.err != "" {
					if !slices.Contains(fields(err), tt.err) {
						t.Fatalf("Apply = %v, want an error on %s", err, tt.err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := actions(p); !slices.Equal(got, tt.want) {
					t.Errorf("plan = %v, want %v", got, tt.want)
				}
			})
		}
		if _, err := svc.Get(ctx, billing.Name); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("after prune, %s: %v, want it deleted", billing.Name, err)
		}
		if _, err := svc.Get(ctx, other.Name); err != nil {
			t.Errorf("prune deleted another team's %s: %v", other.Name, err)
		}
	})
}

// TestApplyRefusesWhole: one bad document, and nothing is written; each
// error names the document and field.
func TestApplyRefusesWhole(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, _ := newService(env)
		stored := newConn("Conn_Stored", security.PolicyClientCredentials)
		if err := svc.Create(ctx, "x", stored.Clone()); err != nil {
			t.Fatal(err)
		}
		good := newConn("Conn_Good", security.PolicyBasic)
		noSecret := newConn("Conn_NoSecret", security.PolicyBasic)
		sec[*security.Basic](t, noSecret).Password = connections.Secret{}
		badURL := newConn("Conn_BadURL", security.PolicyNone)
		badURL.BaseURL = "ftp://x"
		// The stored connection's token endpoint moves without its secret.
		moved := stored.Clone()
		client(t, moved).TokenURL = "https://evil.example.net/token"
		client(t, moved).ClientSecret = connections.Secret{}
		docs := []connections.Document{doc(good, nil), doc(noSecret, nil), doc(badURL, map[string]string{"ok": "yes", "-bad": "x"}),
			doc(moved, nil), doc(good, nil)}
		_, err := svc.Apply(ctx, "ci", docs, connections.ApplyOptions{})
		want := []string{"documents[1].spec.security.password", "documents[2].metadata.labels.-bad", "documents[2].spec.baseUrl",
			"documents[3].spec.security.clientSecret", "documents[4].metadata.name"}
		if got := fields(err); !slices.Equal(got, want) {
			t.Errorf("Apply errors on %v, want %v (%v)", got, want, err)
		}
		// A name that differs from a stored one only in case is refused
		// before anything is written, not when its create fails.
		recased := stored.Clone()
		recased.Name = strings.ToLower(stored.Name)
		_, err = svc.Apply(ctx, "ci", []connections.Document{doc(good, nil), doc(recased, nil)}, connections.ApplyOptions{})
		if got := fields(err); !slices.Equal(got, []string{"documents[1].metadata.name"}) {
			t.Errorf("Apply of %s = %v, want an error on documents[1].metadata.name", recased.Name, err)
		}
		if _, err := svc.Get(ctx, good.Name); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("a refused apply created %s", good.Name)
		}
		if c, _ := svc.Get(ctx, stored.Name); c.Version != 1 {
			t.Errorf("a refused apply changed %s", stored.Name)
		}
	})
}

// seeder records the refresh tokens Apply seeds.
type seeder struct{ got map[string]string }

func (s *seeder) SeedRefreshToken(_ context.Context, c *connections.Connection, rt connections.Secret) error {
	s.got[c.Name] = rt.Reveal()
	return nil
}

// TestApplyRefreshToken: an imported refresh token is stored for a new
// consent connection (which then no longer waits for consent), refused
// for other policies, and left alone for a connection that has consent.
func TestApplyRefreshToken(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		svc, _ := newService(env)
		s := &seeder{got: map[string]string{}}
		code := doc(newConn("Conn_Code", security.PolicyAuthorizationCode), nil)
		code.RefreshToken = connections.NewSecret("rt-imported")
		plan, err := svc.Apply(ctx, "ci", []connections.Document{code}, connections.ApplyOptions{Tokens: s})
		if err != nil {
			t.Fatal(err)
		}
		if !plan.Items[0].RefreshToken || s.got["Conn_Code"] != "rt-imported" {
			t.Errorf("refresh token of a created connection: planned %v, seeded %q", plan.Items[0].RefreshToken, s.got["Conn_Code"])
		}
		if c, _ := svc.Get(ctx, "Conn_Code"); c.Status != connections.StatusDraft {
			t.Errorf("status after the import = %s, want DRAFT (it has a refresh token to try)", c.Status)
		}
		if err := svc.SetStatus(ctx, mustGet(t, svc, "Conn_Code"), connections.StatusConfigured, "", nil); err != nil {
			t.Fatal(err)
		}
		delete(s.got, "Conn_Code")
		plan, err = svc.Apply(ctx, "ci", []connections.Document{code}, connections.ApplyOptions{Tokens: s})
		if err != nil || plan.Items[0].Action != connections.ActionUnchanged || len(s.got) != 0 {
			t.Errorf("again on a configured connection: %v %v, seeded %v; want unchanged and no seeding", err, actions(plan), s.got)
		}
		basic := doc(newConn("Conn_Basic", security.PolicyBasic), nil)
		basic.RefreshToken = connections.NewSecret("rt")
		_, err = svc.Apply(ctx, "ci", []connections.Document{basic}, connections.ApplyOptions{Tokens: s})
		if !slices.Equal(fields(err), []string{"documents[0].spec.token.refreshToken"}) {
			t.Errorf("a refresh token for BASIC: %v, want an error on its field", err)
		}
		// The reason is the policy's, not a list that new consent policies
		// would make untrue.
		if err == nil || !strings.Contains(err.Error(), "BASIC") || strings.Contains(err.Error(), "OAUTH2_AUTHORIZATION_CODE") {
			t.Errorf("a refresh token for BASIC: %v, want a reason that names BASIC and no other policy", err)
		}
	})
}

func mustGet(t *testing.T, svc *connections.Service, name string) *connections.Connection {
	t.Helper()
	c, err := svc.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNameWarnings: a name of the convention's shape whose role or policy
// part disagrees gets a warning; other names none.
func TestNameWarnings(t *testing.T) {
	tests := []struct {
		name   string
		role   connections.Role
		policy connections.Policy
		want   []string
	}{
		{"Conn_REST_Orders_TriggerInvoke_OAuth", connections.RoleTriggerInvoke, security.PolicyClientCredentials, nil},
		{"Conn_REST_Orders_TriggerInvoke_OAuth", connections.RoleInvoke, security.PolicyClientCredentials, []string{connections.WarnNameRole}},
		{"Conn_REST_Orders_TriggerInvoke_OAuth", connections.RoleTriggerInvoke, security.PolicyBasic, []string{connections.WarnNamePolicy}},
		{"Conn_REST_Orders_Invoke_Basic", connections.RoleTrigger, security.PolicyAPIKey, []string{connections.WarnNameRole, connections.WarnNamePolicy}},
		{"conn_rest_orders_eu_west_invoke_apikey", connections.RoleInvoke, security.PolicyAPIKey, nil},
		{"Conn_REST_Orders_Invoke_APIKey", connections.RoleInvoke, security.PolicyNone, []string{connections.WarnNamePolicy}},
		{"Conn_REST_Orders_Invoke_NoAuth", connections.RoleInvoke, security.PolicyNone, nil},
		{"Conn_REST_Orders_Invoke_OAuth1", connections.RoleInvoke, security.PolicyClientCredentials, []string{connections.WarnNamePolicy}},
		{"Conn_REST_Orders_Invoke_AuthCode", connections.RoleInvoke, security.PolicyAuthorizationCode, nil},
		{"Conn_REST_Orders_Prod_Thing", connections.RoleInvoke, security.PolicyBasic, nil},
		{"Orders_Invoke_OAuth", connections.RoleTrigger, security.PolicyBasic, nil},
		{"Conn_REST_Invoke_OAuth", connections.RoleTrigger, security.PolicyBasic, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name+" "+string(tt.role)+" "+string(tt.policy), func(t *testing.T) {
			c := newConn(tt.name, tt.policy)
			c.Role = tt.role
			var got []string
			for _, w := range connections.NameWarnings(c) {
				got = append(got, w.Code)
				if !strings.Contains(w.Message, string(tt.role)) && !strings.Contains(w.Message, string(tt.policy)) {
					t.Errorf("warning %q does not say what the connection is", w.Message)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("NameWarnings(%s, %s, %s) = %v, want %v", tt.name, tt.role, tt.policy, got, tt.want)
			}
		})
	}
}
