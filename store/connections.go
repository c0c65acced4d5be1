package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// Sealer encrypts secrets at rest (*keyring.KeyRing). The additional data
// binds a ciphertext to the row and field it was written for: Open with
// other additional data fails. Implementations must be safe for concurrent
// use.
type Sealer interface {
	Seal(plaintext, additionalData []byte) ([]byte, error)
	Open(ciphertext, additionalData []byte) ([]byte, error)
}

// Connections is the connections.Store on a database.
type Connections struct {
	db     *gorm.DB
	sealer Sealer
	// selective and window bound a search (see List).
	selective, window int
}

var _ connections.Store = (*Connections)(nil)

// NewConnections returns the connection store on db, encrypting secrets
// with sealer.
func NewConnections(db *DB, sealer Sealer) *Connections {
	return &Connections{db: db.DB, sealer: sealer, selective: qSelective, window: qWindow}
}

// SecretAD is the additional data that binds a connection secret's
// ciphertext to its row and field.
func SecretAD(connectionID int64, field string) []byte {
	return fmt.Appendf(nil, "connmgr/connection/%d/%s", connectionID, field)
}

type connRow struct {
	ID           int64      `gorm:"column:id;primaryKey"`
	Name         string     `gorm:"column:name"`
	Identifier   string     `gorm:"column:identifier"`
	Description  string     `gorm:"column:description"`
	Keywords     string     `gorm:"column:keywords"`
	Role         string     `gorm:"column:role"`
	BaseURL      string     `gorm:"column:base_url"`
	Policy       string     `gorm:"column:policy"`
	Security     string     `gorm:"column:security"`
	Headers      string     `gorm:"column:headers"`
	Settings     string     `gorm:"column:settings"`
	Status       string     `gorm:"column:status"`
	StatusReason string     `gorm:"column:status_reason"`
	StatusSince  *time.Time `gorm:"column:status_since"`
	Fingerprint  string     `gorm:"column:fingerprint"`
	Search       string     `gorm:"column:search"`
	LastTest     *string    `gorm:"column:last_test"`
	Version      int64      `gorm:"column:version"`
	CreatedAt    time.Time  `gorm:"column:created_at"`
	UpdatedAt    time.Time  `gorm:"column:updated_at;autoUpdateTime:false"` // set by Create and Update only
	CreatedBy    string     `gorm:"column:created_by"`
	UpdatedBy    string     `gorm:"column:updated_by"`
}

func (connRow) TableName() string { return "connections" }

type secretRow struct {
	ConnectionID int64  `gorm:"column:connection_id;primaryKey"`
	Field        string `gorm:"column:field;primaryKey"`
	Ciphertext   []byte `gorm:"column:ciphertext"`
}

func (secretRow) TableName() string { return "connection_secrets" }

type settingsJSON struct {
	TimeoutMs      int64            `json:"timeoutMs,omitempty"`
	ForwardHeaders []string         `json:"forwardHeaders,omitempty"`
	TestMethod     string           `json:"testMethod,omitempty"`
	TestURI        *string          `json:"testRelativeUri,omitempty"`
	RatePerSecond  float64          `json:"ratePerSecond,omitempty"`
	RateBurst      int              `json:"rateBurst,omitempty"`
	MaxConcurrent  int              `json:"maxConcurrent,omitempty"`
	Rejected       []int            `json:"rejectedStatuses,omitempty"`
	TLS            *connections.TLS `json:"tls,omitempty"`
	// Labels are kept here rather than in a column of their own: only
	// connections as code selects by them, after listing.
	Labels map[string]string `json:"labels,omitempty"`
}

type stepJSON struct {
	Step   string `json:"step"`
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

type testJSON struct {
	At        time.Time  `json:"at"`
	Result    string     `json:"result"`
	Detail    string     `json:"detail,omitempty"`
	LatencyMs int64      `json:"latencyMs,omitempty"`
	Steps     []stepJSON `json:"steps,omitempty"`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain data types are marshalled here
	}
	return string(b)
}

// searchText is what q matches: the lower-cased name and keywords, one per
// line (q never holds a newline, so a match never spans two of them).
func searchText(c *connections.Connection) string {
	parts := append([]string{c.Name}, c.Keywords...)
	return strings.ToLower(strings.Join(parts, "\n"))
}

