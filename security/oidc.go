package security

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Metadata is what connmgr uses of an authorization server's metadata
// (RFC 8414, OpenID Connect Discovery 1.0).
type Metadata struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	JWKSURI               string `json:"jwks_uri"`
	// IssParameterSupported is RFC 9207's
	// authorization_response_iss_parameter_supported.
	IssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
	SigningAlgs           []string `json:"id_token_signing_alg_values_supported"`
}

// metadataTTL is how long discovered metadata is reused.
const metadataTTL = time.Hour

// metadataCache discovers and caches issuers' metadata and ID token key
// sets. It is safe for concurrent use.
type metadataCache struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*issuerEntry
}

type issuerEntry struct {
	md      *Metadata
	fetched time.Time
	keys    *oidc.RemoteKeySet
}

func newMetadataCache(now func() time.Time) *metadataCache {
	return &metadataCache{now: now, m: map[string]*issuerEntry{}}
}

// get returns issuer's metadata: the OpenID Connect discovery document,
// else the RFC 8414 one, fetched through client. The document's issuer
// must be issuer itself.
func (c *metadataCache) get(ctx context.Context, client *http.Client, issuer string) (*Metadata, error) {
	c.mu.Lock()
	e := c.m[issuer]
	c.mu.Unlock()
	if e != nil && c.now().Sub(e.fetched) < metadataTTL {
		return e.md, nil
	}
	md, err := discover(ctx, client, issuer)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) > 1000 {
		clear(c.m)
	}
	kctx := context.WithValue(context.Background(), oauth2.HTTPClient, client)
	c.m[issuer] = &issuerEntry{md: md, fetched: c.now(), keys: oidc.NewRemoteKeySet(kctx, md.JWKSURI)}
	return md, nil
}

// keySet returns the key set of an issuer whose metadata get fetched.
func (c *metadataCache) keySet(issuer string) *oidc.RemoteKeySet {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[issuer]; e != nil {
		return e.keys
	}
	return nil
}

// discover fetches issuer's metadata from the places the standards put
// it: OpenID Connect Discovery appends /.well-known/openid-configuration
// to the issuer; RFC 8414 §3.1 inserts /.well-known/oauth-authorization-server
// between the issuer's host and its path (the same URL when it has none).
func discover(ctx context.Context, client *http.Client, issuer string) (*Metadata, error) {
	urls := []string{strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"}
	if u, err := url.Parse(issuer); err == nil && u.Host != "" {
		path := strings.TrimSuffix(u.EscapedPath(), "/")
		u.Path, u.RawPath = "", ""
		urls = append(urls, u.String()+"/.well-known/oauth-authorization-server"+path)
	}
	var firstErr error
	for _, u := range urls {
		md, err := fetchMetadata(ctx, client, u)
		if err == nil {
			if md.Issuer != issuer {
				return nil, &TokenError{Reason: fmt.Sprintf("the issuer's metadata names issuer %q, not the configured one", clipText(md.Issuer)), Permanent: true}
			}
			return md, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func fetchMetadata(ctx context.Context, client *http.Client, u string) (*Metadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &TokenError{Reason: "the issuer is not a valid URL", Permanent: true}
	}
	req.Header.Set("Accept", "application/json")
	res, err := client.Do(req)
	if err != nil {
		f := networkFailure(err)
		f.Reason = "issuer metadata: " + f.Reason
		return nil, f
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, &TokenError{Reason: fmt.Sprintf("issuer metadata: HTTP %d", res.StatusCode), Status: res.StatusCode,
			Permanent: res.StatusCode < 500}
	}
	var md Metadata
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&md); err != nil {
		return nil, &TokenError{Reason: "issuer metadata is not a JSON document", Permanent: true}
	}
	return &md, nil
}

// errIDToken means an ID token failed verification.
var errIDToken = errors.New("ID token verification failed")

// verifyIDToken checks an ID token from a code exchange: its signature
// with the issuer's published keys, iss, aud (the client id), expiry and
// the nonce of the consent.
func (c *metadataCache) verifyIDToken(ctx context.Context, client *http.Client, issuer, clientID, raw, nonce string) error {
	if raw == "" {
		return fmt.Errorf("%w: the token response has no id_token", errIDToken)
	}
	md, err := c.get(ctx, client, issuer)
	if err != nil {
		return fmt.Errorf("%w: %w", errIDToken, err)
	}
	keys := c.keySet(issuer)
	if keys == nil || md.JWKSURI == "" {
		return fmt.Errorf("%w: the issuer publishes no jwks_uri", errIDToken)
	}
	cfg := &oidc.Config{ClientID: clientID, Now: c.now, SupportedSigningAlgs: md.SigningAlgs}
	tok, err := oidc.NewVerifier(issuer, keys, cfg).Verify(oidc.ClientContext(ctx, client), raw)
	if err != nil {
		return fmt.Errorf("%w: %s", errIDToken, idTokenReason(err))
	}
	if tok.Nonce != nonce {
		return fmt.Errorf("%w: the nonce does not match the consent's", errIDToken)
	}
	return nil
}

// idTokenReason words a go-oidc verification error without echoing the
// token.
func idTokenReason(err error) string {
	var expired *oidc.TokenExpiredError
	switch msg := err.Error(); {
	case errors.As(err, &expired):
		return "the ID token has expired"
	case strings.Contains(msg, "issuer"), strings.Contains(msg, "different provider"):
		return "the ID token's iss is not the issuer"
	case strings.Contains(msg, "audience"):
		return "the ID token's aud is not this client"
	case strings.Contains(msg, "signature"):
		return "the ID token's signature does not verify with the issuer's keys"
	}
	return "the ID token is not valid"
}

func clipText(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
