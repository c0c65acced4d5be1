package connections

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// GormStore is the Store on a gorm database (SQLite or PostgreSQL).
type GormStore struct {
	db     *gorm.DB
	sealer Sealer
}

var _ Store = (*GormStore)(nil)

// NewGormStore returns a store on db that encrypts secrets with sealer.
func NewGormStore(db *gorm.DB, sealer Sealer) *GormStore {
	return &GormStore{db: db, sealer: sealer}
}

// SecretAD is the additional data that binds a connection secret's
// ciphertext to its row and field.
func SecretAD(connectionID int64, field string) []byte {
	return fmt.Appendf(nil, "connmgr/connection/%d/%s", connectionID, field)
}

type connRow struct {
	ID          int64     `gorm:"column:id;primaryKey"`
	Name        string    `gorm:"column:name"`
	Identifier  string    `gorm:"column:identifier"`
	Description string    `gorm:"column:description"`
	Keywords    string    `gorm:"column:keywords"`
	Role        string    `gorm:"column:role"`
	BaseURL     string    `gorm:"column:base_url"`
	Policy      string    `gorm:"column:policy"`
	Security    string    `gorm:"column:security"`
	Headers     string    `gorm:"column:headers"`
	Settings    string    `gorm:"column:settings"`
	Status      string    `gorm:"column:status"`
	LastTest    *string   `gorm:"column:last_test"`
	Version     int64     `gorm:"column:version"`
	CreatedAt   time.Time `gorm:"column:created_at"`
	UpdatedAt   time.Time `gorm:"column:updated_at;autoUpdateTime:false"` // set by Create and Update only
	CreatedBy   string    `gorm:"column:created_by"`
	UpdatedBy   string    `gorm:"column:updated_by"`
}

func (connRow) TableName() string { return "connections" }

type secretRow struct {
	ConnectionID int64  `gorm:"column:connection_id;primaryKey"`
	Field        string `gorm:"column:field;primaryKey"`
	Ciphertext   []byte `gorm:"column:ciphertext"`
}

func (secretRow) TableName() string { return "connection_secrets" }

// securityJSON holds the non-secret fields of a policy.
type securityJSON struct {
	Username         string            `json:"username,omitempty"`
	In               string            `json:"in,omitempty"`
	Name             string            `json:"name,omitempty"`
	ValuePrefix      *string           `json:"valuePrefix,omitempty"`
	TokenURL         string            `json:"tokenUrl,omitempty"`
	AuthorizationURL string            `json:"authorizationUrl,omitempty"`
	ClientID         string            `json:"clientId,omitempty"`
	Scopes           []string          `json:"scopes,omitempty"`
	Audience         string            `json:"audience,omitempty"`
	ExtraParams      map[string]string `json:"extraParams,omitempty"`
	ClientAuth       string            `json:"clientAuth,omitempty"`
	KeyID            string            `json:"keyId,omitempty"`
	Issuer           string            `json:"issuer,omitempty"`
}

type settingsJSON struct {
	TimeoutMs      int64    `json:"timeoutMs,omitempty"`
	ForwardHeaders []string `json:"forwardHeaders,omitempty"`
	TestMethod     string   `json:"testMethod,omitempty"`
	TestURI        *string  `json:"testRelativeUri,omitempty"`
	RatePerSecond  float64  `json:"ratePerSecond,omitempty"`
	RateBurst      int      `json:"rateBurst,omitempty"`
	MaxConcurrent  int      `json:"maxConcurrent,omitempty"`
}

type testJSON struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"`
	Detail string    `json:"detail,omitempty"`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain data types are marshalled here
	}
	return string(b)
}

