package access

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/connmgr/connmgr/connections"
)

// Session is a signed-in browser of the admin console: its cookie holds a random id
// (256 bits) that only the browser knows; connmgr keeps its hash and the
// API key it stands for.
type Session struct {
	// Hash is the hex SHA-256 of the session id.
	Hash string
	// KeyID is the id of the API key the person signed in with: the
	// session acts as that key, and ends when the key is revoked or
	// expires.
	KeyID string
	// KeyCheck binds a session of the configured admin token
	// (CONNMGR_ADMIN_TOKEN, which has no stored row to be revoked) to that
	// token's value: an HMAC of the token under the session id, so that a
	// change of the token ends its sessions and the database alone does
	// not reveal it. Empty for stored keys.
	KeyCheck  string
	CreatedAt time.Time
	// ExpiresAt ends the session however much it is used.
	ExpiresAt time.Time
	// IdleUntil ends it sooner when it is not used: each use moves it on.
	IdleUntil time.Time
}

// ErrNoSession says there is no live session with a hash.
var ErrNoSession = errors.New("no such console session")

// SessionStore keeps console sessions where every replica sees them (the
// database). Implementations are safe for concurrent use and return errors
// wrapping connections.ErrUnavailable when the database cannot be reached.
type SessionStore interface {
	// Create stores s. It may drop sessions that ended before
	// s.CreatedAt.
	Create(ctx context.Context, s *Session) error
	// Get returns the session with hash that is live at now (now is
	// before its ExpiresAt and its IdleUntil), with the API key it is
	// bound to when that key is stored and not revoked; the key is nil
	// when it is not (revoked, or the admin token, which is not stored).
	// Returns ErrNoSession when there is no live session with hash.
	Get(ctx context.Context, hash string, now time.Time) (*Session, *APIKey, error)
	// Touch moves the IdleUntil of the session with hash to idleUntil.
	// Touching a session that is gone is no error.
	Touch(ctx context.Context, hash string, idleUntil time.Time) error
	// Delete ends the session with hash. Deleting one that is gone is no
	// error.
	Delete(ctx context.Context, hash string) error
}

// envKeyID is the id Keys gives the configured admin token
// (CONNMGR_ADMIN_TOKEN), which has no row in the key store.
const envKeyID = "env"

// Default session lifetimes.
const (
	DefaultSessionTTL  = 8 * time.Hour
	DefaultSessionIdle = time.Hour
)

