package security

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newRing returns a ring with one fresh key and the spec it was parsed from.
func newRing(t testing.TB, id string) (*KeyRing, string) {
	t.Helper()
	spec, err := GenerateKeySpec(id)
	if err != nil {
		t.Fatalf("GenerateKeySpec(%q): %v", id, err)
	}
	r, err := ParseKeyRing(spec)
	if err != nil {
		t.Fatalf("ParseKeyRing(%s): %v", id, err)
	}
	return r, spec
}

func TestKeyRingRoundTrip(t *testing.T) {
	ring, _ := newRing(t, "k1")
	big := make([]byte, 16<<10)
	_, _ = rand.Read(big)
	tests := []struct {
		name      string
		plaintext []byte
		ad        []byte
	}{
		{name: "empty", plaintext: []byte{}, ad: []byte("row/1/password")},
		{name: "text", plaintext: []byte("s3cret"), ad: []byte("row/1/password")},
		{name: "binary", plaintext: []byte{0, 1, 2, 255}, ad: nil},
		{name: "16KiB", plaintext: big, ad: []byte("row/2/privateKeyPem")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, err := ring.Seal(tt.plaintext, tt.ad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(tt.plaintext) > 3 && bytes.Contains(ct, tt.plaintext) {
				t.Errorf("Seal(%q) contains the plaintext", tt.plaintext)
			}
			if id, ok := KeyID(ct); !ok || id != "k1" {
				t.Errorf("KeyID(ciphertext) = %q, %v, want k1, true", id, ok)
			}
			got, err := ring.Open(ct, tt.ad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open(Seal(%.20q)) = %.20q", tt.plaintext, got)
			}
		})
	}
}

func TestKeyRingFreshNonce(t *testing.T) {
	ring, _ := newRing(t, "k1")
	ad := []byte("row/1/password")
	a, err := ring.Seal([]byte("same"), ad)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ring.Seal([]byte("same"), ad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatalf("two Seals of the same plaintext are equal: %x", a)
	}
	h := len(header("k1"))
	if bytes.Equal(a[h:h+12], b[h:h+12]) {
		t.Errorf("two Seals reuse the nonce %x", a[h:h+12])
	}
}

func TestKeyRingOpenFails(t *testing.T) {
	ring, _ := newRing(t, "k1")
	sameID, _ := newRing(t, "k1") // same id, other key
	ad := []byte("connmgr/connection/1/password")
	ct, err := ring.Seal([]byte("s3cret"), ad)
	if err != nil {
		t.Fatal(err)
	}
	type openCase struct {
		name string
		ring *KeyRing
		ct   []byte
		ad   []byte
	}
	tests := []openCase{
		{name: "other row", ring: ring, ct: ct, ad: []byte("connmgr/connection/2/password")},
		{name: "other field", ring: ring, ct: ct, ad: []byte("connmgr/connection/1/clientSecret")},
		{name: "no associated data", ring: ring, ct: ct, ad: nil},
		{name: "other key with the same id", ring: sameID, ct: ct, ad: ad},
		{name: "empty", ring: ring, ct: nil, ad: ad},
		{name: "header only", ring: ring, ct: ct[:len(header("k1"))], ad: ad},
		{name: "truncated", ring: ring, ct: ct[:len(ct)-1], ad: ad},
		{name: "extended", ring: ring, ct: append(bytes.Clone(ct), 0), ad: ad},
	}
	for i := range ct {
		tampered := bytes.Clone(ct)
		tampered[i] ^= 0x01
		tests = append(tests, openCase{name: fmt.Sprintf("tampered byte %d", i), ring: ring, ct: tampered, ad: ad})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := tt.ring.Open(tt.ct, tt.ad)
			if !errors.Is(err, ErrDecrypt) {
				t.Errorf("Open = %q, %v, want ErrDecrypt", pt, err)
			}
		})
	}
}

func TestKeyRingUnknownKey(t *testing.T) {
	old, oldSpec := newRing(t, "old-key")
	cur, curSpec := newRing(t, "current")
	ct, err := old.Seal([]byte("s3cret"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cur.Open(ct, []byte("ad"))
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Open(ciphertext of an unknown key) = %v, want ErrDecrypt", err)
	}
	if !strings.Contains(err.Error(), `"old-key"`) {
		t.Errorf("error %q does not name the key id old-key", err)
	}
	for _, spec := range []string{oldSpec, curSpec} {
		_, b64, _ := strings.Cut(spec, ":")
		key, _ := base64.StdEncoding.DecodeString(b64)
		if strings.Contains(err.Error(), b64) || strings.Contains(err.Error(), string(key)) {
			t.Errorf("error %q contains key material", err)
		}
	}
}

func TestKeyRingRotation(t *testing.T) {
	k1, spec1 := newRing(t, "k1")
	_, spec2 := newRing(t, "k2")
	rotated, err := ParseKeyRing(spec2 + "," + spec1)
	if err != nil {
		t.Fatal(err)
	}
	if got := rotated.Primary(); got != "k2" {
		t.Errorf("Primary() = %q, want k2", got)
	}
	old, _ := k1.Seal([]byte("s3cret"), []byte("ad"))
	if pt, err := rotated.Open(old, []byte("ad")); err != nil || string(pt) != "s3cret" {
		t.Errorf("rotated.Open(k1 ciphertext) = %q, %v, want s3cret", pt, err)
	}
	fresh, _ := rotated.Seal([]byte("s3cret"), []byte("ad"))
	tests := []struct {
		name string
		ct   []byte
		want bool
	}{
		{name: "sealed by k1", ct: old, want: true},
		{name: "sealed by k2", ct: fresh, want: false},
		{name: "malformed", ct: []byte{9}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rotated.Stale(tt.ct); got != tt.want {
				t.Errorf("Stale(%x) = %v, want %v", tt.ct, got, tt.want)
			}
		})
	}
}

