package store

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/access"
)

type sessionRow struct {
	Hash      string    `gorm:"column:hash;primaryKey"`
	KeyID     string    `gorm:"column:key_id"`
	KeyCheck  string    `gorm:"column:key_check"`
	CreatedAt time.Time `gorm:"column:created_at"`
	ExpiresAt time.Time `gorm:"column:expires_at"`
	IdleUntil time.Time `gorm:"column:idle_until"`
}

func (sessionRow) TableName() string { return "console_sessions" }

// Sessions is the access.SessionStore on a database: only the hash of a session
// id is stored.
type Sessions struct{ db *gorm.DB }

var _ access.SessionStore = (*Sessions)(nil)

// NewSessions returns the console sessions on db.
func NewSessions(db *DB) *Sessions { return &Sessions{db: db.DB} }

// Create implements access.SessionStore. Sessions that ended are dropped in the
// same transaction, which keeps the table small.
func (s *Sessions) Create(ctx context.Context, ss *access.Session) error {
	row := sessionRow{Hash: ss.Hash, KeyID: ss.KeyID, KeyCheck: ss.KeyCheck, CreatedAt: ss.CreatedAt.UTC(),
		ExpiresAt: ss.ExpiresAt.UTC(), IdleUntil: ss.IdleUntil.UTC()}
	return translate(s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("expires_at <= ? OR idle_until <= ?", row.CreatedAt, row.CreatedAt).
			Delete(&sessionRow{}).Error; err != nil {
			return err
		}
		return tx.Create(&row).Error
	}))
}

// Get implements access.SessionStore.
func (s *Sessions) Get(ctx context.Context, hash string, now time.Time) (*access.Session, *access.APIKey, error) {
	// The session and its key's row, if stored and not revoked, in one
	// query: a key revoked on any replica ends its sessions at once.
	var out struct {
		Session sessionRow `gorm:"embedded"`
		Key     keyRow     `gorm:"embedded;embeddedPrefix:k_"`
	}
	now = now.UTC()
	res := s.db.WithContext(ctx).Table("console_sessions AS s").
		Select(`s.hash, s.key_id, s.key_check, s.created_at, s.expires_at, s.idle_until,
			k.id AS k_id, k.name AS k_name, k.role AS k_role, k.connections AS k_connections, k.prefix AS k_prefix,
			k.created_at AS k_created_at, k.created_by AS k_created_by, k.expires_at AS k_expires_at`).
		Joins("LEFT JOIN api_keys AS k ON k.id = s.key_id AND k.revoked_at IS NULL").
		Where("s.hash = ? AND s.expires_at > ? AND s.idle_until > ?", hash, now, now).
		Limit(1).Scan(&out)
	if res.Error != nil {
		return nil, nil, translate(res.Error)
	}
	if res.RowsAffected == 0 {
		return nil, nil, access.ErrNoSession
	}
	r := out.Session
	ss := &access.Session{Hash: r.Hash, KeyID: r.KeyID, KeyCheck: r.KeyCheck, CreatedAt: r.CreatedAt.UTC(),
		ExpiresAt: r.ExpiresAt.UTC(), IdleUntil: r.IdleUntil.UTC()}
	if out.Key.ID == "" {
		return ss, nil, nil
	}
	return ss, out.Key.key(), nil
}

// Touch implements access.SessionStore.
func (s *Sessions) Touch(ctx context.Context, hash string, idleUntil time.Time) error {
	err := s.db.WithContext(ctx).Model(&sessionRow{}).Where("hash = ?", hash).Update("idle_until", idleUntil.UTC()).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil
	}
	return translate(err)
}

// Delete implements access.SessionStore.
func (s *Sessions) Delete(ctx context.Context, hash string) error {
	return translate(s.db.WithContext(ctx).Where("hash = ?", hash).Delete(&sessionRow{}).Error)
}
