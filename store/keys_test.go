package store_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// keyMaterial returns the base64 key and the raw key bytes of each
// "id:base64key" spec, which no error may contain.
func keyMaterial(specs ...string) []string {
	var out []string
	for _, spec := range specs {
		for part := range strings.SplitSeq(spec, ",") {
			_, b64, _ := strings.Cut(part, ":")
			raw, _ := base64.StdEncoding.DecodeString(b64)
			out = append(out, b64, string(raw))
		}
	}
	return out
}

// TestCheckKeys is #8.10: a process whose key ring cannot open what the
// database holds stops at start, naming the key id, never key material.
func TestCheckKeys(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		if has, err := store.HasSecrets(ctx, env.db); err != nil || has {
			t.Fatalf("HasSecrets(empty database) = %v, %v, want false", has, err)
		}
		if err := store.CheckKeys(ctx, env.db, env.ring); err != nil {
			t.Fatalf("CheckKeys(first start) = %v", err)
		}
		if n := storetest.Count(t, env.db.DB, "SELECT COUNT(*) FROM key_checks WHERE key_id = 'k1'"); n != 1 {
			t.Errorf("key_checks holds %d rows for k1 after the first start, want 1", n)
		}
		if err := env.conns.Create(ctx, sample("Conn_Secret", security.PolicyBasic)); err != nil {
			t.Fatal(err)
		}
		if has, err := store.HasSecrets(ctx, env.db); err != nil || !has {
			t.Fatalf("HasSecrets(with a secret) = %v, %v, want true", has, err)
		}

		_, otherK1 := newRing(t, "k1") // another replica's generated key
		_, k2 := newRing(t, "k2")
		tests := []struct {
			name   string
			spec   string
			wrong  string // the key id the error names; "" for success
			checks []string
		}{
			{name: "same ring again", spec: env.spec, checks: []string{"k1"}},
			{name: "other key, same id", spec: otherK1, wrong: "k1", checks: []string{"k1"}},
			{name: "other key first, same id", spec: k2 + "," + otherK1, wrong: "k1", checks: []string{"k1"}},
			{name: "missing the key the secrets use", spec: k2, wrong: "k1", checks: []string{"k1"}},
			{name: "an extra new key", spec: env.spec + "," + k2, checks: []string{"k1", "k2"}},
			{name: "the new key first", spec: k2 + "," + env.spec, checks: []string{"k1", "k2"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := store.CheckKeys(ctx, env.db, parseRing(t, tt.spec))
				switch {
				case tt.wrong == "" && err != nil:
					t.Fatalf("CheckKeys(%s) = %v, want nil", tt.name, err)
				case tt.wrong != "" && (!errors.Is(err, store.ErrWrongKeys) || !strings.Contains(err.Error(), `"`+tt.wrong+`"`)):
					t.Fatalf("CheckKeys(%s) = %v, want ErrWrongKeys naming key %q", tt.name, err, tt.wrong)
				}
				for _, m := range keyMaterial(tt.spec, env.spec) {
					if err != nil && strings.Contains(err.Error(), m) {
						t.Errorf("CheckKeys error %q contains key material", err)
					}
				}
				var ids []string
				if err := env.db.Raw("SELECT key_id FROM key_checks ORDER BY key_id").Scan(&ids).Error; err != nil {
					t.Fatal(err)
				}
				if strings.Join(ids, ",") != strings.Join(tt.checks, ",") {
					t.Errorf("key checks after CheckKeys(%s) = %q, want %q", tt.name, ids, tt.checks)
				}
			})
		}

		t.Run("after rotation the old key may go", func(t *testing.T) {
			rotated := parseRing(t, k2+","+env.spec)
			if _, err := store.Reseal(ctx, env.db, rotated); err != nil {
				t.Fatal(err)
			}
			if err := store.CheckKeys(ctx, env.db, parseRing(t, k2)); err != nil {
				t.Errorf("CheckKeys(k2 only) after Reseal to k2 = %v, want nil", err)
			}
			if err := store.CheckKeys(ctx, env.db, parseRing(t, env.spec)); !errors.Is(err, store.ErrWrongKeys) {
				t.Errorf("CheckKeys(k1 only) after Reseal to k2 = %v, want ErrWrongKeys", err)
			}
		})
	})
}

