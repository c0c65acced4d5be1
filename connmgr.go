// Package connmgr holds connmgr's contracts, embedded so that the service
// serves them and tests hold the code to them: the API's (openapi.yaml)
// and the JSON Schema of the files of connections as code
// (schemas/connection.schema.json), which is generated from the API's
// create body, so the two cannot disagree: go test . -update rewrites it,
// and a test fails while it is stale.
package connmgr

import _ "embed"

// OpenAPI is the contents of openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// ConnectionSchema is the JSON Schema of a connection document
// (apiVersion connmgr/v1, kind Connection).
//
//go:embed schemas/connection.schema.json
var ConnectionSchema []byte
