package connections

// Connections as code: a set of declared connections (documents) is
// compared with the stored ones into a plan, which is shown (dry run) or
// carried out. Every document is checked, as a create or a replace of
// what is stored, before anything is written.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Document is one connection as a file declares it.
type Document struct {
	// Connection is what the document declares: its name and labels
	// (never nil: a document without labels clears the stored ones), and
	// its settings with every secret resolved.
	Connection *Connection
	// RefreshToken, when set, is an imported refresh token of a consent
	// policy: stored for a connection that is created, or one that waits
	// for consent, so that its first use refreshes instead of asking a
	// person again.
	RefreshToken Secret
}

// MaxDocuments bounds the documents of one apply.
const MaxDocuments = 1000

// ApplyOptions says what Apply does besides creating and updating.
type ApplyOptions struct {
	// DryRun computes the plan without writing anything.
	DryRun bool
	// Prune deletes the stored connections in scope (Selector, Prefix)
	// that no document names. It needs a Selector or a Prefix.
	Prune bool
	// Selector limits pruning to connections with all of these labels.
	Selector map[string]string
	// Prefix limits pruning to connections whose name starts with it.
	Prefix string
	// Visible, when set, limits pruning to the connections it reports
	// true for (those the caller may see).
	Visible func(name string) bool
	// Tokens stores imported refresh tokens; required when a document
	// has one.
	Tokens TokenSeeder
}

// TokenSeeder stores an imported refresh token as a connection's own.
type TokenSeeder interface {
	// SeedRefreshToken stores rt as the refresh token of c (as stored,
	// with its current fingerprint), with no access token: the first use
	// refreshes.
	SeedRefreshToken(ctx context.Context, c *Connection, rt Secret) error
}

// Action is what a plan does with one connection.
type Action string

// The actions of a plan.
const (
	ActionCreate    Action = "create"
	ActionUpdate    Action = "update"
	ActionUnchanged Action = "unchanged"
	ActionDelete    Action = "delete"
)

// Secret changes of a plan: what happens to a secret field. A secret is
// compared with the stored one in constant time; neither value is shown.
const (
	SecretSet       = "set"
	SecretChanged   = "changed"
	SecretUnchanged = "unchanged"
	SecretRemoved   = "removed"
)

// FieldChange is one field of a plan's create or update.
type FieldChange struct {
	// Field is the document path: "spec.baseUrl",
	// "spec.security.clientSecret", "metadata.labels.team".
	Field string
	// Old and New are the values as text ("" when absent); never set for
	// a secret.
	Old, New string
	// Secret says the field is a secret; Change then says what happens
	// to it (SecretSet, SecretChanged, SecretUnchanged, SecretRemoved).
	Secret bool
	Change string
}

// PlanItem is what a plan does with one connection.
type PlanItem struct {
	Name   string
	Action Action
	// Document is the index of the document that declares the
	// connection, -1 for a delete.
	Document int
	// Changes are the fields a create sets or an update changes; the
	// secrets of an update are all listed, changed or not.
	Changes  []FieldChange
	Warnings []Warning
	// Version is the stored version: after the change when applied, else
	// the one the plan was made against (0 for a create).
	Version int64
	// RefreshToken says the document's refresh token is (or would be)
	// stored for the connection.
	RefreshToken bool
	// Done says the change was made (false for a dry run and unchanged
	// items).
	Done bool
}

// Plan is the outcome of Apply.
type Plan struct {
	DryRun bool
	Items  []PlanItem
}

// Count returns how many items of the plan have action a.
func (p *Plan) Count(a Action) int {
	n := 0
	for _, it := range p.Items {
		if it.Action == a {
			n++
		}
	}
	return n
}

// ApplyError is a failure while carrying out a plan that had passed every
// check: a write that lost a race (ErrVersionMismatch), or the database.
// Plan says what was done before it; applying again finishes the job.
type ApplyError struct {
	Plan *Plan
	Name string
	Err  error
}

