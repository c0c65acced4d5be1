package audit

import (
	"context"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/connmgr/connmgr/connections"
)

// observeTimeout bounds the write of an observer's events.
const observeTimeout = 5 * time.Second

// observe records events for something that already happened, so it does
// not fail it: errors are logged and counted (Failures). The write outlives
// the caller's context being cancelled (a client that hung up after its
// change was made), but not observeTimeout.
func (s *Log) observe(ctx context.Context, events ...Event) {
	if len(events) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), observeTimeout)
	defer cancel()
	if err := s.record(ctx, events); err != nil {
		s.failures.Add(1)
		if s.Logger != nil {
			s.Logger.ErrorContext(ctx, "audit event not recorded", "action", events[0].Action,
				"connection", events[0].Connection, "events", len(events), "err", err)
		}
	}
}

// ConnectionChanged is a connections.Service observer. It records
// connection.created with a secret.set per secret, connection.updated with
// the names of the changed fields and a secret.set, secret.changed or
// secret.removed per secret that differs, or connection.deleted. The events
// of one change are written together or not at all.
func (s *Log) ConnectionChanged(ctx context.Context, ch connections.Change) {
	var events []Event
	switch {
	case ch.Old == nil && ch.New != nil:
		events = append(events, Event{Action: ActionConnectionCreated, Detail: summary(ch.New)})
		events = append(events, s.secretEvents(&connections.Connection{}, ch.New)...)
	case ch.Old != nil && ch.New != nil:
		events = append(events, Event{Action: ActionConnectionUpdated, Detail: map[string]any{
			"changed": changed(ch.Old, ch.New), "credentialsReset": ch.CredentialsReset}})
		events = append(events, s.secretEvents(ch.Old, ch.New)...)
	case ch.Old != nil:
		events = append(events, Event{Action: ActionConnectionDeleted, Detail: summary(ch.Old)})
	default:
		return
	}
	for i := range events {
		events[i].Actor, events[i].Connection = ch.Actor, ch.Name()
	}
	s.observe(ctx, events...)
}

// summary is the detail of a created or deleted connection.
func summary(c *connections.Connection) map[string]any {
	host := ""
	if u, err := url.Parse(c.BaseURL); err == nil {
		host = strings.ToLower(u.Host)
	}
	return map[string]any{"role": string(c.Role), "policy": string(c.Policy()), "host": host}
}

