package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// TokenAD is the additional data that binds a token ciphertext to its
// connection and field ("access" or "refresh").
func TokenAD(connectionID int64, field string) []byte {
	return fmt.Appendf(nil, "connmgr/token/%d/%s", connectionID, field)
}

type tokenRow struct {
	ConnectionID  int64      `gorm:"column:connection_id;primaryKey"`
	AccessToken   []byte     `gorm:"column:access_token"`
	RefreshToken  []byte     `gorm:"column:refresh_token"`
	TokenType     string     `gorm:"column:token_type"`
	Scopes        string     `gorm:"column:scopes"`
	ObtainedAt    *time.Time `gorm:"column:obtained_at"`
	ExpiresAt     *time.Time `gorm:"column:expires_at"`
	RefreshAt     *time.Time `gorm:"column:refresh_at"`
	LastRefreshAt *time.Time `gorm:"column:last_refresh_at"`
	Fingerprint   string     `gorm:"column:fingerprint"`
	Version       int64      `gorm:"column:version"`
	LeaseOwner    string     `gorm:"column:lease_owner"`
	LeaseUntil    *time.Time `gorm:"column:lease_until"`
	LastError     string     `gorm:"column:last_error"`
	Failures      int        `gorm:"column:failures"`
	NextAttemptAt *time.Time `gorm:"column:next_attempt_at"`
	Blocked       bool       `gorm:"column:blocked"`
	NeedsConsent  bool       `gorm:"column:needs_consent"`
	UpdatedAt     time.Time  `gorm:"column:updated_at"`
}

func (tokenRow) TableName() string { return "tokens" }

// Tokens is the security.TokenStore on a database: tokens encrypted in
// the tokens table, with a lease and a version per connection.
type Tokens struct {
	db     *gorm.DB
	sealer Sealer
}

var _ security.TokenStore = (*Tokens)(nil)

// NewTokens returns the token store on db, encrypting with sealer.
func NewTokens(db *DB, sealer Sealer) *Tokens { return &Tokens{db: db.DB, sealer: sealer} }

// Load implements security.TokenStore.
func (s *Tokens) Load(ctx context.Context, id int64) (*security.TokenState, error) {
	var row tokenRow
	err := s.db.WithContext(ctx).Where("connection_id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return &security.TokenState{}, nil
	}
	if err != nil {
		return nil, translate(err)
	}
	st := bookkeeping(&row)
	if len(row.AccessToken) == 0 || st.Token == nil {
		st.Token = nil
		return st, nil
	}
	access, err := s.sealer.Open(row.AccessToken, TokenAD(row.ConnectionID, "access"))
	if err != nil {
		return nil, fmt.Errorf("decrypt token of connection %d: %w", row.ConnectionID, err)
	}
	st.Token.AccessToken = connections.NewSecret(string(access))
	if len(row.RefreshToken) > 0 {
		refresh, err := s.sealer.Open(row.RefreshToken, TokenAD(row.ConnectionID, "refresh"))
		if err != nil {
			return nil, fmt.Errorf("decrypt refresh token of connection %d: %w", row.ConnectionID, err)
		}
		st.Token.RefreshToken = connections.NewSecret(string(refresh))
	}
	return st, nil
}

