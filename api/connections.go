package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// connectionBody is a connection as the API reads and writes it. Read-only
// fields are accepted on input and ignored, so a document read with GET can
// be sent back with PUT.
type connectionBody struct {
	Name                  string            `json:"name"`
	Identifier            string            `json:"identifier,omitempty"`
	Description           string            `json:"description"`
	Keywords              []string          `json:"keywords"`
	Role                  string            `json:"role"`
	BaseURL               string            `json:"baseUrl"`
	Security              json.RawMessage   `json:"security"`
	TLS                   *connections.TLS  `json:"tls,omitempty"`
	Headers               map[string]string `json:"headers"`
	ForwardHeaders        []string          `json:"forwardHeaders,omitempty"`
	TimeoutMs             *int64            `json:"timeoutMs,omitempty"`
	TestRequest           *testRequestBody  `json:"testRequest,omitempty"`
	RateLimit             *rateLimitBody    `json:"rateLimit,omitempty"`
	MaxConcurrent         *int              `json:"maxConcurrent,omitempty"`
	TokenRejectedStatuses []int             `json:"tokenRejectedStatuses,omitempty"`

	Status       string        `json:"status,omitempty"`
	StatusReason string        `json:"statusReason,omitempty"`
	StatusSince  *time.Time    `json:"statusSince,omitempty"`
	Token        *tokenSummary `json:"token,omitempty"`
	LastTest     *testBody     `json:"lastTest,omitempty"`
	Version      *int64        `json:"version,omitempty"`
	CreatedAt    *time.Time    `json:"createdAt,omitempty"`
	UpdatedAt    *time.Time    `json:"updatedAt,omitempty"`
	CreatedBy    string        `json:"createdBy,omitempty"`
	UpdatedBy    string        `json:"updatedBy,omitempty"`
	// Warnings say where the name disagrees with the naming convention;
	// never an error.
	Warnings []warningBody `json:"warnings,omitempty"`
}

// tokenSummary is the part of a token's metadata that a connection shows,
// so that one list call tells what is about to break.
type tokenSummary struct {
	ExpiresAt     *time.Time `json:"expiresAt,omitempty"`
	RefreshAt     *time.Time `json:"refreshAt,omitempty"`
	LastRefreshAt *time.Time `json:"lastRefreshAt,omitempty"`
	LastError     string     `json:"lastError,omitempty"`
}

type testRequestBody struct {
	Method      string `json:"method,omitempty"`
	RelativeURI string `json:"relativeUri"`
}

type rateLimitBody struct {
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	Burst             int     `json:"burst,omitempty"`
}

