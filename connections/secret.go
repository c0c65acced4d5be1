package connections

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// Mask is what connmgr shows in place of a secret that is set.
const Mask = "********"

// Secret holds a credential value (password, client secret, API key, private
// key, token). Every way of printing it — String, GoString, Format with any
// verb, JSON, text and slog — shows Mask instead of the value, so a secret
// cannot leak through a log line or a %+v of a struct that holds one. The
// value is read only through Reveal.
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Reveal returns the plaintext. Call it only where the value is sent to the
// party it was entered for, or encrypted.
func (s Secret) Reveal() string { return s.v }

// IsSet reports whether the secret holds a value.
func (s Secret) IsSet() bool { return s.v != "" }

// Equal reports whether s and o hold the same value.
func (s Secret) Equal(o Secret) bool { return s.v == o.v }

// String returns Mask when the secret is set and "" otherwise.
func (s Secret) String() string {
	if s.v == "" {
		return ""
	}
	return Mask
}

// GoString redacts like String.
func (s Secret) GoString() string { return fmt.Sprintf("connections.Secret(%q)", s.String()) }

// Format redacts for every verb.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalJSON redacts like String.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText redacts like String.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue redacts like String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
