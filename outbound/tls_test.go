package outbound_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/outbound"
)

func TestValidate(t *testing.T) {
	ca := newCA(t, "test CA")
	client := ca.issue(t, leaf{client: true})
	other := ca.issue(t, leaf{client: true})
	server := ca.issue(t, loopback) // for servers only
	expired := ca.issue(t, leaf{client: true, notBefore: -48 * time.Hour, notAfter: -24 * time.Hour})
	future := ca.issue(t, leaf{client: true, notBefore: 24 * time.Hour, notAfter: 48 * time.Hour})
	rsaKey := pemOf("RSA PRIVATE KEY", []byte("not DER"))
	const junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	type fe struct{ field, reason string }
	for _, tt := range []struct {
		name    string
		tls     *outbound.TLS
		want    []fe
		expired bool // whether the error wraps ErrCertificateExpired
	}{
		{name: "nil", tls: nil},
		{name: "zero", tls: &outbound.TLS{}},
		{name: "client certificate", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM, ClientKeyPEM: client.keyPEM}},
		{name: "with its chain", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM + ca.pem, ClientKeyPEM: client.keyPEM}},
		{name: "CAs only", tls: &outbound.TLS{CACertificatesPEM: ca.pem + newCA(t, "second").pem}},
		{name: "server name", tls: &outbound.TLS{ServerName: "api.internal.example"}},
		{name: "server name IPv6", tls: &outbound.TLS{ServerName: "2001:db8::1"}},
		{name: "certificate without key", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM},
			want: []fe{{"tls.clientKeyPem", "is required with tls.clientCertificatePem"}}},
		{name: "key without certificate", tls: &outbound.TLS{ClientKeyPEM: client.keyPEM},
			want: []fe{{"tls.clientCertificatePem", "is required with tls.clientKeyPem"}}},
		{name: "certificate is not PEM", tls: &outbound.TLS{ClientCertificatePEM: "c4n4ry", ClientKeyPEM: client.keyPEM},
			want: []fe{{"tls.clientCertificatePem", "is not a PEM certificate"}}},
		{name: "certificate does not parse", tls: &outbound.TLS{ClientCertificatePEM: junk, ClientKeyPEM: client.keyPEM},
			want: []fe{{"tls.clientCertificatePem", "is not a PEM certificate (certificate 1 does not parse)"}}},
		{name: "key in the certificate field", tls: &outbound.TLS{ClientCertificatePEM: client.keyPEM, ClientKeyPEM: client.keyPEM},
			want: []fe{{"tls.clientCertificatePem", "holds a private key, which belongs in tls.clientKeyPem"}}},
		{name: "key is not PEM", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM, ClientKeyPEM: "c4n4ry"},
			want: []fe{{"tls.clientKeyPem", "is not a PEM private key"}}},
		{name: "key does not parse", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM, ClientKeyPEM: rsaKey},
			want: []fe{{"tls.clientKeyPem", "is not a PEM private key"}}},
		{name: "certificate in the key field", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM, ClientKeyPEM: client.certPEM},
			want: []fe{{"tls.clientKeyPem", "is not a PEM private key"}}},
		{name: "encrypted key", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM, ClientKeyPEM: pemOf("ENCRYPTED PRIVATE KEY", []byte{1})},
			want: []fe{{"tls.clientKeyPem", "is encrypted; give it unencrypted (connmgr encrypts it at rest)"}}},
		{name: "another certificate's key", tls: &outbound.TLS{ClientCertificatePEM: client.certPEM, ClientKeyPEM: other.keyPEM},
			want: []fe{{"tls.clientKeyPem", "does not match tls.clientCertificatePem"}}},
		{name: "server certificate", tls: &outbound.TLS{ClientCertificatePEM: server.certPEM, ClientKeyPEM: server.keyPEM},
			want: []fe{{"tls.clientCertificatePem", "is not for client authentication (its extended key usage)"}}},
		{name: "expired", tls: &outbound.TLS{ClientCertificatePEM: expired.certPEM, ClientKeyPEM: expired.keyPEM},
			want: []fe{{"tls.clientCertificatePem", "expired at " + expired.tls.Leaf.NotAfter.UTC().Format(time.RFC3339)}}, expired: true},
		{name: "not yet valid", tls: &outbound.TLS{ClientCertificatePEM: future.certPEM, ClientKeyPEM: future.keyPEM},
			want: []fe{{"tls.clientCertificatePem", "is not valid before " + future.tls.Leaf.NotBefore.UTC().Format(time.RFC3339)}}, expired: true},
		{name: "CAs are not PEM", tls: &outbound.TLS{CACertificatesPEM: "c4n4ry"},
			want: []fe{{"tls.caCertificatesPem", "is not a PEM certificate"}}},
		{name: "second CA does not parse", tls: &outbound.TLS{CACertificatesPEM: ca.pem + junk},
			want: []fe{{"tls.caCertificatesPem", "is not a PEM certificate (certificate 2 does not parse)"}}},
		{name: "too large", tls: &outbound.TLS{CACertificatesPEM: strings.Repeat(ca.pem, 2000)},
			want: []fe{{"tls.caCertificatesPem", "must be at most 524288 bytes"}}},
		{name: "server name with a port", tls: &outbound.TLS{ServerName: "api.example.com:443"},
			want: []fe{{"tls.serverName", "must be a host name (no scheme, port or path)"}}},
		{name: "server name URL", tls: &outbound.TLS{ServerName: "https://api.example.com"},
			want: []fe{{"tls.serverName", "must be a host name (no scheme, port or path)"}}},
		{name: "several fields", tls: &outbound.TLS{ClientCertificatePEM: "x", ClientKeyPEM: "y", CACertificatesPEM: "z", ServerName: "a b"},
			want: []fe{{"tls.clientCertificatePem", "is not a PEM certificate"}, {"tls.clientKeyPem", "is not a PEM private key"},
				{"tls.caCertificatesPem", "is not a PEM certificate"}, {"tls.serverName", "must be a host name (no scheme, port or path)"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tls.Validate(time.Now())
			var errs outbound.FieldErrors
			if err != nil && !errors.As(err, &errs) {
				t.Fatalf("Validate() = %T %v, want FieldErrors", err, err)
			}
			var got []fe
			for _, e := range errs {
				got = append(got, fe{e.Field, e.Reason})
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Validate() = %v, want %v", got, tt.want)
			}
			if errors.Is(err, outbound.ErrCertificateExpired) != tt.expired {
				t.Errorf("Validate() = %v, errors.Is ErrCertificateExpired = %v, want %v", err, !tt.expired, tt.expired)
			}
			if err != nil && strings.Contains(err.Error(), "c4n4ry") {
				t.Errorf("Validate() = %v, quotes a field's value", err)
			}
		})
	}
}

