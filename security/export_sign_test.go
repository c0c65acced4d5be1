package security

import (
	"net/http"
	"time"
)

// SignOAuth1With signs req as p does with a fixed timestamp and nonce,
// with or without oauth_version (RFC 5849's examples send none).
func SignOAuth1With(p *OAuth1, req *http.Request, now time.Time, nonce string, version bool) error {
	return p.signWith(req, now, nonce, version)
}

// OAuth1Base returns the signature base string of req with the protocol
// parameters oauthParams (name, value pairs).
func OAuth1Base(req *http.Request, oauthParams [][2]string) (string, error) {
	return signatureBase(req, oauthParams)
}

// SignAWS signs req as p does at now; tok holds AssumeRole's temporary
// credentials (nil without assumeRole).
func SignAWS(p *AWSSigV4, req *http.Request, tok *Token, now time.Time) error {
	_, err := p.sign(req, tok, now)
	return err
}