// SessionConfig is what Sessions needs. Keys and Store are required.
type SessionConfig struct {
	// Keys checks the API key a person signs in with.
	Keys *Keys
	// Store keeps the sessions; replicas must share it.
	Store SessionStore
	// PublicURL is connmgr's external base URL. With https the cookie is
	// Secure (and named with the __Host- prefix).
	PublicURL string
	// AdminToken is CONNMGR_ADMIN_TOKEN, if set: a session signed in with
	// it lasts only while it stays the configured token.
	AdminToken string
	// TTL bounds a session's life from sign-in (DefaultSessionTTL when
	// 0); Idle ends it after that long without a request
	// (DefaultSessionIdle when 0).
	TTL, Idle time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Sessions signs people in to the console with an API key and
// authenticates their browsers' requests by the session cookie: HttpOnly,
// SameSite=Strict, Secure behind https, bounded in life and idle time,
// with a CSRF token per session for every change. A session acts as its
// API key and ends when the key is revoked or expires. It is safe for
// concurrent use.
type Sessions struct {
	keys         *Keys
	store        SessionStore
	adminToken   string
	ttl, idle    time.Duration
	now          func() time.Time
	secure       bool
	cookieName   string
	publicOrigin string
}

// NewSessions returns the sessions of cfg.
func NewSessions(cfg SessionConfig) (*Sessions, error) {
	if cfg.Keys == nil || cfg.Store == nil {
		return nil, errors.New("access: sessions need Keys and Store")
	}
	s := &Sessions{keys: cfg.Keys, store: cfg.Store, adminToken: cfg.AdminToken, ttl: cfg.TTL, idle: cfg.Idle,
		now: cfg.Now, publicOrigin: connections.Origin(cfg.PublicURL), cookieName: "connmgr_session"}
	if s.ttl <= 0 {
		s.ttl = DefaultSessionTTL
	}
	if s.idle <= 0 {
		s.idle = DefaultSessionIdle
	}
	if s.now == nil {
		s.now = time.Now
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil && u.Scheme == "https" {
		s.secure, s.cookieName = true, "__Host-connmgr_session"
	}
	return s, nil
}

// Secure reports whether the cookie is Secure (connmgr is behind https).
func (c *Sessions) Secure() bool { return c.secure }

// Idle is how long a session lives without a request.
func (c *Sessions) Idle() time.Duration { return c.idle }

// CSRFHeader carries the session's CSRF token on every request that
// changes something.
const CSRFHeader = "X-CSRF-Token"

// touchEvery is how stale IdleUntil may be before a use writes it again:
// not every request costs a write.
const touchEvery = time.Minute

// Errors of CheckCSRF. The API answers them with 403.
var (
	ErrCSRF      = errors.New("missing or wrong CSRF token")
	ErrCrossSite = errors.New("cross-site request")
)

func newSessionID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// mac is the hex HMAC-SHA256 of msg under the session id: values only the
// holder of the cookie (and connmgr, while the cookie is presented) can
// compute.
func mac(id, msg string) string {
	m := hmac.New(sha256.New, []byte(id))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// csrfToken is the session's CSRF token. It is derived from the session
// id, which the page cannot read (the cookie is HttpOnly): the page gets
// it from GET /console/session, which another site's page cannot read.
func csrfToken(id string) string { return mac(id, "connmgr console csrf") }

// keyCheck binds a session to the admin token's value.
func keyCheck(id, token string) string { return mac(id, "connmgr console admin token\x00"+token) }

// sessionID returns the session id of r's cookie, or "" when it has none
// of the right form.
func (c *Sessions) sessionID(r *http.Request) string {
	ck, err := r.Cookie(c.cookieName)
	if err != nil || len(ck.Value) != 43 || strings.Trim(ck.Value, base64URLChars) != "" {
		return ""
	}
	return ck.Value
}

const base64URLChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// Authenticate returns the API key of the session that r's cookie names.
// It returns nil and no error when r carries no session cookie, and
// ErrUnauthenticated when the session is unknown, expired, idle too
// long or signed out, or its key was revoked or has expired: the key is
// checked on every request, so a revocation ends its sessions at once, on
// every replica. A database failure returns an error wrapping
// connections.ErrUnavailable.
func (c *Sessions) Authenticate(r *http.Request) (*APIKey, error) {
	if _, err := r.Cookie(c.cookieName); err != nil {
		return nil, nil
	}
	_, key, err := c.session(r.Context(), c.sessionID(r))
	return key, err
}

// session returns the live session of id and its key.
func (c *Sessions) session(ctx context.Context, id string) (*Session, *APIKey, error) {
	if id == "" {
		return nil, nil, ErrUnauthenticated
	}
	now := c.now()
	s, key, err := c.store.Get(ctx, hashID(id), now)
	if errors.Is(err, ErrNoSession) {
		return nil, nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, nil, fmt.Errorf("console session: %w", err)
	}
	if s.KeyID == envKeyID {
		key = nil
		if c.adminToken != "" && hmac.Equal([]byte(s.KeyCheck), []byte(keyCheck(id, c.adminToken))) {
			if key, err = c.keys.Authenticate(ctx, c.adminToken); err != nil {
				return nil, nil, err
			}
		}
	}
	if key == nil || key.ID != s.KeyID || key.ExpiresAt != nil && !now.Before(*key.ExpiresAt) {
		return nil, nil, ErrUnauthenticated
	}
	if s.IdleUntil.Before(now.Add(c.idle - touchEvery)) {
		if err := c.store.Touch(ctx, s.Hash, now.Add(c.idle)); err != nil {
			return nil, nil, fmt.Errorf("console session: %w", err)
		}
	}
	return s, key, nil
}

// CheckCSRF checks a state-changing request that its session
// authenticated: it must carry the session's CSRF token in CSRFHeader
// (ErrCSRF otherwise) and come from connmgr's own pages, as its Origin and
// Sec-Fetch-Site say (ErrCrossSite otherwise).
func (c *Sessions) CheckCSRF(r *http.Request) error {
	if err := c.sameOrigin(r); err != nil {
		return err
	}
	id := c.sessionID(r)
	got := r.Header.Get(CSRFHeader)
	if id == "" || got == "" || !hmac.Equal([]byte(got), []byte(csrfToken(id))) {
		return ErrCSRF
	}
	return nil
}

// sameOrigin checks that r, which changes state, was sent by a page of
// connmgr's own origin. Browsers send Sec-Fetch-Site and Origin with such
// requests; one of them must be there, and what is there must say
// same-origin. The origin is connmgr's public URL's, or the one the
// request was sent to (the browser may use another name for the host).
func (c *Sessions) sameOrigin(r *http.Request) error {
	site := r.Header.Get("Sec-Fetch-Site")
	if site != "" && site != "same-origin" {
		return fmt.Errorf("%w (Sec-Fetch-Site: %s)", ErrCrossSite, site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		if site == "" {
			return fmt.Errorf("%w: neither Origin nor Sec-Fetch-Site given", ErrCrossSite)
		}
		return nil
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	// Compared as origins (scheme, host, port; browsers leave out a
	// default port).
	o := connections.Origin(origin)
	if o == "" || o != c.publicOrigin && o != connections.Origin(scheme+"://"+r.Host) {
		return fmt.Errorf("%w (Origin: %.100s)", ErrCrossSite, origin)
	}
	return nil
}

// Current returns the live session of r's cookie, its key and its CSRF
// token, with IdleUntil as the request moved it. Errors as Authenticate,
// access.ErrUnauthenticated also for a request without a cookie.
func (c *Sessions) Current(r *http.Request) (*Session, *APIKey, string, error) {
	id := c.sessionID(r)
	s, key, err := c.session(r.Context(), id)
	if err != nil {
		return nil, nil, "", err
	}
	if s.IdleUntil.Before(c.now().Add(c.idle - touchEvery)) {
		s.IdleUntil = c.now().Add(c.idle)
	}
	return s, key, csrfToken(id), nil
}

// SignIn checks presented, an API key a person typed, and starts a session
// for it: the cookie is set on w, and a session the browser still held
// ends (one browser, one session). r must come from connmgr's own pages
// (ErrCrossSite). It returns the session, its key and its CSRF token.
func (c *Sessions) SignIn(w http.ResponseWriter, r *http.Request, presented string) (*Session, *APIKey, string, error) {
	if err := c.sameOrigin(r); err != nil {
		return nil, nil, "", err
	}
	ctx := r.Context()
	key, err := c.keys.Authenticate(ctx, strings.TrimSpace(presented))
	if err != nil {
		return nil, nil, "", err
	}
	if old := c.sessionID(r); old != "" {
		if err := c.store.Delete(ctx, hashID(old)); err != nil {
			return nil, nil, "", err
		}
	}
	id, now := newSessionID(), c.now().UTC().Truncate(time.Microsecond)
	s := &Session{Hash: hashID(id), KeyID: key.ID, CreatedAt: now, ExpiresAt: now.Add(c.ttl), IdleUntil: now.Add(c.idle)}
	if key.ID == envKeyID {
		s.KeyCheck = keyCheck(id, c.adminToken)
	}
	if err := c.store.Create(ctx, s); err != nil {
		return nil, nil, "", err
	}
	http.SetCookie(w, &http.Cookie{Name: c.cookieName, Value: id, Path: "/", HttpOnly: true, Secure: c.secure,
		SameSite: http.SameSiteStrictMode})
	return s, key, csrfToken(id), nil
}

// SignOut ends r's session on the server (a change: it needs the CSRF
// token) and clears the cookie, whatever the browser does next.
func (c *Sessions) SignOut(w http.ResponseWriter, r *http.Request) error {
	if id := c.sessionID(r); id != "" {
		if err := c.CheckCSRF(r); err != nil {
			return err
		}
		if err := c.store.Delete(r.Context(), hashID(id)); err != nil {
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{Name: c.cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: c.secure, SameSite: http.SameSiteStrictMode})
	return nil
}