// secretEvents compares the secrets of old and cur (their policies' and
// TLS settings') by fingerprint only.
func (s *Log) secretEvents(old, cur *connections.Connection) []Event {
	values := func(c *connections.Connection) map[string]connections.Secret {
		m := map[string]connections.Secret{}
		for _, r := range c.AllSecrets() {
			if v := r.Value(); v.IsSet() {
				m[r.Path] = v
			}
		}
		return m
	}
	ov, nv := values(old), values(cur)
	paths := slices.Sorted(maps.Keys(ov))
	for p := range nv {
		if _, ok := ov[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var events []Event
	for _, p := range paths {
		o, n := ov[p], nv[p]
		field := connections.SecretField(p)
		switch {
		case !o.IsSet() && n.IsSet():
			events = append(events, Event{Action: ActionSecretSet, Detail: map[string]any{
				"field": field, "fingerprint": s.Fingerprint(n.Reveal())}})
		case o.IsSet() && !n.IsSet():
			events = append(events, Event{Action: ActionSecretRemoved, Detail: map[string]any{
				"field": field, "oldFingerprint": s.Fingerprint(o.Reveal())}})
		case !o.Equal(n):
			events = append(events, Event{Action: ActionSecretChanged, Detail: map[string]any{
				"field": field, "oldFingerprint": s.Fingerprint(o.Reveal()), "fingerprint": s.Fingerprint(n.Reveal())}})
		}
	}
	return events
}

// field is a non-secret, configurable field of a connection outside its
// security policy: its API name, its Go name (for the test that every
// field is compared), and whether it differs between two connections.
type field struct {
	name, goName string
	differ       func(a, b *connections.Connection) bool
}

func ne[T comparable](get func(c *connections.Connection) T) func(a, b *connections.Connection) bool {
	return func(a, b *connections.Connection) bool { return get(a) != get(b) }
}

func neSlice[T comparable](get func(c *connections.Connection) []T) func(a, b *connections.Connection) bool {
	return func(a, b *connections.Connection) bool { return !slices.Equal(get(a), get(b)) }
}

func neMap(get func(c *connections.Connection) map[string]string) func(a, b *connections.Connection) bool {
	return func(a, b *connections.Connection) bool { return !maps.Equal(get(a), get(b)) }
}

func nePtr[T comparable](get func(c *connections.Connection) *T) func(a, b *connections.Connection) bool {
	return func(a, b *connections.Connection) bool {
		x, y := get(a), get(b)
		return (x == nil) != (y == nil) || x != nil && *x != *y
	}
}

// fields lists, in API names, every field outside security that a replace
// can change and that is not a secret. Name is immutable; status, last
// test, version, timestamps and authors are kept by connmgr, not set by a
// replace. The security policy's fields come from its type (see changed).
var fields = []field{
	{"description", "Description", ne(func(c *connections.Connection) string { return c.Description })},
	{"keywords", "Keywords", neSlice(func(c *connections.Connection) []string { return c.Keywords })},
	{"role", "Role", ne(func(c *connections.Connection) connections.Role { return c.Role })},
	{"baseUrl", "BaseURL", ne(func(c *connections.Connection) string { return c.BaseURL })},
	{"headers", "Headers", neMap(func(c *connections.Connection) map[string]string { return c.Headers })},
	{"forwardHeaders", "ForwardHeaders", neSlice(func(c *connections.Connection) []string { return c.ForwardHeaders })},
	{"timeoutMs", "Timeout", ne(func(c *connections.Connection) time.Duration { return c.Timeout })},
	{"testRequest", "TestRequest", nePtr(func(c *connections.Connection) *connections.TestRequest { return c.TestRequest })},
	{"rateLimit", "RateLimit", nePtr(func(c *connections.Connection) *connections.RateLimit { return c.RateLimit })},
	{"maxConcurrent", "MaxConcurrent", ne(func(c *connections.Connection) int { return c.MaxConcurrent })},
	{"tokenRejectedStatuses", "RejectedStatuses", neSlice(func(c *connections.Connection) []int { return c.RejectedStatuses })},
	{"labels", "Labels", neMap(func(c *connections.Connection) map[string]string { return c.Labels })},
}

// changed returns the sorted API names of the non-secret fields that differ
// between old and cur, such as "baseUrl", "security.scopes" or
// "tls.caCertificatesPem". Secrets are not compared here (see
// ConnectionChanged), nor what connmgr keeps itself: status, last test,
// version, timestamps and authors. An empty and a missing list or map are
// the same.
func changed(old, cur *connections.Connection) []string {
	names := []string{}
	for _, f := range fields {
		if f.differ(old, cur) {
			names = append(names, f.name)
		}
	}
	if old.Policy() != cur.Policy() {
		names = append(names, "security.policy")
	}
	names = append(names, diff("security.", connections.FieldValues(old.Security), connections.FieldValues(cur.Security))...)
	var ot, nt any
	if old.TLS != nil {
		ot = old.TLS
	}
	if cur.TLS != nil {
		nt = cur.TLS
	}
	names = append(names, diff("tls.", connections.FieldValues(ot), connections.FieldValues(nt))...)
	slices.Sort(names)
	return names
}

// diff names the non-secret paths whose values differ between a and b.
func diff(prefix string, a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; (!ok || w != v) && v != connections.Mask {
			out = append(out, prefix+k)
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok && w != connections.Mask {
			out = append(out, prefix+k)
		}
	}
	return out
}

// StatusChanged is a connections.Service status observer: it records
// status.changed with the previous and next status and why.
func (s *Log) StatusChanged(ctx context.Context, c *connections.Connection, prev, next connections.Status, detail string) {
	s.observe(ctx, Event{Action: ActionStatusChanged, Connection: nameOf(c),
		Detail: map[string]any{"from": string(prev), "to": string(next), "detail": detail}})
}

// TokenFailed records token.refresh_failed for c. reason must not hold a
// token, secret or response body.
func (s *Log) TokenFailed(ctx context.Context, c *connections.Connection, reason string) {
	s.observe(ctx, Event{Action: ActionTokenRefreshFail, Connection: nameOf(c), Detail: map[string]any{"reason": reason}})
}

// Consent records a step of c's consent flow: action is
// ActionConsentStarted, ActionConsentFinished or ActionConsentFailed, and
// detail says what happened, without the code, state or tokens.
func (s *Log) Consent(ctx context.Context, c *connections.Connection, action, detail string) {
	s.observe(ctx, Event{Action: action, Connection: nameOf(c), Detail: map[string]any{"detail": detail}})
}

// ConsentStep is a security.Consent observer: consent.started when
// started, else consent.finished (err nil) or consent.failed with why.
func (s *Log) ConsentStep(ctx context.Context, c *connections.Connection, started bool, err error) {
	switch {
	case started:
		s.Consent(ctx, c, ActionConsentStarted, "")
	case err == nil:
		s.Consent(ctx, c, ActionConsentFinished, "")
	default:
		s.Consent(ctx, c, ActionConsentFailed, err.Error())
	}
}

// Tested is an invoke.Tester observer: it records connection.tested for a
// test of c with its result and detail.
func (s *Log) Tested(ctx context.Context, c *connections.Connection, r *connections.TestResult) {
	s.observe(ctx, Event{Action: ActionConnectionTested, Connection: nameOf(c),
		Detail: map[string]any{"result": r.Result, "detail": r.Detail}})
}

// APIKey records ActionAPIKeyCreated or ActionAPIKeyRevoked for the API
// key with the given id, name and role. Never pass the key itself.
func (s *Log) APIKey(ctx context.Context, action, id, keyName, role string) {
	s.observe(ctx, Event{Action: action, Detail: map[string]any{"id": id, "name": keyName, "role": role}})
}

func nameOf(c *connections.Connection) string {
	if c == nil {
		return ""
	}
	return c.Name
}
