// Package access is inbound access to connmgr itself: API keys, their
// roles and connection-name patterns, and the cache that authenticates a
// request with one SHA-256 and a map lookup. Storage is behind KeyStore.
package access

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/connmgr/connmgr/connections"
)

// Role is the role of one of connmgr's own API keys.
type Role string

// The roles of API keys.
const (
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
	// RoleDeveloper manages, tests and invokes connections; no key management.
	RoleDeveloper Role = "developer"
	// RoleInvoker invokes the connections its name patterns match, nothing else.
	RoleInvoker Role = "invoker"
	// RoleViewer reads connections, token metadata and the audit log.
	RoleViewer Role = "viewer"
)

// Permission is something a request may need to be allowed.
type Permission int

// The permissions.
const (
	PermRead Permission = iota + 1
	PermWrite
	PermInvoke
	PermManageKeys
	PermAudit
	// PermMetrics reads /metrics, which names every connection.
	PermMetrics
)

var rolePerms = map[Role][]Permission{
	RoleAdmin:     {PermRead, PermWrite, PermInvoke, PermManageKeys, PermAudit, PermMetrics},
	RoleDeveloper: {PermRead, PermWrite, PermInvoke},
	RoleInvoker:   {PermInvoke},
	RoleViewer:    {PermRead, PermAudit, PermMetrics},
}

// KeyPrefix starts every API key, so that scanners and people recognise one.
const KeyPrefix = "cmk_"

// Errors of API key operations.
var (
	ErrUnauthenticated = errors.New("missing, unknown, expired or revoked API key")
	ErrKeyNotFound     = errors.New("API key not found")
)

// APIKey is one of connmgr's own API keys. The key itself is never stored;
// only its SHA-256 hash is.
type APIKey struct {
	ID   string
	Name string
	Role Role
	// Connections are the name patterns ('*' matches any run of characters)
	// an invoker key may invoke.
	Connections []string
	// Prefix is the start of the key, enough to recognise it.
	Prefix    string
	CreatedAt time.Time
	CreatedBy string
	ExpiresAt *time.Time
	RevokedAt *time.Time
}

// Can reports whether the key's role grants p.
func (k *APIKey) Can(p Permission) bool {
	for _, q := range rolePerms[k.Role] {
		if q == p {
			return true
		}
	}
	return false
}

// MaySee reports whether the key may see or use the named connection. Keys
// that may not get "not found", never "forbidden", so names do not leak.
func (k *APIKey) MaySee(name string) bool {
	if k.Role != RoleInvoker {
		return true
	}
	for _, p := range k.Connections {
		if MatchPattern(p, name) {
			return true
		}
	}
	return false
}

