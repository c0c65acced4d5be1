// Package keyring encrypts connmgr's secrets at rest: AES-256-GCM under a
// ring of keys (CONNMGR_ENCRYPTION_KEYS) where the first key encrypts and
// every key decrypts, with the key id inside each ciphertext and associated
// data binding a ciphertext to the row and field it was written for.
package keyring

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ErrDecrypt means a ciphertext could not be decrypted: unknown key id,
// wrong key, tampered data, or associated data of another row or field.
var ErrDecrypt = errors.New("cannot decrypt secret")

// ciphertext format: version byte, key id length byte, key id, 12-byte
// nonce, AES-GCM sealed data. The version byte and key id are part of the
// associated data, so neither can be swapped.
const formatV1 = 1

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// KeyRing encrypts with its primary key and decrypts with any of its keys.
// It is safe for concurrent use.
type KeyRing struct {
	primary string
	keys    map[string]cipher.AEAD
}

// NewKeyRing returns a key ring whose first key encrypts. Each key must be
// 32 bytes (AES-256). Errors name keys by position, never by id: a
// malformed entry's id may be a misplaced key.
func NewKeyRing(ids []string, keys [][]byte) (*KeyRing, error) {
	if len(ids) == 0 || len(ids) != len(keys) {
		return nil, errors.New("need at least one key")
	}
	r := &KeyRing{primary: ids[0], keys: make(map[string]cipher.AEAD, len(ids))}
	for i, id := range ids {
		if !keyIDRE.MatchString(id) {
			return nil, fmt.Errorf("key %d: the id must be 1-64 letters, digits, '_', '.' or '-'", i+1)
		}
		if _, dup := r.keys[id]; dup {
			return nil, fmt.Errorf("key %d: the id of an earlier key appears again", i+1)
		}
		if len(keys[i]) != 32 {
			return nil, fmt.Errorf("key %d: must be 32 bytes (base64 of 32 random bytes), got %d", i+1, len(keys[i]))
		}
		block, err := aes.NewCipher(keys[i])
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		r.keys[id] = aead
	}
	return r, nil
}

// ParseKeyRing parses CONNMGR_ENCRYPTION_KEYS: "id1:base64key,id2:base64key".
// Errors never contain key material.
func ParseKeyRing(spec string) (*KeyRing, error) {
	var ids []string
	var keys [][]byte
	for i, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		id, b64, ok := strings.Cut(part, ":")
		if !ok || id == "" || b64 == "" {
			return nil, fmt.Errorf("entry %d: want id:base64key", i+1)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			if key, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(b64, "=")); err != nil {
				return nil, fmt.Errorf("entry %d: key is not valid base64", i+1)
			}
		}
		ids, keys = append(ids, id), append(keys, key)
	}
	return NewKeyRing(ids, keys)
}

// LoadOrCreateKeyFile reads a key ring spec from path, creating the file
// (mode 0600) with one fresh random key when it does not exist. created
// reports whether it did.
func LoadOrCreateKeyFile(path string) (r *KeyRing, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		spec, err := GenerateKeySpec("k1")
		if err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, err
		}
		if _, err := f.WriteString(spec + "\n"); err != nil {
			f.Close()
			return nil, false, err
		}
		if err := f.Close(); err != nil {
			return nil, false, err
		}
		r, err := ParseKeyRing(spec)
		return r, true, err
	}
	if err != nil {
		return nil, false, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("%s is readable by group or others (mode %04o): run chmod 600 on it", path, fi.Mode().Perm())
	}
	r, err = ParseKeyRing(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return r, false, nil
}

// GenerateKeySpec returns "id:base64key" with a fresh random 256-bit key.
func GenerateKeySpec(id string) (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return id + ":" + base64.StdEncoding.EncodeToString(key), nil
}

// Primary returns the id of the key that encrypts.
func (r *KeyRing) Primary() string { return r.primary }

func header(id string) []byte {
	return append([]byte{formatV1, byte(len(id))}, id...)
}

// Seal encrypts plaintext under the primary key with a fresh random nonce.
func (r *KeyRing) Seal(plaintext, additionalData []byte) ([]byte, error) {
	return r.SealWith(r.primary, plaintext, additionalData)
}

// Open decrypts a ciphertext made by Seal with the same additional data.
// It returns ErrDecrypt for anything else.
func (r *KeyRing) Open(ciphertext, additionalData []byte) ([]byte, error) {
	id, ok := KeyID(ciphertext)
	if !ok {
		return nil, fmt.Errorf("%w: malformed ciphertext", ErrDecrypt)
	}
	aead, ok := r.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: key %q is not in CONNMGR_ENCRYPTION_KEYS", ErrDecrypt, id)
	}
	h := ciphertext[:2+len(id)]
	rest := ciphertext[len(h):]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: malformed ciphertext", ErrDecrypt)
	}
	pt, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], append(bytes.Clone(h), additionalData...))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	return pt, nil
}

// KeyID returns the id of the key that sealed ciphertext.
func KeyID(ciphertext []byte) (string, bool) {
	if len(ciphertext) < 2 || ciphertext[0] != formatV1 || len(ciphertext) < 2+int(ciphertext[1]) {
		return "", false
	}
	return string(ciphertext[2 : 2+int(ciphertext[1])]), true
}

// Stale reports whether ciphertext was sealed by a key other than the
// primary one, so that rotation should re-encrypt it.
func (r *KeyRing) Stale(ciphertext []byte) bool {
	id, ok := KeyID(ciphertext)
	return !ok || id != r.primary
}

// IDs returns the ids of the ring's keys, the primary one first.
func (r *KeyRing) IDs() []string {
	ids := []string{r.primary}
	for id := range r.keys {
		if id != r.primary {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids[1:])
	return ids
}

// SealWith encrypts plaintext under the key with id, for key checks that
// prove a key can open what it sealed. Returns an error for an unknown id.
func (r *KeyRing) SealWith(id string, plaintext, additionalData []byte) ([]byte, error) {
	aead, ok := r.keys[id]
	if !ok {
		return nil, fmt.Errorf("key %q is not in the ring", id)
	}
	h := header(id)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append(bytes.Clone(h), nonce...)
	return aead.Seal(out, nonce, plaintext, append(h, additionalData...)), nil
}

// Derive returns a 32-byte key for label derived from secret with
// HMAC-SHA256. Derived keys (fingerprints, cursor signatures) come from a
// secret that key rotation does not change (the instance secret kept
// sealed in the database), so they stay the same across rotations.
func Derive(secret []byte, label string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("connmgr/derive/" + label))
	return mac.Sum(nil)
}
