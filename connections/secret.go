package connections

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
)

// Mask is what connmgr shows in place of a secret that is set.
const Mask = "********"

// Secret holds a credential value (password, client secret, API key, private
// key, token). Every way of printing it — String, GoString, Format with any
// verb, JSON, text and slog — shows Mask instead of the value, so a secret
// cannot leak through a log line or a %+v of a struct that holds one. The
// value is read only through Reveal. The value sits behind a pointer, so
// even fmt's reflection on a Secret in an unexported field (where it cannot
// call these methods) prints an address, not the value.
type Secret struct{ p *string }

// NewSecret wraps s.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{p: &s}
}

// Reveal returns the plaintext. Call it only where the value is sent to the
// party it was entered for, or encrypted.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsSet reports whether the secret holds a value.
func (s Secret) IsSet() bool { return s.p != nil }

// Equal reports whether s and o hold the same value.
func (s Secret) Equal(o Secret) bool { return s.Reveal() == o.Reveal() }

// String returns Mask when the secret is set and "" otherwise.
func (s Secret) String() string {
	if s.p == nil {
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

// UnmarshalJSON reads a secret sent to the API: a JSON string, where ""
// and Mask mean "not given" (an update keeps the stored value), as does
// null.
func (s *Secret) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = Secret{}
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return &json.UnmarshalTypeError{Value: "non-string", Type: reflect.TypeFor[string]()}
	}
	if v == Mask {
		v = ""
	}
	*s = NewSecret(v)
	return nil
}

// MarshalText redacts like String.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue redacts like String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
