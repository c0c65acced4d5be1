package connections

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/connmgr/connmgr/outbound"
)

// validate checks the TLS settings with the rules of the transport that
// uses them (outbound.TLS.Validate): PEM certificates and nothing else in
// the certificate fields, a client key that matches the client
// certificate and is not encrypted, a certificate for client
// authentication that is valid now, a server name that is a host name.
// One set of rules, so that what is accepted here is what the transport
// can use.
func (t *TLS) validate(v *Checker) {
	before := v.Count() // the checker holds the other fields' errors too
	v.Secret("clientKeyPem", t.ClientKeyPEM, false)
	// The API's limit on a CA bundle (openapi.yaml) is below the
	// transport's.
	if len(t.CACertificatesPEM) > 4*MaxSecretLen {
		v.Add("caCertificatesPem", "must be at most %d bytes", 4*MaxSecretLen)
	}
	if v.Count() > before {
		return
	}
	ot := &outbound.TLS{ClientCertificatePEM: t.ClientCertificatePEM, ClientKeyPEM: t.ClientKeyPEM.Reveal(),
		CACertificatesPEM: t.CACertificatesPEM, ServerName: t.ServerName}
	var errs outbound.FieldErrors
	if errors.As(ot.Validate(time.Now()), &errs) {
		for _, e := range errs {
			v.Add(strings.TrimPrefix(e.Field, "tls."), "%s", e.Reason)
		}
	}
}

// CarrySecrets prepares c, the replacement of old, for validation and
// storage: c keeps the identity and bookkeeping of old, and each secret
// that c leaves unset is copied from old when c's policy has a field for
// it and uses it. It returns the paths of the copied secrets.
func CarrySecrets(old, c *Connection) (carried []string) {
	c.ID, c.CreatedAt, c.CreatedBy = old.ID, old.CreatedAt, old.CreatedBy
	c.Status, c.StatusReason, c.StatusSince, c.LastTest = old.Status, old.StatusReason, old.StatusSince, old.LastTest
	c.Fingerprint = old.Fingerprint
	var unused []string
	if u, ok := c.Security.(UnusedSecrets); ok {
		unused = u.UnusedSecrets()
	}
	for _, r := range old.AllSecrets() {
		if !r.Value().IsSet() || slices.Contains(unused, r.Path) {
			continue
		}
		if e, ok := c.Security.(SecretEntries); ok && !e.HasSecretEntry(r.Path) {
			continue // an entry of a map of secrets that was left out
		}
		if strings.HasPrefix(r.Path, "tls.") && c.TLS == nil {
			continue // the TLS settings were removed
		}
		nr, ok := c.SecretAt(r.Path)
		if !ok || nr.Value().IsSet() {
			continue
		}
		nr.Set(r.Value())
		carried = append(carried, r.Path)
	}
	if c.TLS != nil && *c.TLS == (TLS{}) {
		c.TLS = nil
	}
	return carried
}

// CheckDestinations enforces that a credential never goes where it was not
// entered for: each secret carried from old (not sent again with c) must
// go, on c, only to origins (scheme, host and port) it already went to on
// old. Switching a policy can give a secret new destinations too: a
// password entered for the token endpoint of OAUTH2_PASSWORD goes to the
// API itself with BASIC.
func CheckDestinations(old, c *Connection, carried []string) error {
	var errs ValidationErrors
	for _, path := range carried {
		nr, _ := c.SecretAt(path)
		or, _ := old.SecretAt(path)
		was, now := old.Destinations(or.Dests), c.Destinations(nr.Dests)
		for _, o := range now {
			if slices.Contains(was, o) {
				continue
			}
			from := "nowhere"
			if len(was) > 0 {
				from = strings.Join(was, ", ")
			}
			errs = append(errs, &ValidationError{secretField(path), fmt.Sprintf(
				"would now be sent to %s, but was entered for %s: send it again to confirm it may go there", o, from)})
			break
		}
	}
	if _, ok := c.Security.(Minter); ok && len(carried) > 0 && Origin(c.BaseURL) != Origin(old.BaseURL) {
		errs = append(errs, &ValidationError{"baseUrl", fmt.Sprintf(
			"origin changed from %s to %s: tokens obtained with the stored secrets would go there; send the secrets (%s) again to confirm",
			Origin(old.BaseURL), Origin(c.BaseURL), strings.Join(carried, ", "))})
	}
	if len(errs) == 0 {
		return nil
	}
	slices.SortFunc(errs, func(a, b *ValidationError) int { return strings.Compare(a.Field, b.Field) })
	return errs
}

// secretField is the API field path of a secret path.
func secretField(path string) string {
	if strings.HasPrefix(path, "tls.") {
		return path
	}
	return "security." + path
}

// SecretField returns the API field path ("security.clientSecret",
// "tls.clientKeyPem") of a secret path as AllSecrets reports it.
func SecretField(path string) string { return secretField(path) }

// credentialMaterial is what a connection's credentials depend on: the
// base URL, the policy with every setting and secret, and the TLS
// settings. Secrets go in as values: it is only ever hashed with a key.
func credentialMaterial(c *Connection) []byte {
	type secret struct{ Path, Value string }
	var secrets []secret
	for _, r := range c.AllSecrets() {
		if r.Value().IsSet() {
			secrets = append(secrets, secret{r.Path, r.Value().Reveal()})
		}
	}
	var tlsFields map[string]string
	if c.TLS != nil {
		tlsFields = FieldValues(c.TLS)
	}
	b, err := json.Marshal(struct {
		BaseURL string
		Policy  Policy
		Fields  map[string]string
		TLS     map[string]string
		Secrets []secret
	}{c.BaseURL, c.Policy(), FieldValues(c.Security), tlsFields, secrets})
	if err != nil {
		panic(err) // plain data only
	}
	return b
}

// Fingerprinter computes connection fingerprints with a key that key
// rotation does not change, so that a stored fingerprint stays valid.
type Fingerprinter struct{ key []byte }

// NewFingerprinter returns a Fingerprinter with key.
func NewFingerprinter(key []byte) *Fingerprinter { return &Fingerprinter{key: key} }

// Of returns c's fingerprint: HMAC-SHA256 of its credential configuration.
func (f *Fingerprinter) Of(c *Connection) string {
	mac := hmac.New(sha256.New, f.key)
	mac.Write(credentialMaterial(c))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:18])
}

// InitialStatus is the status of a newly created or reconfigured
// connection: NEEDS_CONSENT for consent policies, else DRAFT.
func InitialStatus(s Security) Status {
	if p, ok := s.(ConsentPolicy); ok && p.ConsentRequired() {
		return StatusNeedsConsent
	}
	return StatusDraft
}