// TestCheckKeysBeforeKeyChecks: secrets sealed before key checks existed
// (a database migrated from an older version) are checked by opening one.
func TestCheckKeysBeforeKeyChecks(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		if err := env.conns.Create(ctx, sample("Conn_Secret", security.PolicyBasic)); err != nil {
			t.Fatal(err)
		}
		_, otherK1 := newRing(t, "k1")
		if err := store.CheckKeys(ctx, env.db, parseRing(t, otherK1)); !errors.Is(err, store.ErrWrongKeys) || !strings.Contains(err.Error(), `"k1"`) {
			t.Errorf("CheckKeys(other k1) = %v, want ErrWrongKeys naming k1", err)
		}
		if n := storetest.Count(t, env.db.DB, "SELECT COUNT(*) FROM key_checks"); n != 0 {
			t.Errorf("a refused CheckKeys recorded %d key checks, want 0", n)
		}
		if err := store.CheckKeys(ctx, env.db, env.ring); err != nil {
			t.Errorf("CheckKeys(the right ring) = %v", err)
		}
	})
}

// TestReseal: keys rotate re-encrypts every sealed column under the new
// primary key, safely repeatable, and everything reads back with the new
// key alone.
func TestReseal(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		var stored []*connections.Connection
		for _, c := range []*connections.Connection{
			fullConnection("Conn_Full"),
			sample("Conn_Basic", security.PolicyBasic),
			sample("Conn_None", security.PolicyNone),
			sample("Conn_Password", security.PolicyPassword),
		} {
			if err := env.conns.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
			stored = append(stored, c)
		}
		tok := saveToken(t, env, stored[0], stored[0].Fingerprint)
		pc := consent(stored[0], "state-reseal")
		if err := env.states.Create(ctx, pc); err != nil {
			t.Fatal(err)
		}
		instance, err := store.InstanceSecret(ctx, env.db, env.ring, "derive")
		if err != nil {
			t.Fatal(err)
		}
		secrets := len(secretRows(t, env.db.DB))
		if secrets != 3+1+2 {
			t.Fatalf("connection_secrets holds %d rows, want 6", secrets)
		}
		want := map[string]int{"connection_secrets.ciphertext": secrets, "tokens.access_token": 1, "tokens.refresh_token": 1,
			"oauth_states.verifier": 1, "instance_secrets.ciphertext": 1}

		_, spec2 := newRing(t, "k2")
		rotated := parseRing(t, spec2+","+env.spec)
		onlyK2 := parseRing(t, spec2)
		counts := func(cs []store.ResealCount) map[string]int {
			m := map[string]int{}
			for _, c := range cs {
				m[c.What] += c.N
			}
			return m
		}
		got, err := store.Reseal(ctx, env.db, rotated)
		if err != nil || !equalCounts(counts(got), want) {
			t.Fatalf("Reseal = %v, %v, want %v", got, err, want)
		}
		for key, ct := range secretRows(t, env.db.DB) {
			if id, _ := keyring.KeyID(ct); id != "k2" {
				t.Errorf("secret %s is sealed by key %q, want k2", key, id)
			}
		}
		for _, ring := range []struct {
			name string
			ring *keyring.KeyRing
		}{{"k2,k1", rotated}, {"k2 only", onlyK2}} {
			s := store.NewConnections(env.db, ring.ring)
			for _, want := range stored {
				got, err := s.Get(ctx, want.Name)
				if err != nil {
					t.Errorf("Get(%q) with ring %s = %v", want.Name, ring.name, err)
					continue
				}
				storetest.CheckSame(t, "Get("+want.Name+") with ring "+ring.name, got, want)
			}
		}
		if st, err := store.NewTokens(env.db, onlyK2).Load(ctx, stored[0].ID); err != nil || st.Token == nil ||
			!st.Token.AccessToken.Equal(tok.AccessToken) || !st.Token.RefreshToken.Equal(tok.RefreshToken) {
			t.Errorf("Load(token) with k2 only = %+v, %v, want the token saved under k1", st, err)
		}
		if got, err := store.NewConsentStates(env.db, onlyK2).Take(ctx, pc.StateHash, pc.CreatedAt); err != nil || !got.Verifier.Equal(pc.Verifier) {
			t.Errorf("Take(consent) with k2 only = %v, want the verifier sealed under k1", err)
		}
		if again, err := store.InstanceSecret(ctx, env.db, onlyK2, "derive"); err != nil || !bytes.Equal(again, instance) {
			t.Errorf("InstanceSecret with k2 only = %x, %v, want the one created under k1", again, err)
		}
		if got, err := store.Reseal(ctx, env.db, rotated); err != nil || !equalCounts(counts(got), nil) {
			t.Errorf("Reseal again = %v, %v, want nothing re-sealed", got, err)
		}

		// A replica still on the old key writes one more secret: the next
		// rotation picks up exactly that one.
		if err := env.conns.Create(ctx, sample("Conn_Late", security.PolicyBasic)); err != nil {
			t.Fatal(err)
		}
		late := map[string]int{"connection_secrets.ciphertext": 1}
		if got, err := store.Reseal(ctx, env.db, rotated); err != nil || !equalCounts(counts(got), late) {
			t.Errorf("Reseal after a write under k1 = %v, %v, want %v", got, err, late)
		}
	})
}