// MatchPattern reports whether name matches pattern, where '*' matches any
// run of characters and every other character matches itself. Patterns
// hold only letters, digits, '_', '-' and '*' (see NewKey.Validate), so
// path.Match, whose other metacharacters cannot occur, decides it.
func MatchPattern(pattern, name string) bool {
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

var patternRE = regexp.MustCompile(`^[A-Za-z0-9_*-]{1,100}$`)
var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 _.@-]{0,99}$`)

// NewKey is what Create needs to make a key.
type NewKey struct {
	Name        string
	Role        Role
	Connections []string
	ExpiresAt   *time.Time
	CreatedBy   string
}

// Validate checks k and returns connections.ValidationErrors.
func (k *NewKey) Validate(now time.Time) error {
	var errs connections.ValidationErrors
	add := func(f, r string) { errs = append(errs, &connections.ValidationError{Field: f, Reason: r}) }
	if !keyNameRE.MatchString(k.Name) {
		add("name", "is required: 1-100 letters, digits, spaces or _ . @ -, starting with a letter or digit")
	}
	if _, ok := rolePerms[k.Role]; !ok {
		add("role", "must be admin, developer, invoker or viewer")
	}
	if k.Role == RoleInvoker && len(k.Connections) == 0 {
		add("connections", "an invoker key needs at least one connection name pattern")
	}
	if k.Role != RoleInvoker && len(k.Connections) > 0 {
		add("connections", "only invoker keys are limited to connection patterns")
	}
	if len(k.Connections) > 100 {
		add("connections", "at most 100 patterns")
	}
	for i, p := range k.Connections {
		if !patternRE.MatchString(p) {
			add(fmt.Sprintf("connections[%d]", i), "must be a connection name pattern: letters, digits, '_', '-' and '*'")
		}
	}
	if k.ExpiresAt != nil && !k.ExpiresAt.After(now) {
		add("expiresAt", "must be in the future")
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// KeyStore keeps API keys (only their hashes). Implementations are safe
// for concurrent use and return connections.ErrUnavailable when the
// database cannot be reached.
type KeyStore interface {
	// Insert stores k with the hash of its secret.
	Insert(ctx context.Context, k *APIKey, hash string) error
	// List returns the keys that are not revoked, newest first.
	List(ctx context.Context) ([]*APIKey, error)
	// Revoke marks key id revoked at now and returns it. Returns
	// ErrKeyNotFound when there is no such unrevoked key.
	Revoke(ctx context.Context, id string, now time.Time) (*APIKey, error)
	// ByHash returns the unrevoked key with hash. Returns ErrUnauthenticated
	// when there is none.
	ByHash(ctx context.Context, hash string) (*APIKey, error)
	// CountActive counts the keys that are not revoked.
	CountActive(ctx context.Context) (int64, error)
}

// Keys authenticates requests with connmgr's API keys and manages them.
// Known keys are cached in memory, so a warm request costs one SHA-256 and
// a map lookup; Revoke and Forget drop a key from the cache at once, and a
// lookup that raced with them does not put it back. It is safe for
// concurrent use.
type Keys struct {
	store KeyStore
	Now   func() time.Time

	// adminToken is CONNMGR_ADMIN_TOKEN's hash, or nil.
	adminToken []byte

	mu    sync.RWMutex
	cache map[string]*APIKey // by hash
	gen   uint64             // bumped by every Forget; a lookup that saw an older one is not cached
}

// NewKeys returns the API keys kept in store.
func NewKeys(store KeyStore) *Keys {
	return &Keys{store: store, Now: time.Now, cache: map[string]*APIKey{}}
}

// BootstrapAdminName is the name of the admin key that connmgr generates on
// first start, and the actor name of CONNMGR_ADMIN_TOKEN.
const BootstrapAdminName = "bootstrap-admin"

// SetAdminToken makes token (CONNMGR_ADMIN_TOKEN) an admin key. It must be
// at least 32 characters.
func (s *Keys) SetAdminToken(token string) error {
	if len(token) < 32 {
		return errors.New("must be at least 32 characters")
	}
	h := sha256.Sum256([]byte(token))
	s.adminToken = h[:]
	return nil
}

// sha256Hex is the hex SHA-256 of s: API keys and consent states are
// stored only as this.
func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Create stores a new key and returns it with the key itself, which is
// shown this once and never again. Returns connections.ValidationErrors.
func (s *Keys) Create(ctx context.Context, nk NewKey) (*APIKey, string, error) {
	now := s.Now().UTC().Truncate(time.Microsecond)
	if err := nk.Validate(now); err != nil {
		return nil, "", err
	}
	secret := KeyPrefix + randomString(32)
	idBytes := make([]byte, 10)
	_, _ = rand.Read(idBytes)
	patterns := nk.Connections
	if patterns == nil {
		patterns = []string{}
	}
	k := &APIKey{ID: "key_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(idBytes)),
		Name: nk.Name, Role: nk.Role, Connections: patterns, Prefix: secret[:len(KeyPrefix)+6],
		CreatedAt: now, CreatedBy: nk.CreatedBy, ExpiresAt: utcPtr(nk.ExpiresAt)}
	if err := s.store.Insert(ctx, k, sha256Hex(secret)); err != nil {
		return nil, "", fmt.Errorf("create API key: %w", err)
	}
	return k, secret, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// List returns the keys that are not revoked, newest first.
func (s *Keys) List(ctx context.Context) ([]*APIKey, error) {
	keys, err := s.store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	return keys, nil
}

// Revoke revokes the key with id at once: when it returns, the key no
// longer authenticates in this process (other replicas hear of it through
// Forget). Returns ErrKeyNotFound.
func (s *Keys) Revoke(ctx context.Context, id string) (*APIKey, error) {
	k, err := s.store.Revoke(ctx, id, s.Now().UTC())
	if err != nil {
		if errors.Is(err, ErrKeyNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("revoke API key: %w", err)
	}
	s.Forget(k.ID)
	return k, nil
}

// Forget drops the key with id from the cache (after a change made by
// another process); id "" drops every cached key. A lookup under way when
// Forget is called does not cache what it read.
func (s *Keys) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	if id == "" {
		clear(s.cache)
		return
	}
	for h, k := range s.cache {
		if k.ID == id {
			delete(s.cache, h)
		}
	}
}

// Authenticate returns the key that presented authenticates, or
// ErrUnauthenticated. A database failure on a key not yet cached returns
// connections.ErrUnavailable.
func (s *Keys) Authenticate(ctx context.Context, presented string) (*APIKey, error) {
	if presented == "" || len(presented) > 256 {
		return nil, ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(presented))
	if s.adminToken != nil && subtle.ConstantTimeCompare(sum[:], s.adminToken) == 1 {
		return &APIKey{ID: "env", Name: BootstrapAdminName, Role: RoleAdmin}, nil
	}
	if !strings.HasPrefix(presented, KeyPrefix) {
		return nil, ErrUnauthenticated
	}
	h := hex.EncodeToString(sum[:])
	s.mu.RLock()
	k, ok := s.cache[h]
	gen := s.gen
	s.mu.RUnlock()
	if !ok {
		var err error
		if k, err = s.store.ByHash(ctx, h); err != nil {
			if errors.Is(err, ErrUnauthenticated) {
				return nil, err
			}
			return nil, fmt.Errorf("authenticate: %w", err)
		}
		s.mu.Lock()
		// A Revoke or Forget since the read began may concern this very
		// key: then what was read must not outlive this request.
		if s.gen == gen {
			s.cache[h] = k
		}
		s.mu.Unlock()
	}
	if k.ExpiresAt != nil && !s.Now().Before(*k.ExpiresAt) {
		return nil, ErrUnauthenticated
	}
	return k, nil
}

// Bootstrap makes sure an admin can get in. When no admin token is
// configured and no key is stored, it creates an admin key and writes it to
// path (mode 0600), returning true; it never logs or returns the key.
func (s *Keys) Bootstrap(ctx context.Context, path string) (bool, error) {
	if s.adminToken != nil {
		return false, nil
	}
	n, err := s.store.CountActive(ctx)
	if err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	_, secret, err := s.Create(ctx, NewKey{Name: BootstrapAdminName, Role: RoleAdmin, CreatedBy: "connmgr"})
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	return true, nil
}
