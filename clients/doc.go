// Package clients holds connmgr's contract to its generated clients: the
// tests that generate a Go client (goclient, oapi-codegen) and a TypeScript
// client (ts/, openapi-typescript and openapi-fetch) from openapi.yaml and
// drive each through a whole round trip against a built connmgr, and the
// tests of the contract's schemas themselves. The Redocly and Spectral lint
// configurations and the npm packages the TypeScript side needs (pinned in
// package.json and package-lock.json) live here too.
package clients
