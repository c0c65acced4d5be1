package security

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/connmgr/connmgr/connections"
)

// errStale means a token write lost to a newer one.
var errStale = errors.New("token changed concurrently")

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
	Version       int64      `gorm:"column:version"`
	LeaseOwner    string     `gorm:"column:lease_owner"`
	LeaseUntil    *time.Time `gorm:"column:lease_until"`
	LastError     string     `gorm:"column:last_error"`
	Failures      int        `gorm:"column:failures"`
	NextAttemptAt *time.Time `gorm:"column:next_attempt_at"`
	Blocked       bool       `gorm:"column:blocked"`
	UpdatedAt     time.Time  `gorm:"column:updated_at"`
}

func (tokenRow) TableName() string { return "tokens" }

// tokenState is a connection's stored token with its refresh bookkeeping.
type tokenState struct {
	Token       *Token // nil when none is stored
	Version     int64
	LeaseOwner  string
	LastError   string
	Failures    int
	NextAttempt time.Time
	// Blocked stops automatic refresh after a permanent failure.
	Blocked bool
}

// tokenStore keeps tokens encrypted in the tokens table, with a lease per
// connection so that one process at a time talks to the token endpoint
// for it, and a version so that a write never replaces a newer token.
type tokenStore struct {
	db     *gorm.DB
	sealer connections.Sealer
}

func (s *tokenStore) load(ctx context.Context, id int64) (*tokenState, error) {
	var row tokenRow
	err := s.db.WithContext(ctx).Where("connection_id = ?", id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return &tokenState{}, nil
	}
	if err != nil {
		return nil, connections.Translate(err)
	}
	return s.state(&row)
}

func (s *tokenStore) state(row *tokenRow) (*tokenState, error) {
	st := &tokenState{Version: row.Version, LeaseOwner: row.LeaseOwner, LastError: row.LastError,
		Failures: row.Failures, Blocked: row.Blocked}
	if row.NextAttemptAt != nil {
		st.NextAttempt = row.NextAttemptAt.UTC()
	}
	if len(row.AccessToken) == 0 || row.ExpiresAt == nil || row.ObtainedAt == nil {
		return st, nil
	}
	t := &Token{TokenType: row.TokenType, ObtainedAt: row.ObtainedAt.UTC(), ExpiresAt: row.ExpiresAt.UTC(),
		Version: row.Version, Scopes: strings.Fields(row.Scopes)}
	access, err := s.sealer.Open(row.AccessToken, TokenAD(row.ConnectionID, "access"))
	if err != nil {
		return nil, fmt.Errorf("decrypt token of connection %d: %w", row.ConnectionID, err)
	}
	t.AccessToken = connections.NewSecret(string(access))
	if len(row.RefreshToken) > 0 {
		refresh, err := s.sealer.Open(row.RefreshToken, TokenAD(row.ConnectionID, "refresh"))
		if err != nil {
			return nil, fmt.Errorf("decrypt refresh token of connection %d: %w", row.ConnectionID, err)
		}
		t.RefreshToken = connections.NewSecret(string(refresh))
	}
	st.Token = t
	return st, nil
}

// save stores t for connection id over version prev (0: no token yet),
// clears failures and releases owner's lease, all in one write. A missing
// RefreshToken keeps the stored one. It returns the new version, or
// errStale when the stored version is no longer prev.
func (s *tokenStore) save(ctx context.Context, id int64, prev int64, t *Token, owner string, now time.Time) (int64, error) {
	access, err := s.sealer.Seal([]byte(t.AccessToken.Reveal()), TokenAD(id, "access"))
	if err != nil {
		return 0, err
	}
	updates := map[string]any{"access_token": access, "token_type": t.TokenType, "scopes": strings.Join(t.Scopes, " "),
		"obtained_at": t.ObtainedAt, "expires_at": t.ExpiresAt, "version": prev + 1, "last_error": "",
		"failures": 0, "next_attempt_at": nil, "blocked": false, "updated_at": now}
	if t.RefreshToken.IsSet() {
		refresh, err := s.sealer.Seal([]byte(t.RefreshToken.Reveal()), TokenAD(id, "refresh"))
		if err != nil {
			return 0, err
		}
		updates["refresh_token"] = refresh
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.ensureRow(tx, id, now); err != nil {
			return err
		}
		res := tx.Model(&tokenRow{}).Where("connection_id = ? AND version = ?", id, prev).Updates(updates)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return errStale
		}
		return tx.Model(&tokenRow{}).Where("connection_id = ? AND lease_owner = ?", id, owner).
			Updates(map[string]any{"lease_owner": "", "lease_until": nil}).Error
	})
	if err != nil {
		if errors.Is(err, errStale) {
			return 0, err
		}
		return 0, fmt.Errorf("save token: %w", connections.Translate(err))
	}
	return prev + 1, nil
}

