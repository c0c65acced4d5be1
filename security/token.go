package security

import (
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connmgr/connmgr/connections"
)

// Token is an access token with what connmgr knows about it.
type Token struct {
	AccessToken  connections.Secret
	TokenType    string
	RefreshToken connections.Secret
	Scopes       []string
	ObtainedAt   time.Time
	ExpiresAt    time.Time
	// Version increases with every token stored for a connection; a write
	// succeeds only over the version it replaces.
	Version int64
	// idToken is the OpenID Connect ID token of a code exchange, verified
	// before the token is stored; it is not kept.
	idToken string
}

// Lifetime is how long the token was valid for when obtained.
func (t *Token) Lifetime() time.Duration { return t.ExpiresAt.Sub(t.ObtainedAt) }

// refreshAhead is how long before expiry a token is due for refresh:
// max(20% of the lifetime, min(60s, half the lifetime)).
func refreshAhead(lifetime time.Duration) time.Duration {
	return max(lifetime/5, min(time.Minute, lifetime/2))
}

// RefreshAt is when the token becomes due for refresh. The scheduler
// refreshes it at a jittered moment in the first half of the time left
// from then on (see Manager).
func (t *Token) RefreshAt() time.Time { return t.ExpiresAt.Add(-refreshAhead(t.Lifetime())) }

// Valid reports whether the token can still be sent at now: it is not
// within a small safety margin (a tenth of its lifetime, at most 10s) of
// expiry.
func (t *Token) Valid(now time.Time) bool {
	if t == nil || !t.AccessToken.IsSet() {
		return false
	}
	margin := min(10*time.Second, t.Lifetime()/10)
	return now.Before(t.ExpiresAt.Add(-margin))
}

// authorization returns the Authorization header value for the token.
func (t *Token) authorization() string {
	typ := t.TokenType
	if typ == "" || strings.EqualFold(typ, "bearer") {
		typ = "Bearer"
	}
	return typ + " " + t.AccessToken.Reveal()
}

// maxTokenTTL caps token lifetimes, so a bogus expires_in cannot keep a
// token cached for years.
const maxTokenTTL = 24 * time.Hour

// lifetime decides how long a token obtained at now lives: expires_in
// when the server gave a positive one, else the access token's JWT exp,
// else def; at most maxTokenTTL.
func lifetime(expiresIn int64, access string, now time.Time, def time.Duration) time.Duration {
	ttl := time.Duration(expiresIn) * time.Second
	if ttl <= 0 {
		ttl = jwtLifetime(access, now)
	}
	if ttl <= 0 {
		ttl = def
	}
	return min(ttl, maxTokenTTL)
}

// jwtLifetime reads the exp claim of an access token that is a JWT,
// without verifying it (connmgr is not its audience; only the lifetime is
// of interest), and returns the time left, or 0. exp is on the issuer's
// clock: with an iat, the token lives at most exp - iat, and an exp past
// on our clock (ours ahead) leaves exp - iat as the best estimate.
func jwtLifetime(access string, now time.Time) time.Duration {
	if strings.Count(access, ".") != 2 {
		return 0
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(access, &claims); err != nil || claims.ExpiresAt == nil {
		return 0
	}
	left := claims.ExpiresAt.Sub(now)
	if claims.IssuedAt != nil && claims.ExpiresAt.After(claims.IssuedAt.Time) {
		issued := claims.ExpiresAt.Sub(claims.IssuedAt.Time)
		if left <= 0 || left > issued {
			return issued
		}
	}
	return left
}
