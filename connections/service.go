package connections

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// defaults, validation, the secret-carrying and destination rules, status
// resets and optimistic concurrency. Set its fields before first use; it is
// then safe for concurrent use.
type Service struct {
	Store Store
	// Fingerprints computes the credential fingerprint of every connection
	// written (required).
	Fingerprints *Fingerprinter
	// OwnOrigins are connmgr's own origins (its public URL): a connection
	// whose base URL is one of them would invoke connmgr itself.
	OwnOrigins []string
	// Observers are called, in order, after every successful change.
	Observers []func(context.Context, Change)
	// StatusObservers are called after a status change (prev != next).
	StatusObservers []func(ctx context.Context, c *Connection, prev, next Status, reason string)
	// Now returns the time (default time.Now).
	Now func() time.Time
}

func (s *Service) notify(ctx context.Context, ch Change) {
	for _, o := range s.Observers {
		o(ctx, ch)
	}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// validate checks c as a whole, connmgr's own origins included.
func (s *Service) validate(c *Connection) error {
	err := c.Validate()
	var errs ValidationErrors
	errors.As(err, &errs)
	if o := Origin(c.BaseURL); o != "" && slices.Contains(s.OwnOrigins, o) {
		errs = append(errs, &ValidationError{"baseUrl", "is connmgr's own URL: a connection may not invoke connmgr itself"})
	}
	if len(errs) > 0 {
		return errs
	}
	return err
}

// checkReferences checks c's rules on the stored connections its policy
// names (ReferenceChecker).
func (s *Service) checkReferences(ctx context.Context, c *Connection) error {
	rc, ok := c.Security.(ReferenceChecker)
	if !ok {
		return nil
	}
	v := NewChecker()
	if err := rc.CheckReferences(ctx, c, s.Store.Get, v); err != nil {
		return err
	}
	return v.Err()
}

// Create validates c and stores it with status DRAFT (NEEDS_CONSENT for
// consent policies). Returns ValidationErrors or ErrExists.
func (s *Service) Create(ctx context.Context, actor string, c *Connection) error {
	c.Status, c.StatusReason, c.LastTest = InitialStatus(c.Security), "", nil
	c.StatusSince = s.now().Truncate(time.Millisecond)
	if c.Status == StatusNeedsConsent {
		c.StatusReason = consentReason
	}
	c.CreatedBy, c.UpdatedBy = actor, actor
	if err := s.validate(c); err != nil {
		return err
	}
	if err := s.checkReferences(ctx, c); err != nil {
		return err
	}
	c.Fingerprint = s.Fingerprints.Of(c)
	if err := s.Store.Create(ctx, c); err != nil {
		return err
	}
	s.notify(ctx, Change{New: c, Actor: actor})
	return nil
}

// consentReason is the status reason of a connection that waits for its
// first consent.
const consentReason = "no consent given yet: POST .../consent and open the authorization URL"

// Match is a precondition on the stored version (If-Match): the change
// goes ahead only when it reports true. A nil Match is no precondition.
type Match func(version int64) bool

// Version returns the Match of exactly version v.
func Version(v int64) Match { return func(have int64) bool { return have == v } }

// Replace replaces the connection named c.Name with c. With match set the
// stored version must satisfy it (else ErrVersionMismatch); without, a
// lost race is retried on the fresh state. Secrets c leaves unset are
// kept; a change of credentials or target resets status and tokens.
// Returns ErrNotFound, ValidationErrors or ErrVersionMismatch.
func (s *Service) Replace(ctx context.Context, actor string, match Match, c *Connection) error {
	got, err := s.Update(ctx, actor, c.Name, match, func(*Connection) (*Connection, error) {
		return c.Clone(), nil
	})
	if err == nil {
		*c = *got
	}
	return err
}

// Update changes the named connection to what change makes of the stored
// one. change may be called more than once; it must not modify its
// argument and must return a connection of its own (see Clone). Secrets, version rules and resets as for Replace.
func (s *Service) Update(ctx context.Context, actor, name string, match Match, change func(old *Connection) (*Connection, error)) (*Connection, error) {
	for attempt := 0; ; attempt++ {
		old, err := s.Store.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		if match != nil && !match(old.Version) {
			return nil, fmt.Errorf("update %q: %w", name, ErrVersionMismatch)
		}
		cand, err := change(old)
		if err != nil {
			return nil, err
		}
		cand.Name = old.Name
		if cand.Labels == nil {
			cand.Labels = old.Labels // the API's replace and patch do not manage labels
		}
		carried := CarrySecrets(old, cand)
		if err := s.validate(cand); err != nil {
			return nil, err
		}
		if err := CheckDestinations(old, cand, carried); err != nil {
			return nil, err
		}
		if err := s.checkReferences(ctx, cand); err != nil {
			return nil, err
		}
		cand.Fingerprint = s.Fingerprints.Of(cand)
		reset := cand.Fingerprint != old.Fingerprint || old.Policy() != cand.Policy()
		if reset {
			cand.Status, cand.StatusReason, cand.LastTest = InitialStatus(cand.Security), "", nil
			if cand.Status == StatusNeedsConsent {
				cand.StatusReason = consentReason
			}
			if cand.Status != old.Status {
				cand.StatusSince = s.now().Truncate(time.Millisecond)
			}
		}
		cand.Version, cand.UpdatedBy = old.Version, actor
		err = s.Store.Update(ctx, cand, reset)
		if errors.Is(err, ErrVersionMismatch) && match == nil && ctx.Err() == nil && attempt < 100 {
			continue // lost a race without If-Match: apply the change to the fresh state
		}
		if err != nil {
			return nil, err
		}
		s.notify(ctx, Change{Old: old, New: cand, CredentialsReset: reset, Actor: actor})
		return cand, nil
	}
}

// Delete deletes the named connection with its secrets and tokens. With
// match set the stored version must satisfy it. Returns ErrNotFound or
// ErrVersionMismatch.
func (s *Service) Delete(ctx context.Context, actor, name string, match Match) error {
	var version int64
	if match != nil {
		cur, err := s.Store.Get(ctx, name)
		if err != nil {
			return err
		}
		if !match(cur.Version) {
			return fmt.Errorf("delete %q: %w", name, ErrVersionMismatch)
		}
		version = cur.Version
	}
	old, err := s.Store.Delete(ctx, name, version)
	if err != nil {
		return err
	}
	s.notify(ctx, Change{Old: old, CredentialsReset: true, Actor: actor})
	return nil
}

// Get returns the named connection. Returns ErrNotFound.
func (s *Service) Get(ctx context.Context, name string) (*Connection, error) {
	return s.Store.Get(ctx, name)
}

// List returns a page of connections (see Store.List).
func (s *Service) List(ctx context.Context, f Filter) ([]*Connection, string, error) {
	return s.Store.List(ctx, f)
}

// SetStatus records a new status with its reason (and test result, when
// not nil) for c and tells the status observers when it changed. reason
// says why, without secrets; it is kept for ERROR and NEEDS_CONSENT only.
func (s *Service) SetStatus(ctx context.Context, c *Connection, next Status, reason string, test *TestResult) error {
	if next == StatusConfigured || next == StatusDraft {
		reason = ""
	}
	prev, err := s.Store.SetStatus(ctx, c.ID, next, reason, test)
	if err != nil {
		return err
	}
	if prev != next {
		for _, o := range s.StatusObservers {
			o(ctx, c, prev, next, reason)
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
