package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/connmgr/connmgr/audit"
)

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

// AuditEvents is the audit.Events on a database: the audit_events table,
// which the database itself keeps append-only.
type AuditEvents struct{ db *gorm.DB }

var _ audit.Events = (*AuditEvents)(nil)

// NewAuditEvents returns the audit events on db.
func NewAuditEvents(db *DB) *AuditEvents { return &AuditEvents{db: db.DB} }

// Append implements audit.Events, in one statement.
func (s *AuditEvents) Append(ctx context.Context, events []audit.Event) error {
	rows := make([]eventRow, len(events))
	for i, e := range events {
		detail := []byte("{}")
		if len(e.Detail) > 0 {
			var err error
			if detail, err = json.Marshal(e.Detail); err != nil {
				return fmt.Errorf("detail: %w", err)
			}
		}
		rows[i] = eventRow{At: e.At, Actor: e.Actor, Action: e.Action, Connection: e.Connection,
			Detail: string(detail), RequestID: e.RequestID}
	}
	return translate(s.db.WithContext(ctx).Create(&rows).Error)
}

// List implements audit.Events.
func (s *AuditEvents) List(ctx context.Context, f audit.Filter) ([]audit.Event, bool, error) {
	q := s.db.WithContext(ctx).Model(&eventRow{}).Order("id DESC").Limit(f.Limit + 1)
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
		return nil, false, translate(err)
	}
	more := len(rows) > f.Limit
	if more {
		rows = rows[:f.Limit]
	}
	events := make([]audit.Event, len(rows))
	for i, r := range rows {
		e := audit.Event{ID: r.ID, At: r.At.UTC(), Actor: r.Actor, Action: r.Action, Connection: r.Connection,
			RequestID: r.RequestID}
		if err := json.Unmarshal([]byte(r.Detail), &e.Detail); err != nil {
			return nil, false, fmt.Errorf("audit event %d: corrupt detail: %w", r.ID, err)
		}
		events[i] = e
	}
	return events, more, nil
}
