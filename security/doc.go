// Package security holds connmgr's security policies and its token
// manager.
//
// Each policy (registry.go lists them) is a connections.Security: its
// settings and secrets, their validation, the URLs each secret may be
// sent to, and how a request to the target is signed or given its
// credential. The policies that obtain tokens (the OAuth 2.0 grants,
// the custom two- and three-legged flows, JWT bearer, token exchange,
// AWS SigV4 with an assumed role) do it through the Manager: it caches
// tokens encrypted in the store, refreshes them before they expire on a
// schedule shared by the replicas through leases, keeps them bound to the
// credential configuration they were obtained under, and runs consent
// (authorization code with PKCE, OpenID Connect ID token verification).
package security
