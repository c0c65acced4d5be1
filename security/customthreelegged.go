package security

import (
	"context"

	"golang.org/x/oauth2"

	"github.com/connmgr/connmgr/connections"
)

// PolicyCustomThreeLegged obtains tokens by a person's consent, with the
// authorization request and the code exchange written in the provider's
// own dialect.
const PolicyCustomThreeLegged connections.Policy = "OAUTH2_CUSTOM_THREE_LEGGED"

// CustomThreeLegged is an authorization-code flow of templates. The
// consent flow opens AuthorizationRequest, whose template must carry
// ${state} and ${codeChallenge} (PKCE S256); the token request exchanges
// ${code} with ${codeVerifier}; the refresh request, if any, renews the
// token with ${refreshToken}. Without a usable refresh token a person must
// consent again.
type CustomThreeLegged struct {
	AuthorizationRequest AuthorizationRequest `json:"authorizationRequest"`
	CustomFlow
	// Secrets are named secrets the token and refresh requests use as
	// ${secrets.NAME}. They never go to the authorization URL; it is among
	// their destinations so that moving it needs them sent again, as for
	// OAUTH2_AUTHORIZATION_CODE.
	Secrets map[string]connections.Secret `json:"secrets,omitempty" dest:"tokenRequest.url,refreshRequest.url,authorizationRequest.url"`
}

// AuthorizationRequest is the URL a person opens to consent, a template
// with ${state}, ${codeChallenge}, ${redirectUri} and ${values.NAME}.
type AuthorizationRequest struct {
	URL string `json:"url,omitempty" url:"authorization"`
}

var (
	authorizePlaceholders = placeholders{values: true, names: []string{phState, phCodeChallenge, phRedirectURI},
		required: []string{phState, phCodeChallenge}}
	exchangePlaceholders = placeholders{values: true, secrets: true, names: []string{phCode, phCodeVerifier, phRedirectURI},
		required: []string{phCode, phCodeVerifier}}
)

// Policy implements connections.Security.
func (*CustomThreeLegged) Policy() connections.Policy { return PolicyCustomThreeLegged }

// ConsentRequired implements connections.ConsentPolicy.
func (*CustomThreeLegged) ConsentRequired() bool { return true }

// Validate implements connections.Security.
func (p *CustomThreeLegged) Validate(v *connections.Checker) {
	var used []string
	if p.AuthorizationRequest.URL == "" {
		v.Add("authorizationRequest.url", "is required")
	} else if u, err := parseURLTemplate(p.AuthorizationRequest.URL, authorizePlaceholders.allows); err != nil {
		v.Add("authorizationRequest.url", "%v", err)
	} else {
		used = u.t.refs()
		for _, need := range authorizePlaceholders.required {
			if !u.t.uses(need) {
				v.Add("authorizationRequest.url", "must use ${%s}", need)
			}
		}
	}
	p.validate(v, p.Secrets, exchangePlaceholders, used)
}

// HasSecretEntry implements connections.SecretEntries.
func (p *CustomThreeLegged) HasSecretEntry(path string) bool { return hasSecretEntry(p.Secrets, path) }

func (p *CustomThreeLegged) obtain(ctx context.Context, e *tokenEnv, _ *connections.Connection, prev *Token) (*Token, error) {
	if prev == nil || !prev.RefreshToken.IsSet() {
		return nil, errNoRefreshToken
	}
	tok, tried, err := p.refresh(ctx, e, p.Secrets, prev)
	if !tried {
		return nil, errNoRefreshRequest
	}
	return tok, err
}

// authCodeURL implements consentPolicy.
func (p *CustomThreeLegged) authCodeURL(_ context.Context, _ *tokenEnv, redirectURI string, pc *PendingConsent) (string, error) {
	u, err := parseURLTemplate(p.AuthorizationRequest.URL, anyPlaceholder)
	if err != nil {
		return "", &TokenError{Reason: "authorizationRequest.url: " + err.Error(), Permanent: true}
	}
	vs := p.vars(nil)
	vs[phState], vs[phRedirectURI] = pc.State, redirectURI
	vs[phCodeChallenge] = oauth2.S256ChallengeFromVerifier(pc.Verifier.Reveal())
	out, err := u.expand(vs)
	if err != nil {
		return "", &TokenError{Reason: "authorizationRequest.url: " + err.Error(), Permanent: true}
	}
	return out, nil
}

// exchange implements consentPolicy: the token request with the code.
func (p *CustomThreeLegged) exchange(ctx context.Context, e *tokenEnv, code string, pc *PendingConsent) (*Token, error) {
	vs := p.vars(p.Secrets)
	vs[phCode], vs[phCodeVerifier], vs[phRedirectURI] = code, pc.Verifier.Reveal(), pc.RedirectURI
	return p.send(ctx, e, &p.TokenRequest, vs)
}

// endpoints implements consentPolicy; a custom flow has no metadata.
func (p *CustomThreeLegged) endpoints(context.Context, *tokenEnv) (authURL, tokenURL string, md *Metadata, err error) {
	return p.AuthorizationRequest.URL, p.TokenRequest.URL, nil, nil
}

// issuerCheck implements consentPolicy: a custom flow checks no iss.
func (*CustomThreeLegged) issuerCheck(*Metadata) (string, bool) { return "", false }

func (*CustomThreeLegged) wantsNonce() bool      { return false }
func (*CustomThreeLegged) idTokenIssuer() string { return "" }