func (e *ApplyError) Error() string {
	done := 0
	for _, it := range e.Plan.Items {
		if it.Done {
			done++
		}
	}
	return fmt.Sprintf("apply %s: %v (%d changes made before it; apply again to finish)", e.Name, e.Err, done)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// docField is the path of field of document i in errors.
func docField(i int, field string) string { return fmt.Sprintf("documents[%d].%s", i, field) }

// prefixed returns err's validation errors with their fields under
// prefix; other errors as they are.
func prefixErrors(err error, prefix string) (ValidationErrors, error) {
	var ves ValidationErrors
	var ve *ValidationError
	switch {
	case errors.As(err, &ves):
	case errors.As(err, &ve):
		ves = ValidationErrors{ve}
	default:
		return nil, err
	}
	out := make(ValidationErrors, len(ves))
	for i, e := range ves {
		out[i] = &ValidationError{Field: prefix + e.Field, Reason: e.Reason}
	}
	return out, nil
}

// CheckLabels reports invalid labels of a document or selector under
// field: at most 32, keys of 1 to 63 characters (letters, digits, '.',
// '_', '-', '/'; starting with a letter or digit), values of at most 63
// (letters, digits, '.', '_', '-').
func CheckLabels(field string, labels map[string]string) ValidationErrors {
	var errs ValidationErrors
	if len(labels) > 32 {
		errs = append(errs, &ValidationError{field, "at most 32 labels"})
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		switch {
		case k == "" || len(k) > 63 || !labelChars(k, "._-/") || !alnum(k[0]):
			errs = append(errs, &ValidationError{field + "." + k, "label keys are 1 to 63 letters, digits, '.', '_', '-' or '/', starting with a letter or digit"})
		case len(v) > 63 || !labelChars(v, "._-"):
			errs = append(errs, &ValidationError{field + "." + k, "label values are at most 63 letters, digits, '.', '_' or '-'"})
		}
	}
	return errs
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }

func labelChars(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		if !alnum(s[i]) && !strings.ContainsRune(extra, rune(s[i])) {
			return false
		}
	}
	return true
}

// Matches reports whether labels hold every pair of selector.
func Matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if have, ok := labels[k]; !ok || have != v {
			return false
		}
	}
	return true
}

// planned is a document with what Apply found and decided for it.
type planned struct {
	doc  Document
	old  *Connection // nil for a create
	cand *Connection // validated, secrets carried
	item PlanItem
}