// FuzzValidate checks that no input makes Validate panic or quote it.
func FuzzValidate(f *testing.F) {
	ca := newCA(f, "fuzz CA")
	client := ca.issue(f, leaf{client: true})
	f.Add(client.certPEM, client.keyPEM, ca.pem, "api.example.com")
	f.Add(client.certPEM[:len(client.certPEM)/2], client.keyPEM, "", "")
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "", ca.pem+ca.pem, "::1")
	f.Fuzz(func(t *testing.T, cert, key, cas, serverName string) {
		s := &outbound.TLS{ClientCertificatePEM: cert, ClientKeyPEM: key, CACertificatesPEM: cas, ServerName: serverName}
		err := s.Validate(time.Now())
		if err == nil {
			return
		}
		for _, e := range err.(outbound.FieldErrors) {
			for _, in := range []string{cert, key, cas, serverName} {
				if len(in) >= 8 && strings.Contains(e.Reason, in) {
					t.Fatalf("Validate() reason %q quotes the input %q", e.Reason, in)
				}
			}
		}
	})
}

func TestTLSRedacts(t *testing.T) {
	const key = "-----BEGIN PRIVATE KEY-----\nc4n4ry\n-----END PRIVATE KEY-----\n"
	s := outbound.TLS{ClientCertificatePEM: "cert", ClientKeyPEM: key, ServerName: "api.internal"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("settings", "tls", s, "ptr", &s)
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{s.String(), s.GoString(), fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q", s, &s, s, s, s),
		logs.String(), string(js)} {
		if strings.Contains(out, "c4n4ry") || !strings.Contains(out, "********") || !strings.Contains(out, "api.internal") {
			t.Errorf("TLS printed as %s, want the key hidden and the rest shown", out)
		}
	}
	if s.ClientKeyPEM != key {
		t.Error("printing changed the key")
	}
}

func ExampleTLS_Validate() {
	s := &outbound.TLS{ClientCertificatePEM: "pasted by mistake", CACertificatesPEM: "", ServerName: "api.internal:443"}
	err := s.Validate(time.Now())
	var errs outbound.FieldErrors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Println(e.Field, e.Reason)
		}
	}
	// Output:
	// tls.clientCertificatePem is not a PEM certificate
	// tls.clientKeyPem is required with tls.clientCertificatePem
	// tls.serverName must be a host name (no scheme, port or path)
}