type stepBody struct {
	Step   string `json:"step"`
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

// testBody is a test result: the answer of POST .../test and a
// connection's lastTest.
type testBody struct {
	At        *time.Time `json:"at,omitempty"`
	Result    string     `json:"result"`
	Detail    string     `json:"detail"`
	LatencyMs int64      `json:"latencyMs"`
	Steps     []stepBody `json:"steps"`
}

func testOut(r *connections.TestResult) *testBody {
	at := r.At
	b := &testBody{At: &at, Result: r.Result, Detail: r.Detail, LatencyMs: r.Latency.Milliseconds(), Steps: []stepBody{}}
	for _, s := range r.Steps {
		b.Steps = append(b.Steps, stepBody(s))
	}
	return b
}

type connectionList struct {
	Items      []*connectionBody `json:"items"`
	NextCursor string            `json:"nextCursor,omitempty"`
}

// toConnection converts the body into a domain connection named name.
func (b *connectionBody) toConnection(name string) (*connections.Connection, error) {
	if len(b.Security) == 0 || bytes.Equal(b.Security, []byte("null")) {
		return nil, invalidField("security", "is required; use {\"policy\": \"NONE\"} for a target without credentials")
	}
	sec, err := security.Decode(b.Security)
	if err != nil {
		return nil, err
	}
	c := &connections.Connection{Name: name, Description: b.Description, Keywords: b.Keywords,
		Role: connections.Role(b.Role), BaseURL: b.BaseURL, Headers: b.Headers, ForwardHeaders: b.ForwardHeaders,
		Security: sec, TLS: b.TLS, RejectedStatuses: b.TokenRejectedStatuses}
	if b.TimeoutMs != nil {
		if *b.TimeoutMs <= 0 {
			return nil, invalidField("timeoutMs", "must be a positive number of milliseconds")
		}
		if *b.TimeoutMs > connections.MaxTimeout.Milliseconds() {
			return nil, invalidField("timeoutMs", "must be at most "+strconv.FormatInt(connections.MaxTimeout.Milliseconds(), 10))
		}
		c.Timeout = time.Duration(*b.TimeoutMs) * time.Millisecond
	}
	if t := b.TestRequest; t != nil {
		c.TestRequest = &connections.TestRequest{Method: t.Method, RelativeURI: t.RelativeURI}
	}
	if r := b.RateLimit; r != nil {
		c.RateLimit = &connections.RateLimit{RequestsPerSecond: r.RequestsPerSecond, Burst: r.Burst}
	}
	if b.MaxConcurrent != nil {
		c.MaxConcurrent = *b.MaxConcurrent
	}
	return c, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func connectionOut(c *connections.Connection, tok *security.TokenInfo) *connectionBody {
	keywords, headers := c.Keywords, c.Headers
	if keywords == nil {
		keywords = []string{}
	}
	if headers == nil {
		headers = map[string]string{}
	}
	timeout := c.Timeout.Milliseconds()
	created, updated := c.CreatedAt, c.UpdatedAt
	b := &connectionBody{Name: c.Name, Identifier: c.Identifier(), Description: c.Description, Keywords: keywords,
		Role: string(c.Role), BaseURL: c.BaseURL, Headers: headers, ForwardHeaders: c.ForwardHeaders,
		TimeoutMs: &timeout, Status: string(c.Status), StatusReason: c.StatusReason, StatusSince: timePtr(c.StatusSince),
		Version: &c.Version, CreatedAt: &created, UpdatedAt: &updated, CreatedBy: c.CreatedBy, UpdatedBy: c.UpdatedBy,
		Security: security.Encode(c.Security), TLS: c.TLS, TokenRejectedStatuses: c.RejectedStatuses}
	if c.TestRequest != nil {
		b.TestRequest = &testRequestBody{Method: c.TestRequest.Method, RelativeURI: c.TestRequest.RelativeURI}
	}
	if c.RateLimit != nil {
		b.RateLimit = &rateLimitBody{RequestsPerSecond: c.RateLimit.RequestsPerSecond, Burst: c.RateLimit.Burst}
	}
	if c.MaxConcurrent > 0 {
		b.MaxConcurrent = &c.MaxConcurrent
	}
	if c.LastTest != nil {
		b.LastTest = testOut(c.LastTest)
	}
	if ws := connections.NameWarnings(c); len(ws) > 0 {
		b.Warnings = warningsOut(ws)
	}
	if tok != nil {
		b.Token = &tokenSummary{ExpiresAt: timePtr(tok.ExpiresAt), RefreshAt: timePtr(tok.RefreshAt),
			LastRefreshAt: timePtr(tok.LastRefreshAt), LastError: tok.LastError}
	}
	return b
}

func etag(c *connections.Connection) string { return `"` + strconv.FormatInt(c.Version, 10) + `"` }

// renderConnection writes conn with its ETag and, for token policies, its
// token summary.
func (s *Server) renderConnection(c *gin.Context, status int, conn *connections.Connection) {
	var tok *security.TokenInfo
	if security.HasTokens(conn.Security) && s.tokens != nil {
		var err error
		if tok, err = s.tokens.Info(c.Request.Context(), conn); err != nil {
			s.fail(c, err)
			return
		}
	}
	c.Header("ETag", etag(conn))
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, status, connectionOut(conn, tok))
}

// ifMatch reads If-Match as RFC 9110 §13.1.1 says: absent, empty or "*"
// is no precondition (a replace then retries a lost race); otherwise a list
// of entity tags (empty list elements are ignored, §5.6.1), where a strong
// tag matches the version it names exactly ("3", as ETag gives it) and
// weak tags and tags connmgr never issued match nothing (412). A field
// that is neither "*" nor such a list is 400.
func ifMatch(c *gin.Context) (connections.Match, error) {
	h := strings.TrimSpace(strings.Join(c.Request.Header.Values("If-Match"), ","))
	if h == "" || h == "*" {
		return nil, nil
	}
	var versions []int64
	tags := 0
	for rest := h; ; tags++ {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			break
		}
		weak := strings.HasPrefix(rest, "W/")
		if weak {
			rest = rest[2:]
		}
		end := -1
		if rest != "" && rest[0] == '"' {
			end = strings.IndexByte(rest[1:], '"')
		}
		if end < 0 || !etagChars(rest[1:1+end]) {
			return nil, errIfMatch
		}
		opaque := rest[1 : 1+end]
		rest = strings.TrimLeft(rest[end+2:], " \t")
		if rest != "" && rest[0] != ',' {
			return nil, errIfMatch
		}
		if v, err := strconv.ParseInt(opaque, 10, 64); err == nil && v > 0 && !weak && strconv.FormatInt(v, 10) == opaque {
			versions = append(versions, v)
		}
	}
	if tags == 0 {
		return nil, errIfMatch
	}
	return func(have int64) bool { return slices.Contains(versions, have) }, nil
}

