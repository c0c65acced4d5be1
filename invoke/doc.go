// Package invoke resolves relative URIs against a connection's base URL,
// guards outbound dials, and forwards calls to targets.
//
// Resolve joins a base URL and a relative URI (or template) so that the
// result stays under the base. Guard refuses dials to private, loopback
// and metadata addresses unless allowed. Proxy forwards a call through the
// guarded transport with the connection's credential, lets only
// allowlisted headers through in either direction, retries once with a
// new token after a 401 when the body can be replayed, and streams the
// answer back. A connection's timeout (timeoutMs) bounds the whole call,
// the streaming of the response body included. Proxy.Test is the
// connection test of policies without tokens.
package invoke
