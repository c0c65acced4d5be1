// Package audit keeps the append-only record of who did what.
//
// Events are written by the Store's observers, which the service wiring
// attaches to connections.Service (ConnectionChanged, StatusChanged), the
// token manager (TokenFailed) and the API handlers (Consent, Tested,
// APIKey). An event names what changed — field names, secret fingerprints,
// statuses, reasons — and never holds a secret value. The table is
// append-only in the database itself: triggers refuse UPDATE and DELETE.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/connections"
)

// The actions of audit events. The strings are stable: clients filter on
// them.
const (
	ActionConnectionCreated = "connection.created"
	ActionConnectionUpdated = "connection.updated"
	ActionConnectionDeleted = "connection.deleted"
	ActionSecretSet         = "secret.set"
	ActionSecretChanged     = "secret.changed"
	ActionSecretRemoved     = "secret.removed"
	ActionConsentStarted    = "consent.started"
	ActionConsentFinished   = "consent.finished"
	ActionConsentFailed     = "consent.failed"
	ActionConnectionTested  = "connection.tested"
	ActionStatusChanged     = "status.changed"
	ActionTokenRefreshFail  = "token.refresh_failed"
	ActionAPIKeyCreated     = "apikey.created"
	ActionAPIKeyRevoked     = "apikey.revoked"
)

// SystemActor is the actor of events that no API caller caused, such as a
// scheduled token refresh: connmgr itself.
const SystemActor = "connmgr"

// MaxLimit is the largest page List returns.
const MaxLimit = 500

// Event is one entry of the audit log.
type Event struct {
	// ID orders events: a later event has a larger ID.
	ID int64
	At time.Time
	// Actor is who did it: the name of the caller's API key, or SystemActor.
	Actor  string
	Action string
	// Connection is the name of the connection concerned, or "".
	Connection string
	// Detail says what changed. It never holds secret values: only field
	// names, fingerprints, statuses and reasons.
	Detail    map[string]any
	RequestID string
}

// Filter selects events for List. Zero fields do not filter.
type Filter struct {
	Connection string
	Actor      string
	Action     string
	// Since and Until bound At: Since <= At < Until.
	Since, Until time.Time
	// Before, when positive, is a cursor: only events with ID < Before.
	Before int64
	// Limit is the page size, 1..MaxLimit; other values mean MaxLimit.
	Limit int
}

// Store keeps audit events in the audit_events table (SQLite or
// PostgreSQL), which it only ever inserts into. It is safe for concurrent
// use. Set its fields before first use.
type Store struct {
	db  *gorm.DB
	key []byte
	// Now stamps events; time.Now when nil.
	Now func() time.Time
	// Logger receives the errors of observers, which cannot return them;
	// nil logs nothing.
	Logger *slog.Logger

	failures atomic.Int64
}

// NewStore returns a store on db (migrated to include audit_events).
// fingerprintKey keys the HMAC of secret fingerprints; it must be secret,
// or a reader of the log could test guesses of a secret against its
// fingerprint. It panics when the key is shorter than 16 bytes.
func NewStore(db *gorm.DB, fingerprintKey []byte) *Store {
	if len(fingerprintKey) < 16 {
		panic("audit: fingerprint key must be at least 16 bytes")
	}
	return &Store{db: db, key: append([]byte(nil), fingerprintKey...)}
}

// Fingerprint returns "hmac-sha256:" and the first 16 hex digits of the
// HMAC-SHA256 of secret under the store's key. Equal secrets have equal
// fingerprints, so the log shows whether a secret changed without showing
// it.
func (s *Store) Fingerprint(secret string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(secret))
	return "hmac-sha256:" + hex.EncodeToString(mac.Sum(nil))[:16]
}

// Failures returns how many events observers failed to record.
func (s *Store) Failures() int64 { return s.failures.Load() }

type requestKey struct{}

type request struct{ actor, id string }

// WithRequest returns ctx carrying the caller of a request and the
// request's id, which Record uses for events that name neither.
func WithRequest(ctx context.Context, actor, requestID string) context.Context {
	return context.WithValue(ctx, requestKey{}, request{actor, requestID})
}