func toRow(c *connections.Connection) *connRow {
	set := settingsJSON{TimeoutMs: c.Timeout.Milliseconds(), ForwardHeaders: c.ForwardHeaders,
		MaxConcurrent: c.MaxConcurrent, Rejected: c.RejectedStatuses, Labels: c.Labels}
	if c.TestRequest != nil {
		set.TestMethod, set.TestURI = c.TestRequest.Method, &c.TestRequest.RelativeURI
	}
	if c.RateLimit != nil {
		set.RatePerSecond, set.RateBurst = c.RateLimit.RequestsPerSecond, c.RateLimit.Burst
	}
	if c.TLS != nil {
		t := *c.TLS
		t.ClientKeyPEM = connections.Secret{} // kept sealed in connection_secrets
		set.TLS = &t
	}
	keywords := c.Keywords
	if keywords == nil {
		keywords = []string{}
	}
	headers := c.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	sec := "{}"
	if c.Security != nil {
		sec = string(security.Stored(c.Security))
	}
	var since *time.Time
	if !c.StatusSince.IsZero() {
		t := c.StatusSince.UTC()
		since = &t
	}
	return &connRow{ID: c.ID, Name: c.Name, Identifier: c.Identifier(), Description: c.Description,
		Keywords: mustJSON(keywords), Role: string(c.Role), BaseURL: c.BaseURL, Policy: string(c.Policy()),
		Security: sec, Headers: mustJSON(headers), Settings: mustJSON(set), Status: string(c.Status),
		StatusReason: c.StatusReason, StatusSince: since, Fingerprint: c.Fingerprint, Search: searchText(c),
		LastTest: lastTestJSON(c.LastTest), Version: c.Version, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
		CreatedBy: c.CreatedBy, UpdatedBy: c.UpdatedBy}
}

func lastTestJSON(t *connections.TestResult) *string {
	if t == nil {
		return nil
	}
	tj := testJSON{At: t.At.UTC(), Result: t.Result, Detail: t.Detail, LatencyMs: t.Latency.Milliseconds()}
	for _, st := range t.Steps {
		tj.Steps = append(tj.Steps, stepJSON(st))
	}
	s := mustJSON(tj)
	return &s
}

func fromRow(r *connRow) (*connections.Connection, error) {
	c := &connections.Connection{ID: r.ID, Name: r.Name, Description: r.Description, Role: connections.Role(r.Role),
		BaseURL: r.BaseURL, Status: connections.Status(r.Status), StatusReason: r.StatusReason,
		Fingerprint: r.Fingerprint, Version: r.Version, CreatedAt: r.CreatedAt.UTC(),
		UpdatedAt: r.UpdatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedBy: r.UpdatedBy}
	if r.StatusSince != nil {
		c.StatusSince = r.StatusSince.UTC()
	}
	var set settingsJSON
	for _, f := range []struct {
		src string
		dst any
	}{{r.Keywords, &c.Keywords}, {r.Headers, &c.Headers}, {r.Settings, &set}} {
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return nil, fmt.Errorf("connection %q: corrupt column: %w", r.Name, err)
		}
	}
	sec, err := security.Load(connections.Policy(r.Policy), []byte(r.Security))
	if err != nil {
		return nil, fmt.Errorf("connection %q: %w", r.Name, err)
	}
	c.Security = sec
	c.Timeout = time.Duration(set.TimeoutMs) * time.Millisecond
	c.ForwardHeaders, c.MaxConcurrent, c.RejectedStatuses, c.TLS = set.ForwardHeaders, set.MaxConcurrent, set.Rejected, set.TLS
	c.Labels = set.Labels
	if set.TestURI != nil {
		c.TestRequest = &connections.TestRequest{Method: set.TestMethod, RelativeURI: *set.TestURI}
	}
	if set.RatePerSecond > 0 {
		c.RateLimit = &connections.RateLimit{RequestsPerSecond: set.RatePerSecond, Burst: set.RateBurst}
	}
	if r.LastTest != nil {
		var t testJSON
		if err := json.Unmarshal([]byte(*r.LastTest), &t); err != nil {
			return nil, fmt.Errorf("connection %q: corrupt last test: %w", r.Name, err)
		}
		c.LastTest = &connections.TestResult{At: t.At.UTC(), Result: t.Result, Detail: t.Detail,
			Latency: time.Duration(t.LatencyMs) * time.Millisecond}
		for _, st := range t.Steps {
			c.LastTest.Steps = append(c.LastTest.Steps, connections.TestStep(st))
		}
	}
	return c, nil
}

