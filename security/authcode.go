package security

import (
	"context"
	"net/url"
	"slices"

	"golang.org/x/oauth2"

	"github.com/connmgr/connmgr/connections"
)

// PolicyAuthorizationCode obtains tokens with the authorization code grant
// (RFC 6749 §4.1) with PKCE: a person consents once in a browser, then
// connmgr refreshes with the refresh token.
const PolicyAuthorizationCode connections.Policy = "OAUTH2_AUTHORIZATION_CODE"

// AuthorizationCode is an OAuth client acting for a person who consented.
// With Issuer set and no endpoints, the endpoints are discovered from the
// issuer's metadata (RFC 8414 / OpenID Connect Discovery); with scope
// openid the ID token of the code exchange is verified.
type AuthorizationCode struct {
	AuthorizationURL string `json:"authorizationUrl,omitempty" url:"authorization"`
	Client
	// Issuer is the authorization server's issuer identifier: the
	// callback's iss must equal it (RFC 9207), and an ID token's iss too.
	Issuer string `json:"issuer,omitempty" url:"issuer"`
	// RequireIss refuses callbacks without iss even when the server does
	// not advertise authorization_response_iss_parameter_supported.
	RequireIss bool `json:"requireIss,omitempty"`
}

// Policy implements connections.Security.
func (*AuthorizationCode) Policy() connections.Policy { return PolicyAuthorizationCode }

// ConsentRequired implements connections.ConsentPolicy.
func (*AuthorizationCode) ConsentRequired() bool { return true }

// Validate implements connections.Security.
func (p *AuthorizationCode) Validate(v *connections.Checker) {
	discover := p.Issuer != ""
	v.URL("authorizationUrl", p.AuthorizationURL, !discover)
	p.validate(v, !discover)
	if p.Issuer != "" {
		v.URL("issuer", p.Issuer, true)
	}
	if p.RequireIss && p.Issuer == "" {
		v.Add("requireIss", "needs issuer: the callback's iss is compared with it")
	}
	if p.openID() && p.Issuer == "" {
		v.Add("issuer", "is required with scope openid: the ID token is verified against it")
	}
}

// CheckConnection checks the settings that depend on the connection.
func (p *AuthorizationCode) CheckConnection(c *connections.Connection, v *connections.Checker) {
	p.checkTLS(c, v)
}

// openID reports whether the client asks for OpenID Connect.
func (p *AuthorizationCode) openID() bool { return slices.Contains(p.Scopes, "openid") }

// endpoints returns the authorization and token URLs, discovered from the
// issuer when they are not set, and the issuer's metadata (nil without an
// issuer).
func (p *AuthorizationCode) endpoints(ctx context.Context, e *tokenEnv) (authURL, tokenURL string, md *Metadata, err error) {
	authURL, tokenURL = p.AuthorizationURL, p.TokenURL
	if p.Issuer != "" && e.discover != nil {
		md, err = e.discover(ctx, p.Issuer)
		if err != nil && (authURL == "" || tokenURL == "") {
			return "", "", nil, err
		}
		if md != nil {
			authURL, tokenURL = cmpOr(authURL, md.AuthorizationEndpoint), cmpOr(tokenURL, md.TokenEndpoint)
		}
	}
	return authURL, tokenURL, md, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (p *AuthorizationCode) obtain(ctx context.Context, e *tokenEnv, _ *connections.Connection, prev *Token) (*Token, error) {
	if prev == nil || !prev.RefreshToken.IsSet() {
		return nil, errNoRefreshToken
	}
	_, tokenURL, _, err := p.endpoints(ctx, e)
	if err != nil {
		return nil, err
	}
	t, err := p.request(ctx, e, tokenURL, grant{typ: "refresh_token",
		params: url.Values{"refresh_token": {prev.RefreshToken.Reveal()}}})
	if err != nil {
		return nil, refreshFailure(err)
	}
	return t, nil
}

// authCodeURL returns the URL that starts consent in a browser.
func (p *AuthorizationCode) authCodeURL(ctx context.Context, e *tokenEnv, redirectURI string, pc *PendingConsent) (string, error) {
	authURL, _, _, err := p.endpoints(ctx, e)
	if err != nil {
		return "", err
	}
	cfg := oauth2.Config{ClientID: p.ClientID, Endpoint: oauth2.Endpoint{AuthURL: authURL},
		RedirectURL: redirectURI, Scopes: p.Scopes}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(pc.Verifier.Reveal())}
	if p.Audience != "" {
		opts = append(opts, oauth2.SetAuthURLParam("audience", p.Audience))
	}
	if pc.Nonce != "" {
		opts = append(opts, oauth2.SetAuthURLParam("nonce", pc.Nonce))
	}
	for name, v := range p.ExtraParams {
		opts = append(opts, oauth2.SetAuthURLParam(name, v))
	}
	return cfg.AuthCodeURL(pc.State, opts...), nil
}

// exchange trades an authorization code for tokens.
func (p *AuthorizationCode) exchange(ctx context.Context, e *tokenEnv, code string, pc *PendingConsent) (*Token, error) {
	_, tokenURL, _, err := p.endpoints(ctx, e)
	if err != nil {
		return nil, err
	}
	return p.request(ctx, e, tokenURL, grant{typ: "authorization_code", params: url.Values{"code": {code},
		"redirect_uri": {pc.RedirectURI}, "code_verifier": {pc.Verifier.Reveal()}}})
}

// issuerCheck returns the issuer the callback's iss must equal and whether
// a callback without iss is refused (RFC 9207 §2.4).
func (p *AuthorizationCode) issuerCheck(md *Metadata) (issuer string, required bool) {
	return p.Issuer, p.Issuer != "" && (p.RequireIss || md != nil && md.IssParameterSupported)
}

// wantsNonce reports whether consent carries a nonce to check in the ID
// token.
func (p *AuthorizationCode) wantsNonce() bool { return p.openID() }

// idTokenIssuer is the issuer an ID token is verified against, "" when the
// policy does not ask for one.
func (p *AuthorizationCode) idTokenIssuer() string {
	if p.openID() {
		return p.Issuer
	}
	return ""
}