func toRow(c *Connection) *connRow {
	s := c.Security
	sec := securityJSON{Username: s.Username, In: string(s.In), Name: s.Name, ValuePrefix: s.ValuePrefix,
		TokenURL: s.TokenURL, AuthorizationURL: s.AuthorizationURL, ClientID: s.ClientID, Scopes: s.Scopes,
		Audience: s.Audience, ExtraParams: s.ExtraParams, ClientAuth: string(s.ClientAuth), KeyID: s.KeyID,
		Issuer: s.Issuer}
	set := settingsJSON{TimeoutMs: c.Timeout.Milliseconds(), ForwardHeaders: c.ForwardHeaders,
		MaxConcurrent: c.MaxConcurrent}
	if c.TestRequest != nil {
		set.TestMethod, set.TestURI = c.TestRequest.Method, &c.TestRequest.RelativeURI
	}
	if c.RateLimit != nil {
		set.RatePerSecond, set.RateBurst = c.RateLimit.RequestsPerSecond, c.RateLimit.Burst
	}
	keywords := c.Keywords
	if keywords == nil {
		keywords = []string{}
	}
	headers := c.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	return &connRow{ID: c.ID, Name: c.Name, Identifier: c.Identifier(), Description: c.Description,
		Keywords: mustJSON(keywords), Role: string(c.Role), BaseURL: c.BaseURL, Policy: string(s.Policy),
		Security: mustJSON(sec), Headers: mustJSON(headers), Settings: mustJSON(set), Status: string(c.Status),
		LastTest: lastTestJSON(c.LastTest), Version: c.Version, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
		CreatedBy: c.CreatedBy, UpdatedBy: c.UpdatedBy}
}

func lastTestJSON(t *TestResult) *string {
	if t == nil {
		return nil
	}
	s := mustJSON(testJSON{At: t.At.UTC(), Result: t.Result, Detail: t.Detail})
	return &s
}

func fromRow(r *connRow) (*Connection, error) {
	c := &Connection{ID: r.ID, Name: r.Name, Description: r.Description, Role: Role(r.Role),
		BaseURL: r.BaseURL, Status: Status(r.Status), Version: r.Version, CreatedAt: r.CreatedAt.UTC(),
		UpdatedAt: r.UpdatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedBy: r.UpdatedBy}
	var sec securityJSON
	var set settingsJSON
	for _, f := range []struct {
		src string
		dst any
	}{{r.Keywords, &c.Keywords}, {r.Headers, &c.Headers}, {r.Security, &sec}, {r.Settings, &set}} {
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return nil, fmt.Errorf("connection %q: corrupt column: %w", r.Name, err)
		}
	}
	c.Security = Security{Policy: Policy(r.Policy), Username: sec.Username, In: KeyLocation(sec.In),
		Name: sec.Name, ValuePrefix: sec.ValuePrefix, TokenURL: sec.TokenURL,
		AuthorizationURL: sec.AuthorizationURL, ClientID: sec.ClientID, Scopes: sec.Scopes,
		Audience: sec.Audience, ExtraParams: sec.ExtraParams, ClientAuth: ClientAuth(sec.ClientAuth),
		KeyID: sec.KeyID, Issuer: sec.Issuer}
	c.Timeout = time.Duration(set.TimeoutMs) * time.Millisecond
	c.ForwardHeaders, c.MaxConcurrent = set.ForwardHeaders, set.MaxConcurrent
	if set.TestURI != nil {
		c.TestRequest = &TestRequest{Method: set.TestMethod, RelativeURI: *set.TestURI}
	}
	if set.RatePerSecond > 0 {
		c.RateLimit = &RateLimit{RequestsPerSecond: set.RatePerSecond, Burst: set.RateBurst}
	}
	if r.LastTest != nil {
		var t testJSON
		if err := json.Unmarshal([]byte(*r.LastTest), &t); err != nil {
			return nil, fmt.Errorf("connection %q: corrupt last test: %w", r.Name, err)
		}
		c.LastTest = &TestResult{At: t.At.UTC(), Result: t.Result, Detail: t.Detail}
	}
	return c, nil
}

