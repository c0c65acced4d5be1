package security

import (
	"context"

	"github.com/connmgr/connmgr/outbound"
)

// networkFailure describes a token request that got no answer, from
// outbound's classification of the network error.
func networkFailure(err error) *TokenError {
	f := outbound.Classify(err)
	te := &TokenError{Reason: "the token endpoint: " + f.Reason, Permanent: !f.Transient, cause: f}
	switch f.Kind {
	case outbound.KindEgressDenied:
		te.Reason = "egress denied: " + f.Reason
	case outbound.KindTimeout:
		te.Reason, te.cause = "timeout calling the token endpoint", context.DeadlineExceeded
	case outbound.KindDNS:
		// A name that does not resolve now may resolve later (a DNS
		// outage): token refreshes keep trying, with backoff.
		te.Reason, te.Permanent = "DNS lookup of the token endpoint failed", false
	case outbound.KindRefused:
		te.Reason = "the token endpoint refused the connection"
	case outbound.KindTLS:
		te.Reason = "TLS handshake with the token endpoint failed: " + f.Reason
	}
	return te
}
