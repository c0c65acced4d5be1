package security

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"

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
)

var rolePerms = map[Role][]Permission{
	RoleAdmin:     {PermRead, PermWrite, PermInvoke, PermManageKeys, PermAudit},
	RoleDeveloper: {PermRead, PermWrite, PermInvoke},
	RoleInvoker:   {PermInvoke},
	RoleViewer:    {PermRead, PermAudit},
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
// run of characters and every other character matches itself.
func MatchPattern(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return len(name) >= len(last) && strings.HasSuffix(name, last)
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

type keyRow struct {
	ID          string     `gorm:"column:id;primaryKey"`
	Name        string     `gorm:"column:name"`
	Role        string     `gorm:"column:role"`
	Connections string     `gorm:"column:connections"`
	Hash        string     `gorm:"column:hash"`
	Prefix      string     `gorm:"column:prefix"`
	CreatedAt   time.Time  `gorm:"column:created_at"`
	CreatedBy   string     `gorm:"column:created_by"`
	ExpiresAt   *time.Time `gorm:"column:expires_at"`
	RevokedAt   *time.Time `gorm:"column:revoked_at"`
}

func (keyRow) TableName() string { return "api_keys" }

func (r *keyRow) key() *APIKey {
	k := &APIKey{ID: r.ID, Name: r.Name, Role: Role(r.Role), Prefix: r.Prefix, CreatedAt: r.CreatedAt.UTC(),
		CreatedBy: r.CreatedBy, ExpiresAt: utcPtr(r.ExpiresAt), RevokedAt: utcPtr(r.RevokedAt)}
	_ = json.Unmarshal([]byte(r.Connections), &k.Connections)
	return k
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// KeyStore keeps connmgr's API keys and authenticates requests. Known keys
// are cached in memory, so a warm request costs one SHA-256 and a map
// lookup; Revoke and Forget drop a key from the cache at once. It is safe for
// concurrent use.
type KeyStore struct {
	db  *gorm.DB
	Now func() time.Time

	// adminToken is CONNMGR_ADMIN_TOKEN's hash, or nil.
	adminToken []byte

	mu    sync.RWMutex
	cache map[string]*APIKey // by hash
}

// NewKeyStore returns a key store on db.
func NewKeyStore(db *gorm.DB) *KeyStore {
	return &KeyStore{db: db, Now: time.Now, cache: map[string]*APIKey{}}
}

// BootstrapAdminName is the name of the admin key that connmgr generates on
// first start, and the actor name of CONNMGR_ADMIN_TOKEN.
const BootstrapAdminName = "bootstrap-admin"

// SetAdminToken makes token (CONNMGR_ADMIN_TOKEN) an admin key. It must be
// at least 32 characters.
func (s *KeyStore) SetAdminToken(token string) error {
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
func (s *KeyStore) Create(ctx context.Context, nk NewKey) (*APIKey, string, error) {
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
	row := keyRow{ID: "key_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(idBytes)),
		Name: nk.Name, Role: string(nk.Role), Connections: patternsJSON(patterns),
		Hash: sha256Hex(secret), Prefix: secret[:len(KeyPrefix)+6], CreatedAt: now, CreatedBy: nk.CreatedBy,
		ExpiresAt: utcPtr(nk.ExpiresAt)}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return nil, "", fmt.Errorf("create API key: %w", connections.Translate(err))
	}
	return row.key(), secret, nil
}

// patternsJSON stores name patterns; a []string always marshals.
func patternsJSON(p []string) string {
	b, _ := json.Marshal(p)
	return string(b)
}

// List returns the keys that are not revoked, newest first.
func (s *KeyStore) List(ctx context.Context) ([]*APIKey, error) {
	var rows []keyRow
	if err := s.db.WithContext(ctx).Where("revoked_at IS NULL").Order("created_at DESC, id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list API keys: %w", connections.Translate(err))
	}
	keys := make([]*APIKey, len(rows))
	for i := range rows {
		keys[i] = rows[i].key()
	}
	return keys, nil
}

// Revoke revokes the key with id at once. Returns ErrKeyNotFound.
func (s *KeyStore) Revoke(ctx context.Context, id string) (*APIKey, error) {
	now := s.Now().UTC()
	var row keyRow
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("id = ? AND revoked_at IS NULL", id).Take(&row).Error; err != nil {
			return err
		}
		return tx.Model(&keyRow{}).Where("id = ?", id).Update("revoked_at", now).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("revoke API key: %w", connections.Translate(err))
	}
	s.Forget(row.ID)
	row.RevokedAt = &now
	return row.key(), nil
}

// Forget drops the key with id from the cache (after a change made by
// another process); id "" drops every cached key.
func (s *KeyStore) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
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
func (s *KeyStore) Authenticate(ctx context.Context, presented string) (*APIKey, error) {
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
	s.mu.RUnlock()
	if !ok {
		var row keyRow
		err := s.db.WithContext(ctx).Where("hash = ? AND revoked_at IS NULL", h).Take(&row).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, ErrUnauthenticated
		}
		if err != nil {
			return nil, fmt.Errorf("authenticate: %w", connections.Translate(err))
		}
		k = row.key()
		s.mu.Lock()
		s.cache[h] = k
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
func (s *KeyStore) Bootstrap(ctx context.Context, path string) (bool, error) {
	if s.adminToken != nil {
		return false, nil
	}
	var n int64
	if err := s.db.WithContext(ctx).Model(&keyRow{}).Where("revoked_at IS NULL").Count(&n).Error; err != nil {
		return false, connections.Translate(err)
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
