package security_test

import (
	"errors"
	"testing"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// TestDecodeUnknownField: an unknown field is named by its whole path,
// however deep it is.
func TestDecodeUnknownField(t *testing.T) {
	const twoLegged = `{"policy": "OAUTH2_CUSTOM_TWO_LEGGED", "tokenRequest": {"url": "https://auth.example.com/token"}, `
	tests := []struct {
		name, body, field string
	}{
		{"top level", `{"policy": "OAUTH2_CLIENT_CREDENTIALS", "tokenEndpoint": "x"}`, "security.tokenEndpoint"},
		{"in an embedded struct's policy", `{"policy": "OAUTH2_TOKEN_EXCHANGE", "clientId": "c", "subjectTokn": "x"}`, "security.subjectTokn"},
		{"in tokenRequest", `{"policy": "OAUTH2_CUSTOM_TWO_LEGGED", "tokenRequest": {"url": "https://a.example.com", "extra": 1}}`,
			"security.tokenRequest.extra"},
		{"in an optional refreshRequest", twoLegged + `"refreshRequest": {"url": "https://auth.example.com/token", "timeout": 5}}`,
			"security.refreshRequest.timeout"},
		{"in response", twoLegged + `"response": {"idToken": "/id_token"}}`, "security.response.idToken"},
		{"two deep", `{"policy": "OAUTH2_CUSTOM_THREE_LEGGED", "authorizationRequest": {"url": "https://a.example.com", "prompt": "x"}}`,
			"security.authorizationRequest.prompt"},
		{"in assumeRole", `{"policy": "AWS_SIGV4", "assumeRole": {"roleArn": "arn:aws:iam::1:role/r", "policyArns": []}}`,
			"security.assumeRole.policyArns"},
		{"the first in the document", twoLegged + `"apply": {"where": "x"}, "response": {"idToken": "/id_token"}}`,
			"security.apply.where"},
		{"a known field in another case, then an unknown one", twoLegged + `"Response": {"AccessToken": "/t", "idToken": "/id_token"}}`,
			"security.Response.idToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := security.Decode([]byte(tt.body))
			var ves connections.ValidationErrors
			if !errors.As(err, &ves) || len(ves) != 1 || ves[0].Field != tt.field {
				t.Errorf("Decode(%s) = %v, want an error on %s", tt.body, err, tt.field)
			}
		})
	}
}
