// Package outbound is how connmgr goes out: token requests, invokes and
// webhooks all dial, fail and retry by its rules.
//
// # The guard and its clients
//
// Guard checks every address at dial time, after resolving the name
// itself, and connects to the address it checked (so DNS rebinding does
// not help); loopback, private, link-local (cloud metadata), CGNAT,
// unique-local and IPv4-embedded IPv6 addresses are refused unless
// CONNMGR_EGRESS_ALLOW (ParseAllow) lists them. A refusal is a
// *DeniedError, for which errors.Is(err, ErrEgressDenied) holds and whose
// text names the variable.
//
// Guard.Transport and Guard.Client are the only way out: they ignore the
// proxy environment variables, never follow redirects (a 3xx goes back to
// the caller, and a credential never follows it to another host), and
// never add Accept-Encoding nor inflate answers. Transports adds a
// connection's own TLS settings (client certificate, private CAs, server
// name) on top, one pooled transport per distinct TLS.
//
// # Failures
//
// Classify turns the error of a call that got no answer into a *Failure:
// its Kind (timeout, DNS, refused, unreachable, reset, closed, TLS, egress
// denied, canceled, other), a Reason safe to show (no body, credential or
// URL), and whether it is Transient. It reads error types, never error
// text. HTTP statuses are the caller's to judge.
//
// # Retries
//
// Backoff(n) is the wait after the nth consecutive failure (1s doubling
// to 5 minutes, jittered over the upper half), and RetryAfter parses a
// Retry-After header (capped at 1 hour). A caller waits
// max(Backoff(n), RetryAfter(...)), and decides itself whether a call may
// be sent again.
package outbound
