package keyring

// Sealing for another connmgr: connections as code carry secrets as
// "${sealed:...}" references that only the target environment's age
// identity (CONNMGR_IMPORT_IDENTITY) opens. Unlike the key ring, which
// protects secrets at rest inside one instance, these travel in files
// (git), so each one says what it was sealed for: the connection, the
// field, and the origins the secret may be sent to. The importer checks
// those, so a sealed value cannot be moved to another connection, field or
// host by whoever can edit the file.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"filippo.io/age"
)

// Errors of Open.
var (
	// ErrNotRecipient: the value was sealed for another recipient than the
	// identity that tried to open it.
	ErrNotRecipient = errors.New("sealed for another recipient")
	// ErrMalformedSealed: the text is not a sealed value connmgr wrote.
	ErrMalformedSealed = errors.New("not a valid sealed value")
)

// SealedPrefix starts every sealed reference; "}" ends it.
const SealedPrefix = "${sealed:"

// maxSealed bounds the text of one sealed reference (a secret is at most
// 64 KiB; base64 and age add about a third and a header).
const maxSealed = 128 << 10

// IsSealed reports whether s is a sealed reference ("${sealed:...}").
func IsSealed(s string) bool { return strings.HasPrefix(s, SealedPrefix) && strings.HasSuffix(s, "}") }

// Envelope is what a sealed reference holds: a secret value and what it
// was sealed for. Printing an Envelope never shows the value.
type Envelope struct {
	// Connection and Field name what the value was sealed for
	// ("Conn_REST_Orders", "security.clientSecret", or "refreshToken").
	Connection string `json:"connection"`
	Field      string `json:"field"`
	// Origins are the origins (scheme://host:port) the secret went to
	// where it was sealed; an importer sends it to no other.
	Origins []string `json:"origins,omitempty"`
	// Value is the secret.
	Value string `json:"value"`
}

// String describes e without its value.
func (e Envelope) String() string {
	return fmt.Sprintf("sealed %s of %s for %s", e.Field, e.Connection, strings.Join(e.Origins, ", "))
}

// GoString redacts like String.
func (e Envelope) GoString() string { return e.String() }

// Format redacts like String, for every verb.
func (e Envelope) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, e.String()) }

// LogValue redacts like String.
func (e Envelope) LogValue() slog.Value { return slog.StringValue(e.String()) }

// Recipients seal values for the age recipients of a target environment.
type Recipients struct{ rs []age.Recipient }

// ParseRecipients reads age recipients ("age1..." or "age1pq1..."), one
// or more separated by commas, spaces or lines.
func ParseRecipients(s string) (*Recipients, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' })
	if len(fields) == 0 {
		return nil, errors.New("no age recipient given (want age1...)")
	}
	if len(fields) > 16 {
		return nil, errors.New("at most 16 age recipients")
	}
	rs, err := age.ParseRecipients(strings.NewReader(strings.Join(fields, "\n")))
	if err != nil {
		if strings.HasPrefix(strings.TrimSpace(s), "AGE-SECRET-KEY-") {
			// Never echo it: it is a private key.
			return nil, errors.New("that is an age identity (a private key), not a recipient: give its public key, age1...")
		}
		return nil, fmt.Errorf("not an age recipient (want age1...): %v", err)
	}
	return &Recipients{rs: rs}, nil
}

// Seal encrypts e for the recipients and returns the sealed reference,
// "${sealed:" + base64 of the age ciphertext + "}".
func (r *Recipients) Seal(e Envelope) (string, error) {
	plain, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r.rs...)
	if err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	if err := w.Close(); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	return SealedPrefix + base64.RawStdEncoding.EncodeToString(buf.Bytes()) + "}", nil
}

// Identity opens sealed references with age identities (private keys).
type Identity struct{ ids []age.Identity }

// ParseIdentity reads age identities as an identity file holds them:
// "AGE-SECRET-KEY-1..." lines, "#" comments. Errors never quote the text.
func ParseIdentity(text string) (*Identity, error) {
	ids, err := age.ParseIdentities(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("not an age identity: %v", err)
	}
	return &Identity{ids: ids}, nil
}

// LoadIdentity reads CONNMGR_IMPORT_IDENTITY: the identity itself
// ("AGE-SECRET-KEY-1...") or the path of a file holding it, which must not
// be readable by group or others.
func LoadIdentity(v string) (*Identity, error) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "AGE-SECRET-KEY-") {
		return ParseIdentity(v)
	}
	info, err := os.Stat(v)
	if err != nil {
		return nil, fmt.Errorf("want an age identity (AGE-SECRET-KEY-1...) or the path of a file holding one: %v", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by group or others (mode %v); chmod 600 it", v, info.Mode().Perm())
	}
	if info.Size() > 1<<20 {
		return nil, fmt.Errorf("%s is larger than 1 MiB: not an identity file", v)
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, err
	}
	id, err := ParseIdentity(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v, err)
	}
	return id, nil
}

// GenerateIdentity returns a new X25519 age identity and its recipient
// (public key).
func GenerateIdentity() (identity, recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", "", err
	}
	return id.String(), id.Recipient().String(), nil
}

// Recipients returns the public keys of the identity's X25519 and hybrid
// keys, the recipients an exporter seals for.
func (id *Identity) Recipients() []string {
	var out []string
	for _, i := range id.ids {
		switch k := i.(type) {
		case *age.X25519Identity:
			out = append(out, k.Recipient().String())
		case *age.HybridIdentity:
			out = append(out, k.Recipient().String())
		}
	}
	return out
}

// Open decrypts a sealed reference. It returns ErrNotRecipient when the
// value was sealed for someone else, ErrMalformedSealed when it is not a
// sealed value at all. The caller checks the envelope's connection, field
// and origins against where the value is used.
func (id *Identity) Open(ref string) (*Envelope, error) {
	if !IsSealed(ref) || len(ref) > maxSealed {
		return nil, ErrMalformedSealed
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(ref, SealedPrefix), "}"))
	if err != nil {
		// Tolerate padding, as other tools write it.
		if raw, err = base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(ref, SealedPrefix), "}")); err != nil {
			return nil, ErrMalformedSealed
		}
	}
	r, err := age.Decrypt(bytes.NewReader(raw), id.ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, ErrNotRecipient
		}
		return nil, ErrMalformedSealed
	}
	plain, err := io.ReadAll(io.LimitReader(r, maxSealed))
	if err != nil {
		return nil, ErrMalformedSealed
	}
	var e Envelope
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Field == "" || e.Connection == "" {
		return nil, ErrMalformedSealed
	}
	return &e, nil
}