// Create implements Store.
func (s *GormStore) Create(ctx context.Context, c *Connection) error {
	now := s.db.NowFunc()
	c.Version, c.CreatedAt, c.UpdatedAt = 1, now, now
	row := toRow(c)
	row.ID = 0
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(row).Error; err != nil {
			return err
		}
		return s.writeSecrets(tx, row.ID, &c.Security)
	})
	if err != nil {
		return fmt.Errorf("create %q: %w", c.Name, Translate(err))
	}
	c.ID = row.ID
	return nil
}

func (s *GormStore) writeSecrets(tx *gorm.DB, id int64, sec *Security) error {
	if err := tx.Where("connection_id = ?", id).Delete(&secretRow{}).Error; err != nil {
		return err
	}
	for _, f := range SecretFields {
		v := sec.Secret(f)
		if !v.IsSet() {
			continue
		}
		ct, err := s.sealer.Seal([]byte(v.Reveal()), SecretAD(id, f))
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", f, err)
		}
		if err := tx.Create(&secretRow{ConnectionID: id, Field: f, Ciphertext: ct}).Error; err != nil {
			return err
		}
	}
	return nil
}

// Get implements Store.
func (s *GormStore) Get(ctx context.Context, name string) (*Connection, error) {
	c, err := s.take(ctx, "name = ?", name)
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", name, err)
	}
	return c, nil
}

// GetByID returns the connection with row id. Returns ErrNotFound.
func (s *GormStore) GetByID(ctx context.Context, id int64) (*Connection, error) {
	c, err := s.take(ctx, "id = ?", id)
	if err != nil {
		return nil, fmt.Errorf("get connection %d: %w", id, err)
	}
	return c, nil
}

// take returns the one connection that matches the condition, with its
// secrets.
func (s *GormStore) take(ctx context.Context, cond string, arg any) (*Connection, error) {
	var row connRow
	if err := s.db.WithContext(ctx).Where(cond, arg).Take(&row).Error; err != nil {
		return nil, Translate(err)
	}
	cs, err := s.load(ctx, []connRow{row})
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

// load converts rows and attaches their decrypted secrets.
func (s *GormStore) load(ctx context.Context, rows []connRow) ([]*Connection, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(rows))
	byID := make(map[int64]*Connection, len(rows))
	out := make([]*Connection, len(rows))
	for i := range rows {
		c, err := fromRow(&rows[i])
		if err != nil {
			return nil, err
		}
		ids[i], byID[c.ID], out[i] = c.ID, c, c
	}
	var secrets []secretRow
	if err := s.db.WithContext(ctx).Where("connection_id IN ?", ids).Find(&secrets).Error; err != nil {
		return nil, fmt.Errorf("load secrets: %w", Translate(err))
	}
	for _, sr := range secrets {
		c := byID[sr.ConnectionID]
		pt, err := s.sealer.Open(sr.Ciphertext, SecretAD(sr.ConnectionID, sr.Field))
		if err != nil {
			return nil, fmt.Errorf("connection %q: decrypt %s: %w", c.Name, sr.Field, err)
		}
		c.Security.SetSecret(sr.Field, NewSecret(string(pt)))
	}
	return out, nil
}