// Create implements Store.
func (s *Connections) Create(ctx context.Context, c *connections.Connection) error {
	now := s.db.NowFunc()
	c.Version, c.CreatedAt, c.UpdatedAt = 1, now, now
	row := toRow(c)
	row.ID = 0
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(row).Error; err != nil {
			return err
		}
		return s.writeSecrets(tx, row.ID, c)
	})
	if err != nil {
		return fmt.Errorf("create %q: %w", c.Name, translate(err))
	}
	c.ID = row.ID
	return nil
}

func (s *Connections) writeSecrets(tx *gorm.DB, id int64, c *connections.Connection) error {
	if err := tx.Where("connection_id = ?", id).Delete(&secretRow{}).Error; err != nil {
		return err
	}
	for _, r := range c.AllSecrets() {
		v := r.Value()
		if !v.IsSet() {
			continue
		}
		ct, err := s.sealer.Seal([]byte(v.Reveal()), SecretAD(id, r.Path))
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", r.Path, err)
		}
		if err := tx.Create(&secretRow{ConnectionID: id, Field: r.Path, Ciphertext: ct}).Error; err != nil {
			return err
		}
	}
	return nil
}

// Get implements Store.
func (s *Connections) Get(ctx context.Context, name string) (*connections.Connection, error) {
	c, err := s.take(ctx, "name = ?", name)
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", name, err)
	}
	return c, nil
}

// GetFolded implements connections.Store.
func (s *Connections) GetFolded(ctx context.Context, name string) (*connections.Connection, error) {
	c, err := s.take(ctx, "identifier = ?", (&connections.Connection{Name: name}).Identifier())
	if err != nil {
		return nil, fmt.Errorf("get %q in any case: %w", name, err)
	}
	return c, nil
}

// GetByID returns the connection with row id. Returns connections.ErrNotFound.
func (s *Connections) GetByID(ctx context.Context, id int64) (*connections.Connection, error) {
	c, err := s.take(ctx, "id = ?", id)
	if err != nil {
		return nil, fmt.Errorf("get connection %d: %w", id, err)
	}
	return c, nil
}

// take returns the one connection that matches the condition, with its
// secrets.
func (s *Connections) take(ctx context.Context, cond string, arg any) (*connections.Connection, error) {
	var row connRow
	if err := s.db.WithContext(ctx).Where(cond, arg).Take(&row).Error; err != nil {
		return nil, translate(err)
	}
	cs, err := s.load(ctx, []connRow{row})
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

// load converts rows and attaches their decrypted secrets.
func (s *Connections) load(ctx context.Context, rows []connRow) ([]*connections.Connection, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(rows))
	byID := make(map[int64]*connections.Connection, len(rows))
	out := make([]*connections.Connection, len(rows))
	for i := range rows {
		c, err := fromRow(&rows[i])
		if err != nil {
			return nil, err
		}
		ids[i], byID[c.ID], out[i] = c.ID, c, c
	}
	var secrets []secretRow
	if err := s.db.WithContext(ctx).Where("connection_id IN ?", ids).Find(&secrets).Error; err != nil {
		return nil, fmt.Errorf("load secrets: %w", translate(err))
	}
	for _, sr := range secrets {
		c := byID[sr.ConnectionID]
		pt, err := s.sealer.Open(sr.Ciphertext, SecretAD(sr.ConnectionID, sr.Field))
		if err != nil {
			return nil, fmt.Errorf("connection %q: decrypt %s: %w", c.Name, sr.Field, err)
		}
		if ref, ok := c.SecretAt(sr.Field); ok {
			ref.Set(connections.NewSecret(string(pt)))
		}
		if c.TLS != nil && *c.TLS == (connections.TLS{}) {
			c.TLS = nil
		}
	}
	return out, nil
}

