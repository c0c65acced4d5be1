package api

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/connections"
)

// connectionBody is a connection as the API reads and writes it. Read-only
// fields are accepted on input and ignored, so a document read with GET can
// be sent back with PUT.
type connectionBody struct {
	Name           string            `json:"name"`
	Identifier     string            `json:"identifier,omitempty"`
	Description    string            `json:"description"`
	Keywords       []string          `json:"keywords"`
	Role           string            `json:"role"`
	BaseURL        string            `json:"baseUrl"`
	Security       *securityBody     `json:"security"`
	Headers        map[string]string `json:"headers"`
	ForwardHeaders []string          `json:"forwardHeaders,omitempty"`
	TimeoutMs      *int64            `json:"timeoutMs,omitempty"`
	TestRequest    *testRequestBody  `json:"testRequest,omitempty"`
	RateLimit      *rateLimitBody    `json:"rateLimit,omitempty"`
	MaxConcurrent  *int              `json:"maxConcurrent,omitempty"`

	Status    string        `json:"status,omitempty"`
	LastTest  *lastTestBody `json:"lastTest,omitempty"`
	Version   *int64        `json:"version,omitempty"`
	CreatedAt *time.Time    `json:"createdAt,omitempty"`
	UpdatedAt *time.Time    `json:"updatedAt,omitempty"`
	CreatedBy string        `json:"createdBy,omitempty"`
	UpdatedBy string        `json:"updatedBy,omitempty"`
}

// securityBody holds a policy's fields. Secrets are write-only: responses
// show "********" for a set secret; on input, an omitted secret or
// "********" keeps the stored value.
type securityBody struct {
	Policy           string            `json:"policy"`
	Username         string            `json:"username,omitempty"`
	Password         *string           `json:"password,omitempty"`
	Key              *string           `json:"key,omitempty"`
	In               string            `json:"in,omitempty"`
	Name             string            `json:"name,omitempty"`
	ValuePrefix      *string           `json:"valuePrefix,omitempty"`
	TokenURL         string            `json:"tokenUrl,omitempty"`
	AuthorizationURL string            `json:"authorizationUrl,omitempty"`
	ClientID         string            `json:"clientId,omitempty"`
	ClientSecret     *string           `json:"clientSecret,omitempty"`
	Scopes           []string          `json:"scopes,omitempty"`
	Audience         string            `json:"audience,omitempty"`
	ExtraParams      map[string]string `json:"extraParams,omitempty"`
	ClientAuth       string            `json:"clientAuth,omitempty"`
	PrivateKeyPEM    *string           `json:"privateKeyPem,omitempty"`
	KeyID            string            `json:"keyId,omitempty"`
	Issuer           string            `json:"issuer,omitempty"`
}

type testRequestBody struct {
	Method      string `json:"method,omitempty"`
	RelativeURI string `json:"relativeUri"`
}

type rateLimitBody struct {
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	Burst             int     `json:"burst,omitempty"`
}

type lastTestBody struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"`
	Detail string    `json:"detail,omitempty"`
}

type connectionList struct {
	Items      []*connectionBody `json:"items"`
	NextCursor string            `json:"nextCursor,omitempty"`
}

func secretIn(s *string) connections.Secret {
	if s == nil || *s == connections.Mask {
		return connections.Secret{}
	}
	return connections.NewSecret(*s)
}

func secretOut(s connections.Secret) *string {
	if !s.IsSet() {
		return nil
	}
	m := connections.Mask
	return &m
}

// toConnection converts the body into a domain connection named name.
func (b *connectionBody) toConnection(name string) (*connections.Connection, error) {
	if b.Security == nil {
		return nil, invalidField("security", "is required; use {\"policy\": \"NONE\"} for a target without credentials")
	}
	s := b.Security
	c := &connections.Connection{Name: name, Description: b.Description, Keywords: b.Keywords,
		Role: connections.Role(b.Role), BaseURL: b.BaseURL, Headers: b.Headers, ForwardHeaders: b.ForwardHeaders,
		Security: connections.Security{Policy: connections.Policy(s.Policy), Username: s.Username,
			Password: secretIn(s.Password), Key: secretIn(s.Key), In: connections.KeyLocation(s.In), Name: s.Name,
			ValuePrefix: s.ValuePrefix, TokenURL: s.TokenURL, AuthorizationURL: s.AuthorizationURL,
			ClientID: s.ClientID, ClientSecret: secretIn(s.ClientSecret), Scopes: s.Scopes, Audience: s.Audience,
			ExtraParams: s.ExtraParams, ClientAuth: connections.ClientAuth(s.ClientAuth),
			PrivateKeyPEM: secretIn(s.PrivateKeyPEM), KeyID: s.KeyID, Issuer: s.Issuer}}
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

func connectionOut(c *connections.Connection) *connectionBody {
	s := &c.Security
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
		TimeoutMs: &timeout, Status: string(c.Status), Version: &c.Version,
		CreatedAt: &created, UpdatedAt: &updated, CreatedBy: c.CreatedBy, UpdatedBy: c.UpdatedBy,
		Security: &securityBody{Policy: string(s.Policy), Username: s.Username, Password: secretOut(s.Password),
			Key: secretOut(s.Key), In: string(s.In), Name: s.Name, ValuePrefix: s.ValuePrefix, TokenURL: s.TokenURL,
			AuthorizationURL: s.AuthorizationURL, ClientID: s.ClientID, ClientSecret: secretOut(s.ClientSecret),
			Scopes: s.Scopes, Audience: s.Audience, ExtraParams: s.ExtraParams, ClientAuth: string(s.ClientAuth),
			PrivateKeyPEM: secretOut(s.PrivateKeyPEM), KeyID: s.KeyID, Issuer: s.Issuer}}
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
		b.LastTest = &lastTestBody{At: c.LastTest.At, Result: c.LastTest.Result, Detail: c.LastTest.Detail}
	}
	return b
}

