package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

type stateRow struct {
	StateHash    string     `gorm:"column:state_hash;primaryKey"`
	ConnectionID int64      `gorm:"column:connection_id"`
	Fingerprint  string     `gorm:"column:fingerprint"`
	Verifier     []byte     `gorm:"column:verifier"`
	Nonce        string     `gorm:"column:nonce"`
	RedirectURI  string     `gorm:"column:redirect_uri"`
	CreatedBy    string     `gorm:"column:created_by"`
	CreatedAt    time.Time  `gorm:"column:created_at"`
	ExpiresAt    time.Time  `gorm:"column:expires_at"`
	UsedAt       *time.Time `gorm:"column:used_at"`
}

func (stateRow) TableName() string { return "oauth_states" }

func stateAD(hash string) []byte { return []byte("connmgr/oauth_state/" + hash) }

// ConsentStates is the security.ConsentStates on a database: only the
// state's hash is stored, the PKCE verifier encrypted.
type ConsentStates struct {
	db     *gorm.DB
	sealer Sealer
}

var _ security.ConsentStates = (*ConsentStates)(nil)

// NewConsentStates returns the pending consents on db.
func NewConsentStates(db *DB, sealer Sealer) *ConsentStates {
	return &ConsentStates{db: db.DB, sealer: sealer}
}

// Create implements security.ConsentStates.
func (s *ConsentStates) Create(ctx context.Context, pc *security.PendingConsent) error {
	ct, err := s.sealer.Seal([]byte(pc.Verifier.Reveal()), stateAD(pc.StateHash))
	if err != nil {
		return err
	}
	row := stateRow{StateHash: pc.StateHash, ConnectionID: pc.ConnectionID, Fingerprint: pc.Fingerprint, Verifier: ct,
		Nonce: pc.Nonce, RedirectURI: pc.RedirectURI, CreatedBy: pc.CreatedBy, CreatedAt: pc.CreatedAt, ExpiresAt: pc.ExpiresAt}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Old states are of no use; dropping them here keeps the table small.
		if err := tx.Where("expires_at < ?", pc.CreatedAt.Add(-time.Hour)).Delete(&stateRow{}).Error; err != nil {
			return err
		}
		return tx.Create(&row).Error
	})
	if errors.Is(err, gorm.ErrForeignKeyViolated) {
		return connections.ErrNotFound
	}
	return translate(err)
}

// Take implements security.ConsentStates.
func (s *ConsentStates) Take(ctx context.Context, hash string, now time.Time) (*security.PendingConsent, error) {
	var row stateRow
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&stateRow{}).Where("state_hash = ? AND used_at IS NULL AND expires_at > ?", hash, now).
			Update("used_at", now)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return security.ErrInvalidState
		}
		return tx.Where("state_hash = ?", hash).Take(&row).Error
	})
	if err != nil {
		if errors.Is(err, security.ErrInvalidState) {
			return nil, err
		}
		return nil, fmt.Errorf("check state: %w", translate(err))
	}
	verifier, err := s.sealer.Open(row.Verifier, stateAD(hash))
	if err != nil {
		return nil, fmt.Errorf("decrypt consent verifier: %w", err)
	}
	return &security.PendingConsent{StateHash: hash, ConnectionID: row.ConnectionID, Fingerprint: row.Fingerprint,
		Verifier: connections.NewSecret(string(verifier)), Nonce: row.Nonce, RedirectURI: row.RedirectURI,
		CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt.UTC(), ExpiresAt: row.ExpiresAt.UTC()}, nil
}