// List implements connections.Store. Names sort in byte order on both
// engines whatever PostgreSQL's collation, so that pages and cursors
// agree; the migrations index every combination of filters in name order.
//
// A search (Q) on PostgreSQL costs a bounded amount per page. The page
// reads the next qWindow names of the filters from their index, which
// carries search, and is the first limit matches among them. When that
// stretch holds fewer and few connections match Q after the cursor (at
// most qSelective), the trigram index finds them all instead and the page
// is ordered from those. Otherwise the page holds what the stretch held,
// fewer than limit or none, and the next page starts after the stretch.
// SQLite, for one process and small sets, scans.
func (s *Connections) List(ctx context.Context, f connections.Filter) ([]*connections.Connection, string, error) {
	limit := f.Limit
	if limit <= 0 || limit > connections.MaxListLimit {
		limit = connections.MaxListLimit
	}
	pg := s.db.Dialector.Name() == "postgres"
	name := "name"
	if pg {
		name = `name COLLATE "C"`
	}
	filtered := func(q *gorm.DB, name string) *gorm.DB {
		if f.After != "" {
			q = q.Where(name+" > ?", f.After)
		}
		if f.Role != "" {
			q = q.Where("role = ?", string(f.Role))
		}
		if f.Policy != "" {
			q = q.Where("policy = ?", string(f.Policy))
		}
		if f.Status != "" {
			q = q.Where("status = ?", string(f.Status))
		}
		return q
	}
	db := s.db.WithContext(ctx)
	like := "%" + likeEscaper.Replace(strings.ToLower(f.Q)) + "%"
	matching := func(q *gorm.DB) *gorm.DB { return q.Where(`search LIKE ? ESCAPE '\'`, like) }
	var rows []connRow
	windowEnd := ""
	err := func() error {
		if f.Q == "" || !pg {
			q := filtered(db.Model(&connRow{}), name).Order(name).Limit(limit + 1)
			if f.Q != "" {
				q = matching(q)
			}
			return q.Find(&rows).Error
		}
		// The next qWindow names of the filters, from their index alone
		// (it carries search): the first limit+1 that match are the
		// page when there are that many.
		window := filtered(db.Model(&connRow{}), name).Select(`name COLLATE "C" AS n, search`).Order(name).Limit(s.window)
		var hits []string
		if err := matching(db.Table("(?) AS w", window)).Order("n").Limit(limit+1).Pluck("n", &hits).Error; err != nil {
			return err
		}
		if len(hits) <= limit {
			// A short stretch: when few connections match after the
			// cursor, the trigram index finds them all (the CTE keeps the
			// planner from walking the name index instead) and the page
			// is the first of them that pass the filters.
			matches := matching(db.Model(&connRow{})).Select(`id, name COLLATE "C" AS n, role, policy, status`).Limit(s.selective + 1)
			if f.After != "" {
				matches = matches.Where(name+" > ?", f.After)
			}
			page := filtered(db.Table("m"), "n").Select("n").Order("n").Limit(limit + 1)
			var few struct {
				Matched int
				Names   *string
			}
			if err := db.Raw(`WITH m AS MATERIALIZED (?) SELECT (SELECT count(*) FROM m) AS matched, (SELECT json_agg(n) FROM (?) AS p) AS names`,
				matches, page).Scan(&few).Error; err != nil {
				return err
			}
			if few.Matched <= s.selective {
				hits = nil
				if few.Names != nil {
					if err := json.Unmarshal([]byte(*few.Names), &hits); err != nil {
						return err
					}
				}
			} else {
				// Many, but not in this stretch: the page is what it
				// holds, and the next starts after its last name.
				var ends []string
				if err := filtered(db.Model(&connRow{}), name).Order(name).Offset(max(s.window-1, 0)).Limit(1).Pluck("name", &ends).Error; err != nil {
					return err
				}
				if len(ends) == 1 {
					windowEnd = ends[0]
				}
			}
		}
		if len(hits) == 0 {
			return nil
		}
		return db.Where("name IN ?", hits).Order(name).Find(&rows).Error
	}()
	if err != nil {
		return nil, "", fmt.Errorf("list: %w", translate(err))
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = rows[limit-1].Name
	} else if windowEnd != "" {
		next = windowEnd
	}
	cs, err := s.load(ctx, rows)
	return cs, next, err
}

// Bounds of a search on PostgreSQL (see List).
const (
	qSelective = 500
	qWindow    = 10000
)

