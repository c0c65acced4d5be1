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

// Events keeps the audit log's events, append only. Implementations are
// safe for concurrent use and return errors wrapping
// connections.ErrUnavailable when the database cannot be reached.
type Events interface {
	// Append adds events (their IDs unset) in one write: all or none.
	Append(ctx context.Context, events []Event) error
	// List returns up to f.Limit (1..MaxLimit) events that match f, largest
	// ID first, and whether more follow.
	List(ctx context.Context, f Filter) (events []Event, more bool, err error)
}

// Log is the audit log: it records events (the observers below) into
// Events and serves them. It is safe for concurrent use. Set its fields
// before first use.
type Log struct {
	events Events
	key    []byte
	// Now stamps events; time.Now when nil.
	Now func() time.Time
	// Logger receives the errors of observers, which cannot return them;
	// nil logs nothing.
	Logger *slog.Logger

	failures atomic.Int64
}

// New returns the log over events. fingerprintKey keys the HMAC of secret
// fingerprints; it must be secret, or a reader of the log could test
// guesses of a secret against its fingerprint, and stable (not rotated
// with the encryption keys), or the same secret would change fingerprint.
// It panics when the key is shorter than 16 bytes.
func New(events Events, fingerprintKey []byte) *Log {
	if len(fingerprintKey) < 16 {
		panic("audit: fingerprint key must be at least 16 bytes")
	}
	return &Log{events: events, key: append([]byte(nil), fingerprintKey...)}
}

// Fingerprint returns "hmac-sha256:" and the first 16 hex digits of the
// HMAC-SHA256 of secret under the store's key. Equal secrets have equal
// fingerprints, so the log shows whether a secret changed without showing
// it.
func (s *Log) Fingerprint(secret string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(secret))
	return "hmac-sha256:" + hex.EncodeToString(mac.Sum(nil))[:16]
}

// Failures returns how many events observers failed to record.
func (s *Log) Failures() int64 { return s.failures.Load() }

type requestKey struct{}

type request struct{ actor, id string }

// WithRequest returns ctx carrying the caller of a request and the
// request's id, which Record uses for events that name neither.
func WithRequest(ctx context.Context, actor, requestID string) context.Context {
	return context.WithValue(ctx, requestKey{}, request{actor, requestID})
}

// Record appends e to the log. It sets At to now when zero, and Actor and
// RequestID from the context (see WithRequest) when empty; an event with
// no actor anywhere is recorded as SystemActor's. Returns an error when
// e has no Action or a Detail that is not JSON, and one wrapping
// connections.ErrUnavailable when the database cannot be reached.
func (s *Log) Record(ctx context.Context, e Event) error {
	return s.record(ctx, []Event{e})
}

// record appends events in one write: all or none.
func (s *Log) record(ctx context.Context, events []Event) error {
	req, _ := ctx.Value(requestKey{}).(request)
	now := s.now()
	out := make([]Event, len(events))
	for i, e := range events {
		if e.Action == "" {
			return errors.New("record audit event: no action")
		}
		if _, err := json.Marshal(e.Detail); err != nil {
			return fmt.Errorf("record audit event %s: detail: %w", e.Action, err)
		}
		if e.At.IsZero() {
			e.At = now
		}
		e.At = e.At.UTC().Truncate(time.Microsecond)
		if e.Actor == "" {
			e.Actor = req.actor
		}
		if e.Actor == "" {
			e.Actor = SystemActor
		}
		if e.RequestID == "" {
			e.RequestID = req.id
		}
		e.ID = 0
		out[i] = e
	}
	if err := s.events.Append(ctx, out); err != nil {
		return fmt.Errorf("record audit event %s: %w", events[0].Action, err)
	}
	return nil
}

func (s *Log) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// List returns up to f.Limit events that match f, newest (largest ID)
// first, and whether more follow; the next page is f with Before set to
// the ID of the last event returned. Returns an error wrapping
// connections.ErrUnavailable when the database cannot be reached.
func (s *Log) List(ctx context.Context, f Filter) (events []Event, more bool, err error) {
	if f.Limit <= 0 || f.Limit > MaxLimit {
		f.Limit = MaxLimit
	}
	events, more, err = s.events.List(ctx, f)
	if err != nil {
		return nil, false, fmt.Errorf("list audit events: %w", err)
	}
	return events, more, nil
}