// Apply makes the stored connections what docs declare: it creates those
// that do not exist, updates those that differ (each against the version
// it compared with, as If-Match does), leaves the others alone, and with
// o.Prune deletes those in scope that no document names. Every document is
// validated as the create or replace it leads to, destination rules
// included, before anything is written: one invalid document fails the
// whole apply with ValidationErrors whose fields are documents[i]. paths.
// Applying the same documents again changes nothing. A failure while
// writing returns *ApplyError with what was done.
func (s *Service) Apply(ctx context.Context, actor string, docs []Document, o ApplyOptions) (*Plan, error) {
	var errs ValidationErrors
	if len(docs) > MaxDocuments {
		return nil, ValidationErrors{{"documents", fmt.Sprintf("at most %d documents in one apply", MaxDocuments)}}
	}
	errs = append(errs, CheckLabels("selector", o.Selector)...)
	if o.Prefix != "" && !nameChars(o.Prefix) {
		errs = append(errs, &ValidationError{"prefix", "must be the start of a connection name: a letter, then letters, digits, '_' or '-'"})
	}
	if o.Prune && len(o.Selector) == 0 && o.Prefix == "" {
		errs = append(errs, &ValidationError{"prune", "needs a selector or a prefix: pruning everything no document names would delete connections other teams declare"})
	}
	seen := map[string]int{}
	plans := make([]*planned, 0, len(docs))
	for i, d := range docs {
		c := d.Connection
		if c == nil {
			errs = append(errs, &ValidationError{docField(i, "spec"), "is required"})
			continue
		}
		if j, dup := seen[c.Identifier()]; dup {
			errs = append(errs, &ValidationError{docField(i, "metadata.name"), fmt.Sprintf("declares %s again (documents[%d] did)", c.Name, j)})
			continue
		}
		seen[c.Identifier()] = i
		errs = append(errs, CheckLabels(docField(i, "metadata.labels"), c.Labels)...)
		p, err := s.plan(ctx, i, d)
		if err != nil {
			ves, other := prefixErrors(err, docField(i, "spec."))
			if other != nil {
				return nil, other
			}
			for _, e := range ves {
				if e.Field == docField(i, "spec.name") {
					e.Field = docField(i, "metadata.name")
				}
			}
			errs = append(errs, ves...)
			continue
		}
		plans = append(plans, p)
	}
	for _, p := range plans {
		if p.doc.RefreshToken.IsSet() && o.Tokens == nil {
			errs = append(errs, &ValidationError{docField(p.item.Document, "token.refreshToken"), "this connmgr does not import refresh tokens"})
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	plan := &Plan{DryRun: o.DryRun}
	for _, p := range plans {
		plan.Items = append(plan.Items, p.item)
	}
	if o.Prune {
		dels, err := s.pruned(ctx, seen, o)
		if err != nil {
			return nil, err
		}
		plan.Items = append(plan.Items, dels...)
	}
	if o.DryRun {
		return plan, nil
	}
	return plan, s.carryOut(ctx, actor, plan, plans, o)
}

// plan checks document i against what is stored and decides what to do.
func (s *Service) plan(ctx context.Context, i int, d Document) (*planned, error) {
	c := d.Connection
	p := &planned{doc: d, item: PlanItem{Name: c.Name, Document: i}}
	// In any case: one whose name differs only in case would pass as a
	// create and fail when written (identifiers are unique), after the
	// documents before it were applied.
	old, err := s.Store.GetFolded(ctx, c.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		cand := c.Clone()
		cand.Status = InitialStatus(cand.Security)
		if err := s.validate(cand); err != nil {
			return nil, err
		}
		p.cand = cand
		p.item.Action, p.item.Changes = ActionCreate, diff(nil, cand)
	case err != nil:
		return nil, err
	default:
		if old.Name != c.Name {
			return nil, ValidationErrors{{"name", fmt.Sprintf("%s exists as %s: names differ only in case", c.Name, old.Name)}}
		}
		cand := c.Clone()
		carried := CarrySecrets(old, cand)
		if err := s.validate(cand); err != nil {
			return nil, err
		}
		if err := CheckDestinations(old, cand, carried); err != nil {
			return nil, err
		}
		p.old, p.cand = old, cand
		p.item.Version = old.Version
		p.item.Changes = diff(old, cand)
		p.item.Action = ActionUnchanged
		if !sameSpec(old, cand) {
			p.item.Action = ActionUpdate
		}
	}
	p.item.Warnings = NameWarnings(p.cand)
	if d.RefreshToken.IsSet() {
		if _, ok := c.Security.(ConsentPolicy); !ok {
			return nil, ValidationErrors{{"token.refreshToken", fmt.Sprintf("policy %s has no consent flow: only consent policies take a refresh token", c.Policy())}}
		}
		// A connection that has a usable credential keeps it; one that
		// waits for consent, or whose configuration the update resets,
		// takes the imported refresh token.
		p.item.RefreshToken = p.old == nil || p.old.Status == StatusNeedsConsent ||
			s.Fingerprints.Of(p.cand) != p.old.Fingerprint
	}
	if p.item.Action == ActionUnchanged {
		p.item.Changes = nil
		if p.item.RefreshToken {
			p.item.Action = ActionUpdate // the token is the change
		}
	}
	return p, nil
}

// pruned lists the deletes of a prune: stored connections in scope that
// no document names.
func (s *Service) pruned(ctx context.Context, declared map[string]int, o ApplyOptions) ([]PlanItem, error) {
	var out []PlanItem
	f := Filter{Limit: MaxListLimit}
	for {
		page, next, err := s.Store.List(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, c := range page {
			if _, ok := declared[c.Identifier()]; ok || !strings.HasPrefix(c.Name, o.Prefix) ||
				!Matches(c.Labels, o.Selector) || (o.Visible != nil && !o.Visible(c.Name)) {
				continue
			}
			out = append(out, PlanItem{Name: c.Name, Action: ActionDelete, Document: -1, Version: c.Version})
		}
		if next == "" {
			return out, nil
		}
		f.After = next
	}
}

// carryOut makes the plan's changes, each against the version the plan
// compared with.
func (s *Service) carryOut(ctx context.Context, actor string, plan *Plan, plans []*planned, o ApplyOptions) error {
	for i := range plan.Items {
		it := &plan.Items[i]
		var err error
		switch it.Action {
		case ActionCreate:
			p := plans[i]
			c := p.doc.Connection.Clone()
			if err = s.Create(ctx, actor, c); err == nil {
				it.Version, it.Done = c.Version, true
				if it.RefreshToken {
					err = s.seed(ctx, o.Tokens, c, p.doc.RefreshToken)
				}
			}
		case ActionUpdate:
			p := plans[i]
			c := p.old // only the refresh token changes
			if !sameSpec(p.old, p.cand) {
				doc := p.doc.Connection
				c, err = s.Update(ctx, actor, it.Name, Version(it.Version), func(*Connection) (*Connection, error) {
					return doc.Clone(), nil
				})
			}
			if err == nil {
				it.Version, it.Done = c.Version, true
				if it.RefreshToken {
					err = s.seed(ctx, o.Tokens, c, p.doc.RefreshToken)
				}
			}
		case ActionDelete:
			if err = s.Delete(ctx, actor, it.Name, Version(it.Version)); err == nil || errors.Is(err, ErrNotFound) {
				err, it.Done = nil, true
			}
		}
		if err != nil {
			return &ApplyError{Plan: plan, Name: it.Name, Err: err}
		}
	}
	return nil
}

// seed stores an imported refresh token for c and records that c no
// longer waits for consent: it has not been tried yet.
func (s *Service) seed(ctx context.Context, tokens TokenSeeder, c *Connection, rt Secret) error {
	stored, err := s.Store.Get(ctx, c.Name)
	if err != nil {
		return err
	}
	if err := tokens.SeedRefreshToken(ctx, stored, rt); err != nil {
		return fmt.Errorf("store the imported refresh token: %w", err)
	}
	return s.SetStatus(ctx, stored, StatusDraft, "", nil)
}

// specOf is the part of a connection that documents declare, for
// comparison: everything but identity, status and bookkeeping. Secrets
// marshal as Mask and are compared separately.
func specOf(c *Connection) []byte {
	d := *c
	d.ID, d.Fingerprint, d.Status, d.StatusReason, d.LastTest, d.Version = 0, "", "", "", nil, 0
	d.StatusSince, d.CreatedAt, d.UpdatedAt = time.Time{}, time.Time{}, time.Time{}
	d.CreatedBy, d.UpdatedBy = "", ""
	if len(d.Keywords) == 0 {
		d.Keywords = nil
	}
	if len(d.Headers) == 0 {
		d.Headers = nil
	}
	if len(d.Labels) == 0 {
		d.Labels = nil
	}
	if len(d.ForwardHeaders) == 0 {
		d.ForwardHeaders = nil
	}
	if len(d.RejectedStatuses) == 0 {
		d.RejectedStatuses = nil
	}
	b, err := json.Marshal(struct {
		Policy Policy
		C      *Connection
	}{c.Policy(), &d})
	if err != nil {
		panic(err) // plain data only
	}
	return b
}

// sameSpec reports whether old and cand declare the same connection,
// secrets included.
func sameSpec(old, cand *Connection) bool {
	if string(specOf(old)) != string(specOf(cand)) {
		return false
	}
	for _, ch := range secretChanges(old, cand) {
		if ch.Change != SecretUnchanged {
			return false
		}
	}
	return true
}

// secretChanges compares the secrets of old (nil for a create) and cand
// by path. Values are compared by their SHA-256 in constant time, so
// neither their contents nor their lengths show in the timing.
func secretChanges(old, cand *Connection) []FieldChange {
	was := map[string]Secret{}
	if old != nil {
		for _, r := range old.AllSecrets() {
			if r.Value().IsSet() {
				was[r.Path] = r.Value()
			}
		}
	}
	var out []FieldChange
	for _, r := range cand.AllSecrets() {
		v := r.Value()
		if !v.IsSet() {
			continue
		}
		ch := FieldChange{Field: "spec." + SecretField(r.Path), Secret: true, Change: SecretSet}
		if o, ok := was[r.Path]; ok {
			a, b := sha256.Sum256([]byte(o.Reveal())), sha256.Sum256([]byte(v.Reveal()))
			ch.Change = SecretChanged
			if subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
				ch.Change = SecretUnchanged
			}
			delete(was, r.Path)
		}
		out = append(out, ch)
	}
	for path := range was {
		out = append(out, FieldChange{Field: "spec." + SecretField(path), Secret: true, Change: SecretRemoved})
	}
	return out
}

// diff lists the fields that cand sets (old nil) or changes from old,
// by document path, with every secret of cand.
func diff(old, cand *Connection) []FieldChange {
	var was map[string]string
	if old != nil {
		was = fields(old)
	}
	now := fields(cand)
	var out []FieldChange
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if now[k] != was[k] {
			out = append(out, FieldChange{Field: k, Old: was[k], New: now[k]})
		}
	}
	for k, v := range was {
		if _, ok := now[k]; !ok {
			out = append(out, FieldChange{Field: k, Old: v})
		}
	}
	out = append(out, secretChanges(old, cand)...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	if old != nil && !hasChange(out) && string(specOf(old)) != string(specOf(cand)) {
		// A difference that fields does not name (a field added to
		// Connection since): say so rather than call it unchanged.
		out = append(out, FieldChange{Field: "spec", Old: "(as stored)", New: "(as declared)"})
	}
	return out
}

func hasChange(chs []FieldChange) bool {
	return slices.ContainsFunc(chs, func(c FieldChange) bool { return !c.Secret || c.Change != SecretUnchanged })
}

// fields flattens the declared part of c into document paths and values,
// secrets left out (secretChanges covers them).
func fields(c *Connection) map[string]string {
	out := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	list := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	set("spec.description", c.Description)
	if len(c.Keywords) > 0 {
		set("spec.keywords", list(c.Keywords))
	}
	set("spec.role", string(c.Role))
	set("spec.baseUrl", c.BaseURL)
	for k, v := range c.Headers {
		out["spec.headers."+k] = v
	}
	if len(c.ForwardHeaders) > 0 {
		set("spec.forwardHeaders", list(c.ForwardHeaders))
	}
	if c.Timeout > 0 {
		set("spec.timeoutMs", strconv.FormatInt(c.Timeout.Milliseconds(), 10))
	}
	if t := c.TestRequest; t != nil {
		set("spec.testRequest.method", t.Method)
		set("spec.testRequest.relativeUri", t.RelativeURI)
	}
	if r := c.RateLimit; r != nil {
		set("spec.rateLimit.requestsPerSecond", strconv.FormatFloat(r.RequestsPerSecond, 'g', -1, 64))
		set("spec.rateLimit.burst", strconv.Itoa(r.Burst))
	}
	if c.MaxConcurrent > 0 {
		set("spec.maxConcurrent", strconv.Itoa(c.MaxConcurrent))
	}
	if len(c.RejectedStatuses) > 0 {
		set("spec.tokenRejectedStatuses", list(c.RejectedStatuses))
	}
	set("spec.security.policy", string(c.Policy()))
	for k, v := range FieldValues(c.Security) {
		if v != Mask {
			out["spec.security."+k] = v
		}
	}
	if c.TLS != nil {
		for k, v := range FieldValues(c.TLS) {
			if v != Mask {
				out["spec.tls."+k] = v
			}
		}
	}
	for k, v := range c.Labels {
		out["metadata.labels."+k] = v
	}
	return out
}