var errIfMatch = newProblem(http.StatusBadRequest, "malformed_request",
	`If-Match must be "*" or a list of entity tags (RFC 9110), e.g. "3" as ETag gives it`)

// etagChars reports whether s holds only the characters of an opaque tag
// (RFC 9110 etagc: visible ASCII but '"', and obs-text).
func etagChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '"' || c == 0x7f {
			return false
		}
	}
	return true
}

// visible answers 404 for a {name} that cannot exist or that the key may
// not see.
func (s *Server) visible(c *gin.Context) {
	name := c.Param("name")
	if connections.ValidateName(name) != nil || !apiKey(c).MaySee(name) {
		s.fail(c, connections.ErrNotFound)
		return
	}
	c.Next()
}

func (s *Server) createConnection(c *gin.Context) {
	var body connectionBody
	if !s.bind(c, &body) {
		return
	}
	conn, err := body.toConnection(body.Name)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.conns.Create(c.Request.Context(), actor(c), conn); err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Location", "/api/v1/connections/"+url.PathEscape(conn.Name))
	s.renderConnection(c, http.StatusCreated, conn)
}

func (s *Server) getConnection(c *gin.Context) {
	conn, err := s.conns.Get(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return
	}
	s.renderConnection(c, http.StatusOK, conn)
}

