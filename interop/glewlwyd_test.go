//go:build interop

package interop

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// glewlwyd is what the tests do at glewlwyd directly: alice's scripted
// login and consent (it serves no login page), her refresh-token list, and
// reading its log for what it said about a request.
type glewlwyd struct {
	base string // http://127.0.0.1:PORT
	log  string
}

func newGlewlwyd(t testing.TB) *glewlwyd {
	return &glewlwyd{base: need(t, "GLEWLWYD_URL"), log: need(t, "GLEWLWYD_LOG")}
}

// session is alice signed in to glewlwyd: a cookie jar holding
// GLEWLWYD2_SESSION_ID.
type session struct {
	g    *glewlwyd
	http *http.Client
}

// login signs alice in with her password.
func (g *glewlwyd) login(password string) (*session, error) {
	jar, _ := cookiejar.New(nil)
	s := &session{g: g, http: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	res, err := s.send(http.MethodPost, "/api/auth/", map[string]string{"username": "alice", "password": password})
	if err != nil {
		return nil, err
	}
	if res.status != http.StatusOK {
		return nil, fmt.Errorf("glewlwyd POST /api/auth/ (alice) → HTTP %d %s", res.status, truncate(string(res.body), 200))
	}
	return s, nil
}

func (s *session) send(method, path string, body any) (*answer, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	u := path
	if strings.HasPrefix(path, "/") {
		u = s.g.base + path
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("glewlwyd %s %s: %w", method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return &answer{status: res.StatusCode, header: res.Header, body: b}, nil
}

// grant records alice's consent for clientID to the scopes (space-separated).
func (s *session) grant(clientID, scopes string) error {
	res, err := s.send(http.MethodPut, "/api/auth/grant/"+url.PathEscape(clientID), map[string]string{"scope": scopes})
	if err != nil {
		return err
	}
	if res.status != http.StatusOK {
		return fmt.Errorf("glewlwyd PUT /api/auth/grant/%s → HTTP %d %s", clientID, res.status, truncate(string(res.body), 200))
	}
	return nil
}

// authorize opens authURL (as connmgr made it) with g_continue, as the web
// app does after login and consent, and returns the redirect glewlwyd
// answers with.
func (s *session) authorize(authURL string) (*url.URL, error) {
	res, err := s.send(http.MethodGet, authURL+"&g_continue", nil)
	if err != nil {
		return nil, err
	}
	if res.status != http.StatusFound {
		return nil, fmt.Errorf("glewlwyd authorization endpoint → HTTP %d (want 302), Location %q", res.status, res.header.Get("Location"))
	}
	loc, err := url.Parse(res.header.Get("Location"))
	if err != nil {
		return nil, fmt.Errorf("glewlwyd's Location: %w", err)
	}
	if e := loc.Query().Get("error"); e != "" {
		return loc, fmt.Errorf("glewlwyd redirected with error=%s", e)
	}
	return loc, nil
}

// refreshToken is one row of alice's refresh-token list at a plugin.
type refreshToken struct {
	TokenHash string `json:"token_hash"`
	ClientID  string `json:"client_id"`
	Enabled   bool   `json:"enabled"`
	IssuedAt  int64  `json:"issued_at"`
}

// refreshTokens lists alice's refresh tokens at plugin (e.g. "oidc").
func (s *session) refreshTokens(plugin string) ([]refreshToken, error) {
	res, err := s.send(http.MethodGet, "/api/"+plugin+"/token/?limit=1000", nil)
	if err != nil {
		return nil, err
	}
	if res.status != http.StatusOK {
		return nil, fmt.Errorf("glewlwyd GET /api/%s/token → HTTP %d", plugin, res.status)
	}
	var list []refreshToken
	if err := json.Unmarshal(res.body, &list); err != nil {
		return nil, fmt.Errorf("glewlwyd's refresh-token list: %w", err)
	}
	return list, nil
}

// revoke disables one of alice's refresh tokens by its hash.
func (s *session) revoke(plugin, hash string) error {
	res, err := s.send(http.MethodDelete, "/api/"+plugin+"/token/"+url.PathEscape(hash), nil)
	if err != nil {
		return err
	}
	if res.status != http.StatusOK {
		return fmt.Errorf("glewlwyd DELETE /api/%s/token/{hash} → HTTP %d", plugin, res.status)
	}
	return nil
}

// newTokens returns the tokens of after that are not in before.
func newTokens(before, after []refreshToken) []refreshToken {
	seen := map[string]bool{}
	for _, t := range before {
		seen[t.TokenHash] = true
	}
	var out []refreshToken
	for _, t := range after {
		if !seen[t.TokenHash] {
			out = append(out, t)
		}
	}
	return out
}

// logOffset is the current size of glewlwyd's log, to read what it logs
// from now on.
func (g *glewlwyd) logOffset() int64 {
	fi, err := os.Stat(g.log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns the lines glewlwyd logged after offset that contain any
// of the substrings, without their timestamps, at most max of them.
func (g *glewlwyd) logSince(offset int64, max int, substrings ...string) []string {
	f, err := os.Open(g.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(f, 4<<20))
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, s := range substrings {
			if strings.Contains(line, s) {
				if _, rest, ok := strings.Cut(line, " - Glewlwyd "); ok {
					line = rest
				}
				out = append(out, truncate(line, 200))
				break
			}
		}
		if len(out) == max {
			break
		}
	}
	return out
}

// countSince counts the lines logged after offset that contain all the
// substrings.
func (g *glewlwyd) countSince(offset int64, substrings ...string) int {
	lines := g.logSince(offset, 1<<20, substrings[0])
	n := 0
	for _, l := range lines {
		all := true
		for _, s := range substrings[1:] {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

// refusals are the log lines in which glewlwyd says why it refused a
// request (its HTTP answers are mostly bare).
func (g *glewlwyd) refusals(offset int64) string {
	lines := g.logSince(offset, 4, "WARNING", "ERROR: ", "invalid", "Error", " - aud: ")
	var kept []string
	for _, l := range lines {
		if !strings.Contains(l, "get_sub_public") { // harmless, see glewlwyd.md
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		return "glewlwyd logged no refusal"
	}
	return "glewlwyd logged: " + strings.Join(kept, " / ")
}

// clientAssertion signs an RFC 7523 client assertion by hand with aud (a
// string or a list), for the control requests that show what glewlwyd
// accepts from cc-jwt.
func clientAssertion(keyFile, clientID, kid string, aud any) (string, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", errors.New(keyFile + " holds no PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return "", err
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return "", errors.New(keyFile + " is not an RSA key")
	}
	enc := func(v any) string {
		j, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(j)
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	now := time.Now().Unix()
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid}) + "." +
		enc(map[string]any{"iss": clientID, "sub": clientID, "aud": aud, "jti": hex.EncodeToString(jti),
			"iat": now, "exp": now + 300})
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// postForm posts a token-endpoint style form and returns the answer.
func postForm(u string, form url.Values, user, pass string) (*answer, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return &answer{status: res.StatusCode, header: res.Header, body: b}, nil
}
