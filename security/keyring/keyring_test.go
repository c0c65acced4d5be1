package keyring

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

func TestLoadOrCreateKeyFileMode(t *testing.T) {
	spec, err := GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	_, b64, _ := strings.Cut(spec, ":")
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o644, false},
		{0o604, false},
		{0o666, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			if err := os.WriteFile(path, []byte(spec+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			r, created, err := LoadOrCreateKeyFile(path)
			if tt.ok {
				if err != nil || created || r.Primary() != "k1" {
					t.Errorf("LoadOrCreateKeyFile(mode %04o) = %v, %v, %v, want the ring", tt.mode, r, created, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("LoadOrCreateKeyFile(mode %04o) = %v, want an error naming the file and the fix", tt.mode, err)
			}
			if err != nil && strings.Contains(err.Error(), b64) {
				t.Errorf("LoadOrCreateKeyFile error %q contains the key", err)
			}
		})
	}
}

func TestSealWith(t *testing.T) {
	_, spec1 := newRing(t, "k1")
	_, spec2 := newRing(t, "k2")
	ring, err := ParseKeyRing(spec2 + "," + spec1)
	if err != nil {
		t.Fatal(err)
	}
	if ids := ring.IDs(); strings.Join(ids, ",") != "k2,k1" {
		t.Errorf("IDs() = %q, want the primary first: k2, k1", ids)
	}
	ad := []byte("connmgr/key_check/k1")
	ct, err := ring.SealWith("k1", []byte("check"), ad)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := KeyID(ct); id != "k1" || !ring.Stale(ct) {
		t.Errorf("SealWith(k1): KeyID %q, Stale %v, want k1, true", id, ring.Stale(ct))
	}
	k1only, _ := ParseKeyRing(spec1)
	if pt, err := k1only.Open(ct, ad); err != nil || string(pt) != "check" {
		t.Errorf("Open(SealWith(k1)) with k1 alone = %q, %v, want check", pt, err)
	}
	if _, err := ring.SealWith("k3", []byte("check"), ad); err == nil {
		t.Errorf("SealWith(unknown id) = nil error, want an error")
	}
}

// TestDerive: derived keys depend on the secret and the label only, not
// on any encryption key, so that rotating keys keeps them (#8.11).
func TestDerive(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	a := Derive(secret, "cursor")
	if len(a) != 32 {
		t.Errorf("len(Derive) = %d, want 32", len(a))
	}
	tests := []struct {
		name  string
		other []byte
		equal bool
	}{
		{name: "same secret, same label", other: Derive(bytes.Clone(secret), "cursor"), equal: true},
		{name: "other label", other: Derive(secret, "state"), equal: false},
		{name: "other secret", other: Derive(bytes.Repeat([]byte{8}, 32), "cursor"), equal: false},
		{name: "label is not the secret", other: Derive([]byte("cursor"), string(secret)), equal: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bytes.Equal(a, tt.other); got != tt.equal {
				t.Errorf("Derive(secret, cursor) == %x is %v, want %v", tt.other, got, tt.equal)
			}
		})
	}
	if bytes.Contains(a, secret[:8]) {
		t.Errorf("Derive(secret, cursor) = %x holds the secret", a)
	}
}