// equalCounts compares counts, a missing entry counting as 0.
func equalCounts(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// TestInstanceSecret is #8.11: what is derived from the instance secret
// (connection fingerprints, audit fingerprints, cursor keys) stays the
// same when keys rotate to a new primary key, and every replica gets the
// same secret.
func TestInstanceSecret(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		first, err := store.InstanceSecret(ctx, env.db, env.ring, "derive")
		if err != nil || len(first) != 32 {
			t.Fatalf("InstanceSecret = %x, %v, want 32 bytes", first, err)
		}
		other, err := store.InstanceSecret(ctx, env.db, env.ring, "other")
		if err != nil || bytes.Equal(other, first) {
			t.Errorf("InstanceSecret(other) = %x, %v, want another secret", other, err)
		}
		replica, err := store.InstanceSecret(ctx, env.db, parseRing(t, env.spec), "derive")
		if err != nil || !bytes.Equal(replica, first) {
			t.Errorf("InstanceSecret on a replica = %x, %v, want %x", replica, err, first)
		}
		if values := storetest.TableText(t, env.db.DB, "instance_secrets"); strings.Contains(strings.Join(values, " "), string(first)) {
			t.Errorf("instance_secrets holds the secret in clear")
		}
		_, otherK1 := newRing(t, "k1")
		if _, err := store.InstanceSecret(ctx, env.db, parseRing(t, otherK1), "derive"); !errors.Is(err, store.ErrWrongKeys) {
			t.Errorf("InstanceSecret with another k1 = %v, want ErrWrongKeys", err)
		}

		// What the wiring derives, before and after rotation.
		c := sample("Conn_Rotate", security.PolicyClientCredentials)
		secret := c.Security.(*security.ClientCredentials).ClientSecret.Reveal()
		derived := func(instance []byte) (fingerprint, auditFP string, cursor []byte) {
			events := store.NewAuditEvents(env.db)
			return connections.NewFingerprinter(keyring.Derive(instance, "fingerprint")).Of(c),
				audit.New(events, keyring.Derive(instance, "audit")).Fingerprint(secret), keyring.Derive(instance, "cursor")
		}
		fp, afp, cursor := derived(first)

		_, spec2 := newRing(t, "k2")
		if _, err := store.Reseal(ctx, env.db, parseRing(t, spec2+","+env.spec)); err != nil {
			t.Fatal(err)
		}
		for _, spec := range []string{spec2 + "," + env.spec, spec2} {
			after, err := store.InstanceSecret(ctx, env.db, parseRing(t, spec), "derive")
			if err != nil || !bytes.Equal(after, first) {
				t.Fatalf("InstanceSecret after Reseal to k2 = %x, %v, want %x", after, err, first)
			}
			fp2, afp2, cursor2 := derived(after)
			if fp2 != fp || afp2 != afp || !bytes.Equal(cursor2, cursor) {
				t.Errorf("after rotation: fingerprint %q, audit fingerprint %q, cursor key %x; want %q, %q, %x (unchanged)",
					fp2, afp2, cursor2, fp, afp, cursor)
			}
		}
	})
}

// TestLockDataDir is #8.12: a second serving process on the same SQLite
// data directory fails at start, naming the directory.
func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	unlock, err := store.LockDataDir(dir)
	if err != nil {
		t.Fatalf("LockDataDir(%q) = %v", dir, err)
	}
	tests := []struct {
		name string
		dir  string
		ok   bool
	}{
		{name: "same directory", dir: dir, ok: false},
		{name: "other directory", dir: t.TempDir(), ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := store.LockDataDir(tt.dir)
			if tt.ok {
				if err != nil {
					t.Fatalf("LockDataDir(%q) = %v, want the lock", tt.dir, err)
				}
				u()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.dir) {
				t.Errorf("second LockDataDir(%q) = %v, want an error naming the directory", tt.dir, err)
			}
		})
	}
	unlock()
	again, err := store.LockDataDir(dir)
	if err != nil {
		t.Fatalf("LockDataDir(%q) after unlock = %v, want the lock", dir, err)
	}
	again()
}
