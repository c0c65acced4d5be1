package keyring_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connmgr/connmgr/security/keyring"
)

func newIdentity(t *testing.T) (*keyring.Identity, string, string) {
	t.Helper()
	text, recipient, err := keyring.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := keyring.ParseIdentity(text)
	if err != nil {
		t.Fatal(err)
	}
	return id, text, recipient
}

// TestSealOpen: a value sealed for a recipient opens with its identity
// only, with what it was sealed for; anything else is refused by kind.
func TestSealOpen(t *testing.T) {
	target, _, recipient := newIdentity(t)
	other, _, otherRecipient := newIdentity(t)
	if got := target.Recipients(); len(got) != 1 || got[0] != recipient {
		t.Fatalf("Recipients() = %v, want [%s]", got, recipient)
	}
	rs, err := keyring.ParseRecipients(recipient)
	if err != nil {
		t.Fatal(err)
	}
	const canary = "CANARY-SEALED-VALUE-7"
	e := keyring.Envelope{Connection: "Conn_A", Field: "security.clientSecret",
		Origins: []string{"https://auth.example.com:443"}, Value: canary}
	sealed, err := rs.Seal(e)
	if err != nil {
		t.Fatal(err)
	}
	if !keyring.IsSealed(sealed) || strings.Contains(sealed, canary) || strings.ContainsAny(sealed, "\n ") {
		t.Fatalf("Seal = %.40q..., want one line ${sealed:...} without the value", sealed)
	}
	both, err := keyring.ParseRecipients(recipient + ", " + otherRecipient)
	if err != nil {
		t.Fatal(err)
	}
	sealedBoth, err := both.Seal(e)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   *keyring.Identity
		ref  string
		want error
	}{
		{"its identity", target, sealed, nil},
		{"another identity", other, sealed, keyring.ErrNotRecipient},
		{"sealed for two, opened by the second", other, sealedBoth, nil},
		{"not base64", target, "${sealed:!!!}", keyring.ErrMalformedSealed},
		{"not age", target, "${sealed:aGVsbG8}", keyring.ErrMalformedSealed},
		{"tampered", target, sealed[:len(sealed)-8] + "AAAAAAA}", keyring.ErrMalformedSealed},
		{"not a reference", target, "plain", keyring.ErrMalformedSealed},
		{"too long", target, keyring.SealedPrefix + strings.Repeat("A", 200<<10) + "}", keyring.ErrMalformedSealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.id.Open(tt.ref)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
			if tt.want != nil {
				return
			}
			if got.Value != canary || got.Connection != "Conn_A" || got.Field != "security.clientSecret" ||
				len(got.Origins) != 1 || got.Origins[0] != "https://auth.example.com:443" {
				t.Errorf("Open = %s (value %d bytes), want the envelope sealed", got, len(got.Value))
			}
		})
	}
	// Printing an envelope never shows the value.
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "envelope", e)
	for _, s := range []string{fmt.Sprint(e), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e), fmt.Sprintf("%v", &e), logged.String()} {
		if strings.Contains(s, canary) {
			t.Errorf("an envelope printed its value: %s", s)
		}
	}
}

// TestParseRecipients refuses what is not a recipient, and never echoes
// a private key given by mistake.
func TestParseRecipients(t *testing.T) {
	_, identity, _ := newIdentity(t)
	tests := []struct{ name, in string }{
		{"empty", " "},
		{"garbage", "hello"},
		{"an identity", identity},
		{"ssh", "ssh-ed25519 AAAA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := keyring.ParseRecipients(tt.in)
			if err == nil {
				t.Fatalf("ParseRecipients(%q) = nil error, want one", tt.name)
			}
			if strings.Contains(err.Error(), identity) || strings.Contains(err.Error(), "AGE-SECRET-KEY-1") {
				t.Errorf("ParseRecipients(%s) error quotes the key: %v", tt.name, err)
			}
		})
	}
}

// TestLoadIdentity reads CONNMGR_IMPORT_IDENTITY as the key or a file
// that only its owner may read.
func TestLoadIdentity(t *testing.T) {
	_, identity, recipient := newIdentity(t)
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, value string
		ok          bool
	}{
		{"the key", identity, true},
		{"a 0600 file", write("id.txt", "# created: now\n# public key: "+recipient+"\n"+identity+"\n", 0o600), true},
		{"a 0644 file", write("open.txt", identity+"\n", 0o644), false},
		{"no such file", filepath.Join(dir, "nope"), false},
		{"a file without a key", write("empty.txt", "# nothing\n", 0o600), false},
		{"a broken key", "AGE-SECRET-KEY-1XYZ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := keyring.LoadIdentity(tt.value)
			if (err == nil) != tt.ok {
				t.Fatalf("LoadIdentity(%s) = %v, want ok %v", tt.name, err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), identity) {
				t.Errorf("LoadIdentity(%s) error quotes the key", tt.name)
			}
			if tt.ok && id.Recipients()[0] != recipient {
				t.Errorf("LoadIdentity(%s) has recipient %v, want %s", tt.name, id.Recipients(), recipient)
			}
		})
	}
}
