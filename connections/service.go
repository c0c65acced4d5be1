package connections

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Change describes a connection that was created (Old nil), replaced, or
// deleted (New nil).
type Change struct {
	Old, New *Connection
	// CredentialsReset is true when the credentials or target changed, so
	// tokens and consents derived from the old ones are gone.
	CredentialsReset bool
	Actor            string
}

// Name returns the name of the changed connection.
func (ch Change) Name() string {
	if ch.New != nil {
		return ch.New.Name
	}
	return ch.Old.Name
}

// Service carries out the connection operations of the API on a Store:
// defaults, validation, the secret-carrying and host-change rules, status
// resets and optimistic concurrency. It is safe for concurrent use.
type Service struct {
	Store Store
	// Observers are called, in order, after every successful change.
	Observers []func(context.Context, Change)
	// StatusObservers are called after a status change (prev != next).
	StatusObservers []func(ctx context.Context, c *Connection, prev, next Status, detail string)
}

func (s *Service) notify(ctx context.Context, ch Change) {
	for _, o := range s.Observers {
		o(ctx, ch)
	}
}

// Create validates c and stores it with status DRAFT (NEEDS_CONSENT for
// the authorization-code policy). Returns ValidationErrors or ErrExists.
func (s *Service) Create(ctx context.Context, actor string, c *Connection) error {
	c.Status, c.LastTest = InitialStatus(c.Security.Policy), nil
	c.CreatedBy, c.UpdatedBy = actor, actor
	if err := c.Validate(); err != nil {
		return err
	}
	if err := s.Store.Create(ctx, c); err != nil {
		return err
	}
	s.notify(ctx, Change{New: c, Actor: actor})
	return nil
}

// Replace replaces the connection named c.Name with c. With ifMatch not 0
// the stored version must equal it (else ErrVersionMismatch); without,
// a lost race is retried on the fresh state. Secrets c leaves unset are
// kept; a change of credentials or target resets status and tokens.
// Returns ErrNotFound, ValidationErrors or ErrVersionMismatch.
func (s *Service) Replace(ctx context.Context, actor string, ifMatch int64, c *Connection) error {
	for attempt := 0; ; attempt++ {
		old, err := s.Store.Get(ctx, c.Name)
		if err != nil {
			return err
		}
		if ifMatch != 0 && old.Version != ifMatch {
			return fmt.Errorf("replace %q: %w", c.Name, ErrVersionMismatch)
		}
		cand := *c
		carried := CarrySecrets(old, &cand)
		if err := cand.Validate(); err != nil {
			return err
		}
		if err := CheckHostChange(old, &cand, carried); err != nil {
			return err
		}
		reset := ConfigChanged(old, &cand)
		if reset {
			cand.Status, cand.LastTest = InitialStatus(cand.Security.Policy), nil
		}
		cand.Version, cand.UpdatedBy = old.Version, actor
		err = s.Store.Update(ctx, &cand, reset)
		if errors.Is(err, ErrVersionMismatch) && ifMatch == 0 && ctx.Err() == nil && attempt < 100 {
			continue // lost a race without If-Match: apply the change to the fresh state
		}
		if err != nil {
			return err
		}
		*c = cand
		s.notify(ctx, Change{Old: old, New: c, CredentialsReset: reset, Actor: actor})
		return nil
	}
}

// Delete deletes the named connection with its secrets and tokens. With
// ifMatch not 0 the stored version must equal it. Returns ErrNotFound or
// ErrVersionMismatch.
func (s *Service) Delete(ctx context.Context, actor, name string, ifMatch int64) error {
	old, err := s.Store.Delete(ctx, name, ifMatch)
	if err != nil {
		return err
	}
	s.notify(ctx, Change{Old: old, CredentialsReset: true, Actor: actor})
	return nil
}

// SetStatus records a new status (and test result, when not nil) for c and
// tells the status observers when it changed. detail says why, without
// secrets.
func (s *Service) SetStatus(ctx context.Context, c *Connection, next Status, test *TestResult, detail string) error {
	prev, err := s.Store.SetStatus(ctx, c.ID, next, test)
	if err != nil {
		return err
	}
	if prev != next {
		for _, o := range s.StatusObservers {
			o(ctx, c, prev, next, detail)
		}
	}
	return nil
}

// NewTestResult returns a test result stamped now (UTC, milliseconds).
func NewTestResult(now time.Time, ok bool, detail string) *TestResult {
	r := &TestResult{At: now.UTC().Truncate(time.Millisecond), Result: TestFailure, Detail: detail}
	if ok {
		r.Result = TestSuccess
	}
	return r
}