// ensureRow creates the bookkeeping row of a connection that has none.
// A connection deleted meanwhile makes it fail with ErrNotFound.
func (s *tokenStore) ensureRow(tx *gorm.DB, id int64, now time.Time) error {
	err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&tokenRow{ConnectionID: id, UpdatedAt: now}).Error
	if errors.Is(err, gorm.ErrForeignKeyViolated) {
		return connections.ErrNotFound
	}
	return err
}

// lease tries to take the refresh lease of connection id for owner until
// until. It succeeds when nobody holds it, it expired, or owner holds it.
func (s *tokenStore) lease(ctx context.Context, id int64, owner string, now, until time.Time) (bool, error) {
	var ok bool
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.ensureRow(tx, id, now); err != nil {
			return err
		}
		res := tx.Model(&tokenRow{}).
			Where("connection_id = ? AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)", id, now, owner).
			Updates(map[string]any{"lease_owner": owner, "lease_until": until})
		ok = res.RowsAffected == 1
		return res.Error
	})
	if err != nil {
		return false, fmt.Errorf("take token lease: %w", connections.Translate(err))
	}
	return ok, nil
}

// release gives up owner's lease of connection id.
func (s *tokenStore) release(ctx context.Context, id int64, owner string) error {
	err := s.db.WithContext(ctx).Model(&tokenRow{}).Where("connection_id = ? AND lease_owner = ?", id, owner).
		Updates(map[string]any{"lease_owner": "", "lease_until": nil}).Error
	return connections.Translate(err)
}

// fail records a failed refresh and releases owner's lease.
func (s *tokenStore) fail(ctx context.Context, id int64, owner, reason string, failures int, next *time.Time, blocked bool, now time.Time) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.ensureRow(tx, id, now); err != nil {
			return err
		}
		return tx.Model(&tokenRow{}).Where("connection_id = ?", id).Updates(map[string]any{
			"last_error": reason, "failures": failures, "next_attempt_at": next, "blocked": blocked,
			"updated_at": now}).Error
	})
	if err == nil {
		err = s.release(ctx, id, owner)
	}
	return connections.Translate(err)
}

// dropAccess forgets the stored access token of connection id if it is
// still version v (an upstream rejected it), keeping the refresh token.
func (s *tokenStore) dropAccess(ctx context.Context, id, v int64, now time.Time) error {
	err := s.db.WithContext(ctx).Model(&tokenRow{}).Where("connection_id = ? AND version = ?", id, v).
		Updates(map[string]any{"expires_at": now, "updated_at": now}).Error
	return connections.Translate(err)
}

// due returns the bookkeeping (without secrets) of every token that is not
// blocked, for the scheduler to pick from.
func (s *tokenStore) due(ctx context.Context) ([]tokenRow, error) {
	var rows []tokenRow
	err := s.db.WithContext(ctx).Select("connection_id", "obtained_at", "expires_at", "version", "lease_owner",
		"lease_until", "next_attempt_at").
		Where("blocked = ? AND expires_at IS NOT NULL", false).Find(&rows).Error
	return rows, connections.Translate(err)
}

// Reseal re-encrypts every token for which stale reports true, with a
// compare-and-swap on the ciphertext. Safe while the service runs and to
// repeat; returns how many values were re-encrypted.
func (s *tokenStore) Reseal(ctx context.Context, stale func([]byte) bool) (int, error) {
	var rows []tokenRow
	if err := s.db.WithContext(ctx).Select("connection_id", "access_token", "refresh_token").Find(&rows).Error; err != nil {
		return 0, connections.Translate(err)
	}
	n := 0
	for _, r := range rows {
		for _, f := range []struct {
			col, field string
			ct         []byte
		}{{"access_token", "access", r.AccessToken}, {"refresh_token", "refresh", r.RefreshToken}} {
			if len(f.ct) == 0 || !stale(f.ct) {
				continue
			}
			done, err := reseal(ctx, s.db, s.sealer, "tokens", f.col, "connection_id = ?", []any{r.ConnectionID}, f.ct, TokenAD(r.ConnectionID, f.field))
			if err != nil {
				return n, err
			}
			n += done
		}
	}
	return n, nil
}

// reseal re-encrypts one stored value in place if it is unchanged.
func reseal(ctx context.Context, db *gorm.DB, sealer connections.Sealer, table, col, where string, args []any, ct, ad []byte) (int, error) {
	pt, err := sealer.Open(ct, ad)
	if err != nil {
		return 0, fmt.Errorf("decrypt %s.%s: %w", table, col, err)
	}
	fresh, err := sealer.Seal(pt, ad)
	if err != nil {
		return 0, err
	}
	res := db.WithContext(ctx).Table(table).Where(where+" AND "+col+" = ?", append(args, ct)...).Update(col, fresh)
	return int(res.RowsAffected), connections.Translate(res.Error)
}