func etag(c *connections.Connection) string { return `"` + strconv.FormatInt(c.Version, 10) + `"` }

func (s *Server) renderConnection(c *gin.Context, status int, conn *connections.Connection) {
	c.Header("ETag", etag(conn))
	c.Header("Cache-Control", "no-store")
	c.JSON(status, connectionOut(conn))
}

// ifMatch parses If-Match: "" or "*" give 0 (any version), a strong ETag
// gives its version.
func ifMatch(c *gin.Context) (int64, error) {
	h := strings.TrimSpace(c.GetHeader("If-Match"))
	if h == "" || h == "*" {
		return 0, nil
	}
	v, err := strconv.ParseInt(strings.Trim(h, `"`), 10, 64)
	if err != nil || v <= 0 || !strings.HasPrefix(h, `"`) || !strings.HasSuffix(h, `"`) || len(h) < 3 {
		return 0, newProblem(http.StatusBadRequest, "malformed_request", `If-Match must be one ETag as returned by connmgr, e.g. "3"`)
	}
	return v, nil
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
	name := c.Param("name")
	conn, err := s.conns.Store.Get(c.Request.Context(), name)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.renderConnection(c, http.StatusOK, conn)
}

func (s *Server) replaceConnection(c *gin.Context) {
	name := c.Param("name")
	version, err := ifMatch(c)
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
	if err := s.conns.Replace(c.Request.Context(), actor(c), version, conn); err != nil {
		s.fail(c, err)
		return
	}
	s.renderConnection(c, http.StatusOK, conn)
}

func (s *Server) deleteConnection(c *gin.Context) {
	name := c.Param("name")
	version, err := ifMatch(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.conns.Delete(c.Request.Context(), actor(c), name, version); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

var listParams = []string{"role", "policy", "status", "q", "limit", "cursor"}

func (s *Server) listConnections(c *gin.Context) {
	q := c.Request.URL.Query()
	for k := range q {
		if !slices.Contains(listParams, k) {
			s.fail(c, newProblem(http.StatusBadRequest, "malformed_request",
				"unknown query parameter "+strconv.Quote(k)+"; use "+strings.Join(listParams, ", ")))
			return
		}
	}
	f := connections.Filter{Role: connections.Role(q.Get("role")), Policy: connections.Policy(q.Get("policy")),
		Status: connections.Status(q.Get("status")), Q: q.Get("q"), Limit: 100}
	if err := checkEnum("role", string(f.Role), "INVOKE", "TRIGGER", "TRIGGER_INVOKE"); err != nil {
		s.fail(c, err)
		return
	}
	if _, ok := connections.PolicyFields[f.Policy]; f.Policy != "" && !ok {
		s.fail(c, newProblem(http.StatusBadRequest, "malformed_request", "unknown policy "+strconv.Quote(string(f.Policy))))
		return
	}
	if err := checkEnum("status", string(f.Status), "DRAFT", "CONFIGURED", "ERROR", "NEEDS_CONSENT"); err != nil {
		s.fail(c, err)
		return
	}
	if len(f.Q) > 100 {
		s.fail(c, newProblem(http.StatusBadRequest, "malformed_request", "q must be at most 100 characters"))
		return
	}
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
	conns, more, err := s.conns.Store.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := connectionList{Items: make([]*connectionBody, 0, len(conns))}
	for _, conn := range conns {
		out.Items = append(out.Items, connectionOut(conn))
	}
	if more && len(conns) > 0 {
		out.NextCursor = s.cursors.encode("connections", conns[len(conns)-1].Name)
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
}

func checkEnum(param, v string, allowed ...string) error {
	if v == "" || slices.Contains(allowed, v) {
		return nil
	}
	return newProblem(http.StatusBadRequest, "malformed_request",
		param+" must be one of "+strings.Join(allowed, ", "))
}
