// Package invoke resolves relative URIs against a connection's base URL
// and forwards calls to targets.
//
// Resolve joins a base URL and a relative URI (or template) so that the
// result stays under the base, also for servers that decode %2F before
// normalising. Proxy forwards a call through the connection's transport
// (egress-guarded, see package outbound) with the connection's
// credential, lets only allowlisted headers through in either direction,
// keeps the credential out of the headers it passes back, marks the call
// with its Via hop and refuses calls that loop through connmgr, retries
// once with a new token after a status the connection lists as "token
// rejected" (default 401) when the body can be replayed, and streams the
// answer back. Serve returns connmgr's own errors for its caller to
// render. A connection's timeout (timeoutMs) bounds the whole call, the
// streaming of the response body included. Tester tests a connection end
// to end: it obtains the credential and calls the target with it.
package invoke