// eventRow is an audit_events row.
type eventRow struct {
	ID         int64     `gorm:"column:id;primaryKey"`
	At         time.Time `gorm:"column:at"`
	Actor      string    `gorm:"column:actor"`
	Action     string    `gorm:"column:action"`
	Connection string    `gorm:"column:connection"`
	Detail     string    `gorm:"column:detail"`
	RequestID  string    `gorm:"column:request_id"`
}

func (eventRow) TableName() string { return "audit_events" }

// Record appends e to the log. It sets At to now when zero, and Actor and
// RequestID from the context (see WithRequest) when empty; an event with
// no actor anywhere is recorded as SystemActor's. Returns an error when
// e has no Action or a Detail that is not JSON, and one wrapping
// connections.ErrUnavailable when the database cannot be reached.
func (s *Store) Record(ctx context.Context, e Event) error {
	return s.record(ctx, []Event{e})
}

// record inserts events in one statement: all or none.
func (s *Store) record(ctx context.Context, events []Event) error {
	req, _ := ctx.Value(requestKey{}).(request)
	now := s.now()
	rows := make([]eventRow, len(events))
	for i, e := range events {
		if e.Action == "" {
			return errors.New("record audit event: no action")
		}
		detail := []byte("{}")
		if len(e.Detail) > 0 {
			var err error
			if detail, err = json.Marshal(e.Detail); err != nil {
				return fmt.Errorf("record audit event %s: detail: %w", e.Action, err)
			}
		}
		r := eventRow{At: e.At, Actor: e.Actor, Action: e.Action, Connection: e.Connection,
			Detail: string(detail), RequestID: e.RequestID}
		if r.At.IsZero() {
			r.At = now
		}
		r.At = r.At.UTC().Truncate(time.Microsecond)
		if r.Actor == "" {
			r.Actor = req.actor
		}
		if r.Actor == "" {
			r.Actor = SystemActor
		}
		if r.RequestID == "" {
			r.RequestID = req.id
		}
		rows[i] = r
	}
	if err := s.db.WithContext(ctx).Create(&rows).Error; err != nil {
		return fmt.Errorf("record audit event %s: %w", events[0].Action, connections.Translate(err))
	}
	return nil
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// List returns up to f.Limit events that match f, newest (largest ID)
// first, and whether more follow; the next page is f with Before set to
// the ID of the last event returned. Returns an error wrapping
// connections.ErrUnavailable when the database cannot be reached.
func (s *Store) List(ctx context.Context, f Filter) (events []Event, more bool, err error) {
	limit := f.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	q := s.db.WithContext(ctx).Model(&eventRow{}).Order("id DESC").Limit(limit + 1)
	for _, c := range []struct{ column, value string }{
		{"connection", f.Connection}, {"actor", f.Actor}, {"action", f.Action}} {
		if c.value != "" {
			q = q.Where(c.column+" = ?", c.value)
		}
	}
	// Times are compared in UTC, the zone they are stored in: SQLite
	// compares them as text.
	if !f.Since.IsZero() {
		q = q.Where("at >= ?", f.Since.UTC())
	}
	if !f.Until.IsZero() {
		q = q.Where("at < ?", f.Until.UTC())
	}
	if f.Before > 0 {
		q = q.Where("id < ?", f.Before)
	}
	var rows []eventRow
	if err := q.Find(&rows).Error; err != nil {
		return nil, false, fmt.Errorf("list audit events: %w", connections.Translate(err))
	}
	if more = len(rows) > limit; more {
		rows = rows[:limit]
	}
	events = make([]Event, len(rows))
	for i, r := range rows {
		e := Event{ID: r.ID, At: r.At.UTC(), Actor: r.Actor, Action: r.Action, Connection: r.Connection,
			RequestID: r.RequestID}
		if err := json.Unmarshal([]byte(r.Detail), &e.Detail); err != nil {
			return nil, false, fmt.Errorf("audit event %d: corrupt detail: %w", r.ID, err)
		}
		events[i] = e
	}
	return events, more, nil
}
