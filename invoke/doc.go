// Package invoke resolves relative URIs against a connection's base URL,
// guards outbound dials, and forwards calls to targets.
package invoke
