// Package connmgr holds connmgr's API contract, openapi.yaml, embedded so
// that the service serves it and tests hold the API to it.
package connmgr

import _ "embed"

// OpenAPI is the contents of openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