// SetSearchBounds changes the bounds of a search on PostgreSQL (see List;
// qSelective and qWindow by default): tests reach every way of a search
// with a few rows.
func (s *Connections) SetSearchBounds(selective, window int) {
	s.selective, s.window = selective, window
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// Update implements Store.
func (s *Connections) Update(ctx context.Context, c *connections.Connection, resetCredentials bool) error {
	expected := c.Version
	now := s.db.NowFunc()
	row := toRow(c)
	row.Version, row.UpdatedAt = expected+1, now
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&connRow{}).Where("id = ? AND version = ?", c.ID, expected).
			Select("description", "keywords", "role", "base_url", "policy", "security", "headers", "settings",
				"status", "status_reason", "status_since", "fingerprint", "search", "last_test", "version",
				"updated_at", "updated_by").Updates(row)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			var n int64
			if err := tx.Model(&connRow{}).Where("id = ?", c.ID).Count(&n).Error; err != nil {
				return err
			}
			if n == 0 {
				return connections.ErrNotFound
			}
			return connections.ErrVersionMismatch
		}
		if resetCredentials {
			if err := dropCredentialState(tx, c.ID); err != nil {
				return err
			}
		}
		return s.writeSecrets(tx, c.ID, c)
	})
	if err != nil {
		return fmt.Errorf("update %q: %w", c.Name, translate(err))
	}
	c.Version, c.UpdatedAt = expected+1, now
	return nil
}

// dropCredentialState deletes what was derived from a connection's
// credentials: its token and pending consents.
func dropCredentialState(tx *gorm.DB, id int64) error {
	for _, table := range []string{"tokens", "oauth_states"} {
		if err := tx.Exec("DELETE FROM "+table+" WHERE connection_id = ?", id).Error; err != nil {
			return err
		}
	}
	return nil
}

// Delete implements Store.
func (s *Connections) Delete(ctx context.Context, name string, version int64) (*connections.Connection, error) {
	var deleted *connections.Connection
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row connRow
		if err := tx.Where("name = ?", name).Take(&row).Error; err != nil {
			return err
		}
		if version != 0 && row.Version != version {
			return connections.ErrVersionMismatch
		}
		c, err := fromRow(&row)
		if err != nil {
			return err
		}
		if err := dropCredentialState(tx, row.ID); err != nil {
			return err
		}
		if err := tx.Where("connection_id = ?", row.ID).Delete(&secretRow{}).Error; err != nil {
			return err
		}
		res := tx.Where("id = ? AND version = ?", row.ID, row.Version).Delete(&connRow{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return connections.ErrVersionMismatch
		}
		deleted = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete %q: %w", name, translate(err))
	}
	return deleted, nil
}

// SetStatus implements connections.Store. A status and reason that are
// already stored cost one read and no write.
func (s *Connections) SetStatus(ctx context.Context, id int64, st connections.Status, reason string, test *connections.TestResult) (connections.Status, error) {
	var row connRow
	db := s.db.WithContext(ctx)
	if err := db.Select("status", "status_reason").Where("id = ?", id).Take(&row).Error; err != nil {
		return "", fmt.Errorf("set status of connection %d: %w", id, translate(err))
	}
	if test == nil && row.Status == string(st) && row.StatusReason == reason {
		return st, nil
	}
	var prev connections.Status
	err := db.Transaction(func(tx *gorm.DB) error {
		// The row lock (PostgreSQL; SQLite's write transactions are
		// exclusive anyway) makes concurrent calls see each other's status.
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("status").Where("id = ?", id).Take(&row).Error; err != nil {
			return err
		}
		prev = connections.Status(row.Status)
		updates := map[string]any{"status": string(st), "status_reason": reason}
		if prev != st {
			updates["status_since"] = s.db.NowFunc()
		}
		if test != nil {
			updates["last_test"] = lastTestJSON(test)
		}
		return tx.Model(&connRow{}).Where("id = ?", id).Updates(updates).Error
	})
	if err != nil {
		return "", fmt.Errorf("set status of connection %d: %w", id, translate(err))
	}
	return prev, nil
}

// CountByStatus returns how many connections have each status.
func (s *Connections) CountByStatus(ctx context.Context) (map[connections.Status]int, error) {
	var rows []struct {
		Status string
		N      int
	}
	err := s.db.WithContext(ctx).Model(&connRow{}).Select("status, count(*) AS n").Group("status").Scan(&rows).Error
	if err != nil {
		return nil, translate(err)
	}
	out := make(map[connections.Status]int, len(rows))
	for _, r := range rows {
		out[connections.Status(r.Status)] = r.N
	}
	return out, nil
}