// List implements Store.
func (s *GormStore) List(ctx context.Context, f Filter) ([]*Connection, bool, error) {
	limit := f.Limit
	if limit <= 0 || limit > MaxListLimit {
		limit = MaxListLimit
	}
	// Names sort in byte order on both engines, whatever PostgreSQL's
	// collation, so that pages and cursors agree.
	name := "name"
	keyword := "json_each(connections.keywords)"
	if s.db.Dialector.Name() == "postgres" {
		name = `name COLLATE "C"`
		keyword = "json_array_elements_text(connections.keywords::json) AS k(value)"
	} else {
		keyword += " AS k"
	}
	q := s.db.WithContext(ctx).Model(&connRow{}).Order(name).Limit(limit + 1)
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
	if f.Q != "" {
		like := "%" + likeEscaper.Replace(strings.ToLower(f.Q)) + "%"
		q = q.Where(`LOWER(name) LIKE ? ESCAPE '\' OR EXISTS (SELECT 1 FROM `+keyword+
			` WHERE LOWER(k.value) LIKE ? ESCAPE '\')`, like, like)
	}
	var rows []connRow
	if err := q.Find(&rows).Error; err != nil {
		return nil, false, fmt.Errorf("list: %w", Translate(err))
	}
	more := len(rows) > limit
	if more {
		rows = rows[:limit]
	}
	cs, err := s.load(ctx, rows)
	return cs, more, err
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// Update implements Store.
func (s *GormStore) Update(ctx context.Context, c *Connection, resetCredentials bool) error {
	expected := c.Version
	now := s.db.NowFunc()
	row := toRow(c)
	row.Version, row.UpdatedAt = expected+1, now
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&connRow{}).Where("id = ? AND version = ?", c.ID, expected).
			Select("description", "keywords", "role", "base_url", "policy", "security", "headers", "settings",
				"status", "last_test", "version", "updated_at", "updated_by").Updates(row)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			var n int64
			if err := tx.Model(&connRow{}).Where("id = ?", c.ID).Count(&n).Error; err != nil {
				return err
			}
			if n == 0 {
				return ErrNotFound
			}
			return ErrVersionMismatch
		}
		if resetCredentials {
			if err := dropCredentialState(tx, c.ID); err != nil {
				return err
			}
		}
		return s.writeSecrets(tx, c.ID, &c.Security)
	})
	if err != nil {
		return fmt.Errorf("update %q: %w", c.Name, Translate(err))
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
func (s *GormStore) Delete(ctx context.Context, name string, version int64) (*Connection, error) {
	var deleted *Connection
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row connRow
		if err := tx.Where("name = ?", name).Take(&row).Error; err != nil {
			return err
		}
		if version != 0 && row.Version != version {
			return ErrVersionMismatch
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
			return ErrVersionMismatch
		}
		deleted = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delete %q: %w", name, Translate(err))
	}
	return deleted, nil
}

// SetStatus implements Store.
func (s *GormStore) SetStatus(ctx context.Context, id int64, st Status, test *TestResult) (Status, error) {
	var prev Status
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The row lock (PostgreSQL; SQLite's write transactions are
		// exclusive anyway) makes concurrent calls see each other's status.
		var row connRow
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("status").Where("id = ?", id).Take(&row).Error; err != nil {
			return err
		}
		prev = Status(row.Status)
		updates := map[string]any{"status": string(st)}
		if test != nil {
			updates["last_test"] = lastTestJSON(test)
		}
		return tx.Model(&connRow{}).Where("id = ?", id).Updates(updates).Error
	})
	if err != nil {
		return "", fmt.Errorf("set status of connection %d: %w", id, Translate(err))
	}
	return prev, nil
}

// Reseal re-encrypts every connection secret for which stale reports true,
// one row at a time. Each write succeeds only if the row still holds the
// ciphertext that was read, so it is safe while the service runs and safe
// to repeat. It returns how many secrets were re-encrypted.
func (s *GormStore) Reseal(ctx context.Context, stale func(ciphertext []byte) bool) (int, error) {
	var rows []secretRow
	if err := s.db.WithContext(ctx).Find(&rows).Error; err != nil {
		return 0, Translate(err)
	}
	n := 0
	for _, r := range rows {
		if !stale(r.Ciphertext) {
			continue
		}
		ad := SecretAD(r.ConnectionID, r.Field)
		pt, err := s.sealer.Open(r.Ciphertext, ad)
		if err != nil {
			return n, fmt.Errorf("decrypt secret %s of connection %d: %w", r.Field, r.ConnectionID, err)
		}
		ct, err := s.sealer.Seal(pt, ad)
		if err != nil {
			return n, err
		}
		res := s.db.WithContext(ctx).Model(&secretRow{}).
			Where("connection_id = ? AND field = ? AND ciphertext = ?", r.ConnectionID, r.Field, r.Ciphertext).
			Update("ciphertext", ct)
		if res.Error != nil {
			return n, Translate(res.Error)
		}
		n += int(res.RowsAffected)
	}
	return n, nil
}