// bookkeeping converts a row without decrypting: Token, when the row has
// one, holds its times and scopes only.
func bookkeeping(row *tokenRow) *security.TokenState {
	st := &security.TokenState{Version: row.Version, LeaseOwner: row.LeaseOwner, LastError: row.LastError,
		Failures: row.Failures, Blocked: row.Blocked, NeedsConsent: row.NeedsConsent, Fingerprint: row.Fingerprint}
	st.NextAttempt = utc(row.NextAttemptAt)
	st.RefreshAt = utc(row.RefreshAt)
	st.LastRefreshAt = utc(row.LastRefreshAt)
	if row.ExpiresAt != nil && row.ObtainedAt != nil {
		st.Token = &security.Token{TokenType: row.TokenType, ObtainedAt: row.ObtainedAt.UTC(),
			ExpiresAt: row.ExpiresAt.UTC(), Version: row.Version, Scopes: strings.Fields(row.Scopes)}
		if st.RefreshAt.IsZero() {
			st.RefreshAt = st.Token.RefreshAt()
		}
	}
	return st
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// States implements security.TokenStore.
func (s *Tokens) States(ctx context.Context, ids []int64) (map[int64]*security.TokenState, error) {
	var rows []tokenRow
	err := s.db.WithContext(ctx).Omit("access_token", "refresh_token").Where("connection_id IN ?", ids).Find(&rows).Error
	if err != nil {
		return nil, translate(err)
	}
	out := make(map[int64]*security.TokenState, len(rows))
	for i := range rows {
		out[rows[i].ConnectionID] = bookkeeping(&rows[i])
	}
	return out, nil
}

// Save implements security.TokenStore.
func (s *Tokens) Save(ctx context.Context, id int64, fp string, prev int64, t *security.Token, refreshAt time.Time, owner string, now time.Time) (int64, error) {
	access, err := s.sealer.Seal([]byte(t.AccessToken.Reveal()), TokenAD(id, "access"))
	if err != nil {
		return 0, err
	}
	updates := map[string]any{"access_token": access, "token_type": t.TokenType, "scopes": strings.Join(t.Scopes, " "),
		"obtained_at": t.ObtainedAt, "expires_at": t.ExpiresAt, "refresh_at": refreshAt.UTC(), "last_refresh_at": now,
		"fingerprint": fp, "version": prev + 1, "last_error": "", "failures": 0, "next_attempt_at": nil,
		"blocked": false, "needs_consent": false, "updated_at": now}
	if t.RefreshToken.IsSet() {
		refresh, err := s.sealer.Seal([]byte(t.RefreshToken.Reveal()), TokenAD(id, "refresh"))
		if err != nil {
			return 0, err
		}
		updates["refresh_token"] = refresh
	} else {
		// Keep the stored refresh token, if it was obtained under the same
		// configuration (SET expressions see the row before the update).
		updates["refresh_token"] = gorm.Expr("CASE WHEN fingerprint = ? THEN refresh_token END", fp)
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		current, err := lockFingerprint(tx, id)
		if err != nil {
			return err
		}
		if current != fp {
			return security.ErrConfigChanged
		}
		if err := ensureRow(tx, id, now); err != nil {
			return err
		}
		res := tx.Model(&tokenRow{}).Where("connection_id = ? AND version = ?", id, prev).Updates(updates)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return security.ErrStale
		}
		return releaseLease(tx, id, owner)
	})
	if err != nil {
		if errors.Is(err, security.ErrStale) || errors.Is(err, security.ErrConfigChanged) || errors.Is(err, connections.ErrNotFound) {
			return 0, err
		}
		return 0, fmt.Errorf("save token: %w", translate(err))
	}
	return prev + 1, nil
}

// ensureRow creates the bookkeeping row of a connection that has none.
// A connection deleted meanwhile makes it fail with ErrNotFound.
func ensureRow(tx *gorm.DB, id int64, now time.Time) error {
	err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&tokenRow{ConnectionID: id, UpdatedAt: now}).Error
	if errors.Is(err, gorm.ErrForeignKeyViolated) {
		return connections.ErrNotFound
	}
	return err
}

// Lease implements security.TokenStore.
func (s *Tokens) Lease(ctx context.Context, id int64, owner string, now, until time.Time) (bool, error) {
	var ok bool
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&tokenRow{}).
			Where("connection_id = ? AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)", id, now, owner).
			Updates(map[string]any{"lease_owner": owner, "lease_until": until})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 1 {
			ok = true
			return nil
		}
		// No row yet, or someone else's lease: make sure the row exists
		// and try once more.
		if err := ensureRow(tx, id, now); err != nil {
			return err
		}
		res = tx.Model(&tokenRow{}).
			Where("connection_id = ? AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)", id, now, owner).
			Updates(map[string]any{"lease_owner": owner, "lease_until": until})
		ok = res.RowsAffected == 1
		return res.Error
	})
	if err != nil {
		if errors.Is(err, connections.ErrNotFound) {
			return false, err
		}
		return false, fmt.Errorf("take token lease: %w", translate(err))
	}
	return ok, nil
}

// Release implements security.TokenStore.
func (s *Tokens) Release(ctx context.Context, id int64, owner string) error {
	return translate(releaseLease(s.db.WithContext(ctx), id, owner))
}

// releaseLease gives up owner's lease of connection id's token.
func releaseLease(db *gorm.DB, id int64, owner string) error {
	return db.Model(&tokenRow{}).Where("connection_id = ? AND lease_owner = ?", id, owner).
		Updates(map[string]any{"lease_owner": "", "lease_until": nil}).Error
}

// lockFingerprint locks connection id's row for the transaction and
// returns its fingerprint, or connections.ErrNotFound. Token writes lock
// it first, so a concurrent change of the configuration either commits
// before (and the write sees the new fingerprint) or waits for the write
// (and then drops the token).
func lockFingerprint(tx *gorm.DB, id int64) (string, error) {
	var conn connRow
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("id", "fingerprint").Where("id = ?", id).Take(&conn).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", connections.ErrNotFound
	}
	return conn.Fingerprint, err
}

