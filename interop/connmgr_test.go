//go:build interop

package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// connmgr is a client of connmgr's public API, authenticated with the admin
// token.
type connmgr struct {
	base  string
	admin string
	http  *http.Client
}

func newConnmgr(t testing.TB) *connmgr {
	return &connmgr{base: need(t, "CONNMGR_URL"), admin: need(t, "CONNMGR_ADMIN_TOKEN"),
		http: &http.Client{Timeout: 45 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// answer is an HTTP response read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic object (nil when it is not one).
func (a *answer) json() map[string]any {
	var m map[string]any
	if json.Unmarshal(a.body, &m) != nil {
		return nil
	}
	return m
}

// problem summarises a problem+json answer: status, code, detail and the
// invalid fields.
func (a *answer) problem() string {
	m := a.json()
	if m == nil {
		return fmt.Sprintf("HTTP %d, body %q", a.status, truncate(string(a.body), 120))
	}
	s := fmt.Sprintf("HTTP %d %v: %v", a.status, m["code"], m["detail"])
	if errs, ok := m["errors"].([]any); ok {
		for _, e := range errs {
			if fe, ok := e.(map[string]any); ok {
				s += fmt.Sprintf(" [%v %v]", fe["field"], fe["reason"])
			}
		}
	}
	return s
}

// do sends a request to path (under the base URL) with body as JSON (unless
// nil) and the admin token (when auth).
func (c *connmgr) do(method, path string, body any, auth bool) (*answer, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	u := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		u = c.base + path
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+c.admin)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return &answer{status: res.StatusCode, header: res.Header, body: b}, nil
}

func connPath(name string, rest ...string) string {
	return "/api/v1/connections/" + url.PathEscape(name) + strings.Join(rest, "")
}

// create registers a connection; the observation says why when it cannot.
func (c *connmgr) create(o *observation, conn map[string]any) bool {
	a, err := c.do(http.MethodPost, "/api/v1/connections", conn, true)
	if err != nil {
		o.fail("create: %v", err)
		return false
	}
	if a.status != http.StatusCreated {
		o.fail("create → %s", a.problem())
		return false
	}
	return true
}

// get reads a connection.
func (c *connmgr) get(name string) (map[string]any, error) {
	a, err := c.do(http.MethodGet, connPath(name), nil, true)
	if err != nil {
		return nil, err
	}
	if a.status != http.StatusOK {
		return nil, fmt.Errorf("GET %s → %s", name, a.problem())
	}
	return a.json(), nil
}

// testResult is the answer of POST .../test.
type testResult struct {
	Result    string `json:"result"`
	Detail    string `json:"detail"`
	LatencyMs int64  `json:"latencyMs"`
}

func (c *connmgr) test(name string) (*testResult, error) {
	a, err := c.do(http.MethodPost, connPath(name, "/test"), nil, true)
	if err != nil {
		return nil, err
	}
	if a.status != http.StatusOK {
		return nil, fmt.Errorf("POST /test → %s", a.problem())
	}
	var r testResult
	if err := json.Unmarshal(a.body, &r); err != nil {
		return nil, fmt.Errorf("POST /test: %w", err)
	}
	return &r, nil
}

// tokenInfo is the answer of GET .../token: metadata, never the token.
type tokenInfo struct {
	Present     bool      `json:"present"`
	ObtainedAt  time.Time `json:"obtainedAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
	RefreshAt   time.Time `json:"refreshAt"`
	Scopes      []string  `json:"scopes"`
	Refreshable bool      `json:"refreshable"`
	LastError   string    `json:"lastError"`
}

func (c *connmgr) token(name string) (*tokenInfo, error) {
	a, err := c.do(http.MethodGet, connPath(name, "/token"), nil, true)
	if err != nil {
		return nil, err
	}
	if a.status != http.StatusOK {
		return nil, fmt.Errorf("GET /token → %s", a.problem())
	}
	var ti tokenInfo
	if err := json.Unmarshal(a.body, &ti); err != nil {
		return nil, fmt.Errorf("GET /token: %w", err)
	}
	return &ti, nil
}

// refresh forces a refresh; a non-2xx answer is returned, not an error.
func (c *connmgr) refresh(name string) (*answer, *tokenInfo, error) {
	a, err := c.do(http.MethodPost, connPath(name, "/token/refresh"), nil, true)
	if err != nil {
		return nil, nil, err
	}
	if a.status != http.StatusOK {
		return a, nil, nil
	}
	var ti tokenInfo
	if err := json.Unmarshal(a.body, &ti); err != nil {
		return a, nil, fmt.Errorf("POST /token/refresh: %w", err)
	}
	return a, &ti, nil
}

// consentURL starts consent and returns the authorization URL.
func (c *connmgr) consentURL(name string) (string, error) {
	a, err := c.do(http.MethodPost, connPath(name, "/consent"), nil, true)
	if err != nil {
		return "", err
	}
	if a.status != http.StatusOK {
		return "", fmt.Errorf("POST /consent → %s", a.problem())
	}
	u, _ := a.json()["authorizationUrl"].(string)
	if u == "" {
		return "", fmt.Errorf("POST /consent answered without authorizationUrl")
	}
	return u, nil
}

// str reads a string field of a decoded object ("" when absent).
func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