func TestParseKeyRingErrors(t *testing.T) {
	key := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(0xA0 + i)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	valid := key(32)
	rawURL := base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	tests := []struct {
		name    string
		spec    string
		keyText string // must not appear in the error
	}{
		{name: "empty", spec: "", keyText: ""},
		{name: "no colon", spec: valid, keyText: valid},
		{name: "no id", spec: ":" + valid, keyText: valid},
		{name: "no key", spec: "k1:", keyText: ""},
		{name: "bad base64", spec: "k1:c2VjcmV0!!c2VjcmV0", keyText: "c2VjcmV0"},
		{name: "short key", spec: "k1:" + key(16), keyText: key(16)},
		{name: "long key", spec: "k1:" + key(33), keyText: key(33)},
		{name: "duplicate id", spec: "k1:" + valid + ",k1:" + valid, keyText: valid},
		{name: "bad id", spec: "k/1:" + valid, keyText: valid},
		{name: "key and id swapped", spec: valid + ":k1", keyText: valid},
		{name: "URL-safe key and id swapped", spec: rawURL + ":k1", keyText: rawURL},
		{name: "id too long", spec: strings.Repeat("k", 65) + ":" + valid, keyText: valid},
		{name: "empty second entry", spec: "k1:" + valid + ",", keyText: valid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseKeyRing(tt.spec)
			if err == nil {
				t.Fatalf("ParseKeyRing(%q) = %v, nil, want an error", tt.spec, r)
			}
			if tt.keyText != "" && strings.Contains(err.Error(), tt.keyText) {
				t.Errorf("ParseKeyRing(%q) error %q contains the key text", tt.spec, err)
			}
		})
	}
}

func TestParseKeyRingAccepts(t *testing.T) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	std := base64.StdEncoding.EncodeToString(raw)
	url := base64.RawURLEncoding.EncodeToString(raw)
	tests := []struct {
		name    string
		spec    string
		primary string
	}{
		{name: "standard base64", spec: "k1:" + std, primary: "k1"},
		{name: "raw URL base64", spec: "k1:" + url, primary: "k1"},
		{name: "two keys with spaces", spec: " k2:" + std + " , k1:" + url + " ", primary: "k2"},
		{name: "id characters", spec: "Key_2026.11-a:" + std, primary: "Key_2026.11-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseKeyRing(tt.spec)
			if err != nil {
				t.Fatalf("ParseKeyRing(%q) = %v", tt.name, err)
			}
			if got := r.Primary(); got != tt.primary {
				t.Errorf("Primary() = %q, want %q", got, tt.primary)
			}
		})
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "master.key")
	first, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateKeyFile(new) = %v, %v, want created", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %v, want 0600", mode)
	}
	second, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKeyFile(existing) = %v, %v, want loaded", created, err)
	}
	ct, _ := first.Seal([]byte("s3cret"), []byte("ad"))
	if pt, err := second.Open(ct, []byte("ad")); err != nil || string(pt) != "s3cret" {
		t.Errorf("reloaded ring Open = %q, %v, want the key that was created", pt, err)
	}

	corrupt := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(corrupt, []byte("k1:c2VjcmV0LWtleS10ZXh0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeyFile(corrupt); err == nil || strings.Contains(err.Error(), "c2VjcmV0LWtleS10ZXh0") {
		t.Errorf("LoadOrCreateKeyFile(short key) = %v, want an error without the key text", err)
	}
}

func TestDerive(t *testing.T) {
	ring, spec := newRing(t, "k1")
	again, _ := ParseKeyRing(spec)
	other, _ := newRing(t, "k1")
	a := ring.Derive("cursor")
	if len(a) != 32 {
		t.Errorf("len(Derive) = %d, want 32", len(a))
	}
	tests := []struct {
		name  string
		other []byte
		equal bool
	}{
		{name: "same ring, same label", other: ring.Derive("cursor"), equal: true},
		{name: "same key parsed again", other: again.Derive("cursor"), equal: true},
		{name: "other label", other: ring.Derive("state"), equal: false},
		{name: "other key", other: other.Derive("cursor"), equal: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bytes.Equal(a, tt.other); got != tt.equal {
				t.Errorf("Derive(cursor) == %x is %v, want %v", tt.other, got, tt.equal)
			}
		})
	}
}
