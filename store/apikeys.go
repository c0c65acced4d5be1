package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/access"
)

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

func (r *keyRow) key() *access.APIKey {
	k := &access.APIKey{ID: r.ID, Name: r.Name, Role: access.Role(r.Role), Prefix: r.Prefix, CreatedAt: r.CreatedAt.UTC(),
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

// APIKeys is the access.KeyStore on a database.
type APIKeys struct{ db *gorm.DB }

var _ access.KeyStore = (*APIKeys)(nil)

// NewAPIKeys returns the API key store on db.
func NewAPIKeys(db *DB) *APIKeys { return &APIKeys{db: db.DB} }

// Insert implements access.KeyStore.
func (s *APIKeys) Insert(ctx context.Context, k *access.APIKey, hash string) error {
	patterns, _ := json.Marshal(k.Connections)
	row := keyRow{ID: k.ID, Name: k.Name, Role: string(k.Role), Connections: string(patterns), Hash: hash,
		Prefix: k.Prefix, CreatedAt: k.CreatedAt, CreatedBy: k.CreatedBy, ExpiresAt: k.ExpiresAt}
	return translate(s.db.WithContext(ctx).Create(&row).Error)
}

// List implements access.KeyStore.
func (s *APIKeys) List(ctx context.Context) ([]*access.APIKey, error) {
	var rows []keyRow
	if err := s.db.WithContext(ctx).Where("revoked_at IS NULL").Order("created_at DESC, id").Find(&rows).Error; err != nil {
		return nil, translate(err)
	}
	keys := make([]*access.APIKey, len(rows))
	for i := range rows {
		keys[i] = rows[i].key()
	}
	return keys, nil
}

// Revoke implements access.KeyStore.
func (s *APIKeys) Revoke(ctx context.Context, id string, now time.Time) (*access.APIKey, error) {
	var row keyRow
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("id = ? AND revoked_at IS NULL", id).Take(&row).Error; err != nil {
			return err
		}
		return tx.Model(&keyRow{}).Where("id = ?", id).Update("revoked_at", now).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, access.ErrKeyNotFound
	}
	if err != nil {
		return nil, translate(err)
	}
	row.RevokedAt = &now
	return row.key(), nil
}

// ByHash implements access.KeyStore.
func (s *APIKeys) ByHash(ctx context.Context, hash string) (*access.APIKey, error) {
	var row keyRow
	err := s.db.WithContext(ctx).Where("hash = ? AND revoked_at IS NULL", hash).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, access.ErrUnauthenticated
	}
	if err != nil {
		return nil, translate(err)
	}
	return row.key(), nil
}

// CountActive implements access.KeyStore.
func (s *APIKeys) CountActive(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&keyRow{}).Where("revoked_at IS NULL").Count(&n).Error
	return n, translate(err)
}