func (s *Server) replaceConnection(c *gin.Context) {
	name := c.Param("name")
	match, err := ifMatch(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	var body connectionBody
	if !s.bind(c, &body) {
		return
	}
	if body.Name != "" && body.Name != name {
		s.fail(c, invalidField("name", "cannot be changed; create a new connection instead"))
		return
	}
	conn, err := body.toConnection(name)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.conns.Replace(c.Request.Context(), actor(c), match, conn); err != nil {
		s.fail(c, err)
		return
	}
	s.renderConnection(c, http.StatusOK, conn)
}

// patchConnection applies a JSON merge patch (RFC 7396) to the stored
// connection. A patch whose security names another policy replaces the
// security object instead of merging into it: fields of two policies never
// mix.
func (s *Server) patchConnection(c *gin.Context) {
	name := c.Param("name")
	match, err := ifMatch(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	patch, ok := s.readPatch(c)
	if !ok {
		return
	}
	conn, err := s.conns.Update(c.Request.Context(), actor(c), name, match, func(old *connections.Connection) (*connections.Connection, error) {
		return mergeConnection(old, patch)
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.renderConnection(c, http.StatusOK, conn)
}

// readPatch reads a merge patch: a JSON object, sent as
// application/merge-patch+json (or application/json).
func (s *Server) readPatch(c *gin.Context) (map[string]json.RawMessage, bool) {
	if ct := c.GetHeader("Content-Type"); ct != "" && !jsonMediaType(ct) {
		s.renderProblem(c, newProblem(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"send the patch as Content-Type: application/merge-patch+json"))
		return nil, false
	}
	var patch map[string]json.RawMessage
	if err := decodeJSON(c.Request.Body, &patch); err != nil {
		s.fail(c, err)
		return nil, false
	}
	if patch == nil {
		s.fail(c, newProblem(http.StatusBadRequest, "malformed_request", "the merge patch must be a JSON object"))
		return nil, false
	}
	return patch, true
}

// mergeConnection applies patch to old's API form and reads the result as
// a replacement.
func mergeConnection(old *connections.Connection, patch map[string]json.RawMessage) (*connections.Connection, error) {
	doc, err := json.Marshal(connectionOut(old, nil))
	if err != nil {
		return nil, err
	}
	if sec, ok := patch["security"]; ok {
		var head struct {
			Policy string `json:"policy"`
		}
		if json.Unmarshal(sec, &head) == nil && head.Policy != "" && head.Policy != string(old.Policy()) {
			var m map[string]json.RawMessage
			_ = json.Unmarshal(doc, &m)
			delete(m, "security")
			doc, _ = json.Marshal(m)
		}
	}
	p, _ := json.Marshal(patch)
	merged, err := jsonpatch.MergePatch(doc, p)
	if err != nil {
		return nil, newProblem(http.StatusBadRequest, "malformed_request", "the merge patch cannot be applied")
	}
	var body connectionBody
	if err := decodeJSON(bytes.NewReader(merged), &body); err != nil {
		return nil, err
	}
	if body.Name != old.Name {
		return nil, invalidField("name", "cannot be changed; create a new connection instead")
	}
	return body.toConnection(old.Name)
}

func (s *Server) deleteConnection(c *gin.Context) {
	match, err := ifMatch(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.conns.Delete(c.Request.Context(), actor(c), c.Param("name"), match); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

var listParams = []string{"role", "policy", "status", "q", "limit", "cursor"}

func (s *Server) listConnections(c *gin.Context) {
	q := c.Request.URL.Query()
	f, err := connectionFilter(q, listParams)
	if err != nil {
		s.fail(c, err)
		return
	}
	f.Limit = 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > connections.MaxListLimit {
			s.fail(c, newProblem(http.StatusBadRequest, "malformed_request",
				"limit must be an integer from 1 to "+strconv.Itoa(connections.MaxListLimit)))
			return
		}
		f.Limit = n
	}
	if cur := q.Get("cursor"); cur != "" {
		after, err := s.cursors.decode("connections", cur)
		if err != nil {
			s.fail(c, err)
			return
		}
		f.After = after
	}
	conns, next, err := s.conns.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	infos := map[int64]*security.TokenInfo{}
	if s.tokens != nil {
		if infos, err = s.tokens.Infos(c.Request.Context(), conns); err != nil {
			s.fail(c, err)
			return
		}
	}
	out := connectionList{Items: make([]*connectionBody, 0, len(conns))}
	for _, conn := range conns {
		out.Items = append(out.Items, connectionOut(conn, infos[conn.ID]))
	}
	if next != "" {
		out.NextCursor = s.cursors.encode("connections", next)
	}
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusOK, out)
}

func checkEnum[T ~string](param string, v string, allowed ...T) error {
	if v == "" || slices.Contains(allowed, T(v)) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return newProblem(http.StatusBadRequest, "malformed_request", param+" must be one of "+strings.Join(names, ", "))
}

// connectionFilter reads the filters of a list of connections (role,
// policy, status, q) from q, which may hold only the known parameters.
func connectionFilter(q url.Values, known []string) (connections.Filter, error) {
	if err := checkParams(q, known); err != nil {
		return connections.Filter{}, err
	}
	f := connections.Filter{Role: connections.Role(q.Get("role")), Policy: connections.Policy(q.Get("policy")),
		Status: connections.Status(q.Get("status")), Q: q.Get("q")}
	if err := checkEnum("role", string(f.Role), connections.Roles...); err != nil {
		return f, err
	}
	if f.Policy != "" && !security.Known(f.Policy) {
		return f, newProblem(http.StatusBadRequest, "malformed_request", "unknown policy "+strconv.Quote(string(f.Policy)))
	}
	if err := checkEnum("status", string(f.Status), connections.Statuses...); err != nil {
		return f, err
	}
	if len(f.Q) > 100 || strings.ContainsAny(f.Q, "\n\r") {
		return f, newProblem(http.StatusBadRequest, "malformed_request", "q must be at most 100 characters on one line")
	}
	return f, nil
}

// checkParams refuses a query parameter other than the known ones.
func checkParams(q url.Values, known []string) error {
	for k := range q {
		if !slices.Contains(known, k) {
			return newProblem(http.StatusBadRequest, "malformed_request",
				"unknown query parameter "+strconv.Quote(k)+"; use "+strings.Join(known, ", "))
		}
	}
	return nil
}