// Fail implements security.TokenStore.
func (s *Tokens) Fail(ctx context.Context, id int64, owner string, f security.Failure, now time.Time) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// A failure of a configuration that has changed since says nothing
		// about the current one: it only gives up the lease (it must not
		// drop the current configuration's token, nor block its refresh).
		current, err := lockFingerprint(tx, id)
		if err != nil {
			return err
		}
		if current != f.Fingerprint {
			return releaseLease(tx, id, owner)
		}
		if err := ensureRow(tx, id, now); err != nil {
			return err
		}
		// A token of another configuration is of no use any more: the
		// failure replaces it, so that its bookkeeping is this one's.
		if err := tx.Model(&tokenRow{}).Where("connection_id = ? AND fingerprint <> ?", id, f.Fingerprint).
			Updates(map[string]any{"access_token": nil, "refresh_token": nil, "obtained_at": nil, "expires_at": nil,
				"refresh_at": nil, "fingerprint": f.Fingerprint}).Error; err != nil {
			return err
		}
		return tx.Model(&tokenRow{}).Where("connection_id = ?", id).Updates(map[string]any{
			"last_error": f.Reason, "failures": f.Failures, "next_attempt_at": f.NextAttempt, "blocked": f.Blocked,
			"needs_consent": f.NeedsConsent, "updated_at": now, "lease_owner": gorm.Expr(
				"CASE WHEN lease_owner = ? THEN '' ELSE lease_owner END", owner),
			"lease_until": gorm.Expr("CASE WHEN lease_owner = ? THEN NULL ELSE lease_until END", owner)}).Error
	})
	return translate(err)
}

// DropAccess implements security.TokenStore.
func (s *Tokens) DropAccess(ctx context.Context, id, v int64, now time.Time) error {
	err := s.db.WithContext(ctx).Model(&tokenRow{}).Where("connection_id = ? AND version = ?", id, v).
		Updates(map[string]any{"expires_at": now, "refresh_at": now, "updated_at": now}).Error
	return translate(err)
}

// Due implements security.TokenStore. Rows without a refresh time (written
// before it was kept) are due at once.
func (s *Tokens) Due(ctx context.Context, now, before time.Time, limit int) ([]security.DueToken, error) {
	var rows []struct {
		ConnectionID int64      `gorm:"column:connection_id"`
		Name         string     `gorm:"column:name"`
		Version      int64      `gorm:"column:version"`
		RefreshAt    *time.Time `gorm:"column:refresh_at"`
		NextAttempt  *time.Time `gorm:"column:next_attempt_at"`
	}
	err := s.db.WithContext(ctx).Table("tokens").
		Select("tokens.connection_id, connections.name, tokens.version, tokens.refresh_at, tokens.next_attempt_at").
		Joins("JOIN connections ON connections.id = tokens.connection_id").
		Where("NOT tokens.blocked AND tokens.expires_at IS NOT NULL AND (tokens.refresh_at IS NULL OR tokens.refresh_at <= ?)", before).
		Where("tokens.lease_until IS NULL OR tokens.lease_until < ?", now).
		Where("tokens.next_attempt_at IS NULL OR tokens.next_attempt_at <= ?", before).
		Order("tokens.refresh_at").Limit(limit).Scan(&rows).Error
	if err != nil {
		return nil, translate(err)
	}
	out := make([]security.DueToken, len(rows))
	for i, r := range rows {
		at := utc(r.RefreshAt)
		if next := utc(r.NextAttempt); next.After(at) {
			at = next // backing off after a transient failure
		}
		out[i] = security.DueToken{ConnectionID: r.ConnectionID, Name: r.Name, Version: r.Version, RefreshAt: at}
	}
	return out, nil
}

// Expiry is when the current token of a connection expires.
type Expiry struct {
	Name      string
	ExpiresAt time.Time
}

// Expiries returns, for every connection that holds a token of its
// current configuration, when that token expires, by connection name.
func (s *Tokens) Expiries(ctx context.Context) ([]Expiry, error) {
	var rows []struct {
		Name      string     `gorm:"column:name"`
		ExpiresAt *time.Time `gorm:"column:expires_at"`
	}
	err := s.db.WithContext(ctx).Table("tokens").Select("connections.name, tokens.expires_at").
		Joins("JOIN connections ON connections.id = tokens.connection_id AND connections.fingerprint = tokens.fingerprint").
		Where("tokens.expires_at IS NOT NULL AND tokens.access_token IS NOT NULL").Scan(&rows).Error
	if err != nil {
		return nil, translate(err)
	}
	out := make([]Expiry, 0, len(rows))
	for _, r := range rows {
		out = append(out, Expiry{Name: r.Name, ExpiresAt: utc(r.ExpiresAt)})
	}
	return out, nil
}
