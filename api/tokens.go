package api

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

type testResultBody struct {
	Result    string `json:"result"`
	Detail    string `json:"detail"`
	LatencyMs int64  `json:"latencyMs"`
}

type tokenInfoBody struct {
	Present       bool       `json:"present"`
	ObtainedAt    *time.Time `json:"obtainedAt,omitempty"`
	ExpiresAt     *time.Time `json:"expiresAt,omitempty"`
	RefreshAt     *time.Time `json:"refreshAt,omitempty"`
	Scopes        []string   `json:"scopes,omitempty"`
	Refreshable   bool       `json:"refreshable"`
	LastError     string     `json:"lastError,omitempty"`
	Failures      int        `json:"failures"`
	NextAttemptAt *time.Time `json:"nextAttemptAt,omitempty"`
}

type consentBody struct {
	AuthorizationURL string    `json:"authorizationUrl"`
	ExpiresAt        time.Time `json:"expiresAt"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// loadConnection reads the {name} connection, rendering a problem and
// returning nil when it cannot.
func (s *Server) loadConnection(c *gin.Context) *connections.Connection {
	conn, err := s.conns.Store.Get(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return nil
	}
	return conn
}

var errNoTokens = newProblem(http.StatusConflict, "policy_has_no_token",
	"only OAuth 2.0 policies have tokens")

// testConnection runs a live test: a fresh token for OAuth policies, the
// test request for the others. It records status and lastTest.
func (s *Server) testConnection(c *gin.Context) {
	conn := s.loadConnection(c)
	if conn == nil {
		return
	}
	ctx := c.Request.Context()
	start := time.Now()
	var ok bool
	var detail string
	status := connections.StatusError
	if conn.Security.Policy.OAuth() {
		_, err := s.tokens.Refresh(ctx, conn)
		ok, detail = err == nil, tokenDetail(err)
		if errors.Is(err, security.ErrNeedsConsent) {
			status = connections.StatusNeedsConsent
		}
	} else {
		out := s.tester(ctx, conn)
		ok, detail = out.OK, out.Detail
	}
	latency := time.Since(start)
	if ok {
		status = connections.StatusConfigured
	}
	result := connections.NewTestResult(time.Now(), ok, detail)
	s.audit.Tested(ctx, conn, result.Result, detail)
	if err := s.conns.SetStatus(context.WithoutCancel(ctx), conn, status, result, detail); err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, testResultBody{Result: result.Result, Detail: detail, LatencyMs: latency.Milliseconds()})
}

// tokenDetail says why a token request failed, without secrets.
func tokenDetail(err error) string {
	var te *security.TokenError
	switch {
	case err == nil:
		return "token obtained"
	case errors.As(err, &te):
		return te.Reason
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timed out waiting for a token"
	}
	return "token request failed"
}

func (s *Server) renderTokenInfo(c *gin.Context, conn *connections.Connection) {
	info, err := s.tokens.Info(c.Request.Context(), conn)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, tokenInfoBody{Present: info.Present, ObtainedAt: timePtr(info.ObtainedAt),
		ExpiresAt: timePtr(info.ExpiresAt), RefreshAt: timePtr(info.RefreshAt), Scopes: info.Scopes,
		Refreshable: info.Refreshable, LastError: info.LastError, Failures: info.Failures,
		NextAttemptAt: timePtr(info.NextAttempt)})
}

// oauthConnection is loadConnection for connections that have tokens.
func (s *Server) oauthConnection(c *gin.Context) *connections.Connection {
	conn := s.loadConnection(c)
	if conn != nil && !conn.Security.Policy.OAuth() {
		s.fail(c, errNoTokens)
		return nil
	}
	return conn
}

func (s *Server) getToken(c *gin.Context) {
	if conn := s.oauthConnection(c); conn != nil {
		s.renderTokenInfo(c, conn)
	}
}

func (s *Server) refreshToken(c *gin.Context) {
	conn := s.oauthConnection(c)
	if conn == nil {
		return
	}
	if _, err := s.tokens.Refresh(c.Request.Context(), conn); err != nil {
		s.fail(c, err)
		return
	}
	s.renderTokenInfo(c, conn)
}

func (s *Server) startConsent(c *gin.Context) {
	conn := s.loadConnection(c)
	if conn == nil {
		return
	}
	u, err := s.consent.Start(c.Request.Context(), conn, actor(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	s.audit.Consent(c.Request.Context(), conn, audit.ActionConsentStarted, "")
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, consentBody{AuthorizationURL: u, ExpiresAt: time.Now().UTC().Add(security.StateLifetime).Truncate(time.Second)})
}

var callbackPage = template.Must(template.New("callback").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>connmgr: {{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}.ok{color:#176317}.fail{color:#a11}code{background:#f3f3f3;padding:0 .2em}</style></head>
<body><h1 class="{{.Class}}">{{.Title}}</h1><p>{{.Message}}</p>
{{if .Connection}}<p>Connection: <code>{{.Connection}}</code></p>{{end}}
<p>You can close this window.</p></body></html>
`))

// oauthCallback is the redirect target of the consent flow. It needs no
// API key: the single-use state authenticates it. The query holds the
// authorization code, so it is never logged.
func (s *Server) oauthCallback(c *gin.Context) {
	conn, err := s.consent.Complete(c.Request.Context(), c.Request.URL.Query())
	page := struct{ Title, Message, Connection, Class string }{Class: "fail"}
	if conn != nil {
		page.Connection = conn.Name
	}
	status := http.StatusOK
	switch {
	case err == nil:
		page.Title, page.Message, page.Class = "Consent given", "connmgr obtained the tokens; the connection is configured.", "ok"
	case errors.Is(err, security.ErrInvalidState):
		status = http.StatusBadRequest
		page.Title, page.Message = "Link expired or already used", "This consent link is unknown, was used already, or is older than 10 minutes. Start the consent again."
	case errors.Is(err, security.ErrIssuerMismatch):
		status = http.StatusBadRequest
		page.Title, page.Message = "Wrong issuer", "The response came from an authorization server other than the one configured (iss does not match); no token was requested."
	case errors.Is(err, security.ErrConsentDenied):
		status = http.StatusBadRequest
		page.Title, page.Message = "Consent not given", "The authorization server reported: "+errText(err)+"."
	case errors.Is(err, security.ErrTokenUnavailable):
		status = http.StatusBadGateway
		page.Title, page.Message = "Token exchange failed", "The authorization server did not give tokens for the code: "+tokenDetail(err)+"."
	default:
		p := problemFor(err)
		status = p.status
		page.Title, page.Message = "Consent failed", p.detail
		if status >= 500 {
			s.logger(c).Error("consent callback failed", "error", err.Error())
		}
	}
	if err != nil {
		s.logger(c).Warn("consent callback refused", "connection", page.Connection, "status", status)
	}
	if conn != nil {
		action, detail := audit.ActionConsentFinished, ""
		if err != nil {
			action, detail = audit.ActionConsentFailed, page.Title
		}
		ctx := audit.WithRequest(c.Request.Context(), "oauth-callback", requestID(c))
		s.audit.Consent(ctx, conn, action, detail)
	}
	c.Header("Referrer-Policy", "no-referrer")
	c.Header("Cache-Control", "no-store")
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Status(status)
	c.Header("Content-Type", "text/html; charset=utf-8")
	if err := callbackPage.Execute(c.Writer, page); err != nil {
		s.logger(c).Warn("render callback page", "error", err.Error())
	}
}

// errText returns the text after the sentinel of a consent error.
func errText(err error) string {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, security.ErrConsentDenied.Error()+": "); ok && rest != "" {
		return rest
	}
	return msg
}
