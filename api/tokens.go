package api

import (
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

type tokenInfoBody struct {
	Present       bool       `json:"present"`
	ObtainedAt    *time.Time `json:"obtainedAt,omitempty"`
	ExpiresAt     *time.Time `json:"expiresAt,omitempty"`
	RefreshAt     *time.Time `json:"refreshAt,omitempty"`
	LastRefreshAt *time.Time `json:"lastRefreshAt,omitempty"`
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

// loadConnection reads the {name} connection, rendering a problem and
// returning nil when it cannot.
func (s *Server) loadConnection(c *gin.Context) *connections.Connection {
	conn, err := s.conns.Get(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.fail(c, err)
		return nil
	}
	return conn
}

// testConnection runs a live test: it obtains the credential and calls the
// target, and records status and lastTest.
func (s *Server) testConnection(c *gin.Context) {
	conn := s.loadConnection(c)
	if conn == nil {
		return
	}
	r, err := s.tester.Test(c.Request.Context(), conn)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusOK, testOut(r))
}

func (s *Server) renderTokenInfo(c *gin.Context, conn *connections.Connection) {
	info, err := s.tokens.Info(c.Request.Context(), conn)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusOK, tokenInfoBody{Present: info.Present, ObtainedAt: timePtr(info.ObtainedAt),
		ExpiresAt: timePtr(info.ExpiresAt), RefreshAt: timePtr(info.RefreshAt), LastRefreshAt: timePtr(info.LastRefreshAt),
		Scopes: info.Scopes, Refreshable: info.Refreshable, LastError: info.LastError, Failures: info.Failures,
		NextAttemptAt: timePtr(info.NextAttempt)})
}

func (s *Server) getToken(c *gin.Context) {
	if conn := s.loadConnection(c); conn != nil {
		s.renderTokenInfo(c, conn)
	}
}

func (s *Server) refreshToken(c *gin.Context) {
	conn := s.loadConnection(c)
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
	u, expires, err := s.consent.Start(c.Request.Context(), conn, actor(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusOK, consentBody{AuthorizationURL: u, ExpiresAt: expires.Truncate(time.Second)})
}

var callbackPage = template.Must(template.New("callback").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>connmgr: {{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}.ok{color:#176317}.fail{color:#a11}code{background:#f3f3f3;padding:0 .2em}</style></head>
<body><h1 class="{{.Class}}">{{.Title}}</h1><p>{{.Message}}</p>
{{if .Connection}}<p>Connection: <code>{{.Connection}}</code></p>{{end}}
{{if .Back}}<p><a href="{{.Back}}">Back to the connection</a></p>{{else}}<p>You can close this window.</p>{{end}}</body></html>
`))

// callbackOutcome says what a consent callback's result means for the
// person in the browser: the status, a title and a message.
func callbackOutcome(err error) (status int, title, message string) {
	switch {
	case err == nil:
		return http.StatusOK, "Consent given", "connmgr obtained the tokens; the connection is configured."
	case errors.Is(err, security.ErrInvalidState):
		return http.StatusBadRequest, "Link expired or already used",
			"This consent link is unknown, was used already, or is older than 10 minutes. Start the consent again."
	case errors.Is(err, security.ErrIssuerMismatch):
		return http.StatusBadRequest, "Wrong issuer",
			"The response names an issuer (iss) other than the one configured for the connection; no token was requested."
	case errors.Is(err, security.ErrIssuerMissing):
		return http.StatusBadRequest, "Issuer missing",
			"The response carries no iss, but the authorization server advertises it (RFC 9207) or the connection requires it; no token was requested."
	case errors.Is(err, security.ErrConsentStale):
		return http.StatusConflict, "Connection changed",
			"The connection's credentials changed after this consent started; start the consent again."
	case errors.Is(err, security.ErrConsentDenied):
		return http.StatusBadRequest, "Consent not given", "The authorization server reported: " + errText(err) + "."
	case errors.Is(err, security.ErrTokenUnavailable):
		return http.StatusBadGateway, "Token exchange failed",
			"The authorization server did not give tokens for the code: " + security.Reason(err) + "."
	}
	p := problemFor(err)
	return p.status, "Consent failed", p.detail
}

// oauthCallback is the redirect target of the consent flow. It needs no
// API key: the single-use state authenticates it. The query holds the
// authorization code, so it is never logged.
func (s *Server) oauthCallback(c *gin.Context) {
	// The callback has no API key: its audit events are the callback's.
	ctx := audit.WithRequest(c.Request.Context(), "oauth-callback", requestID(c))
	conn, err := s.consent.Complete(ctx, c.Request.URL.Query())
	status, title, message := callbackOutcome(err)
	page := struct{ Title, Message, Connection, Class, Back string }{Title: title, Message: message, Class: "fail"}
	if err == nil {
		page.Class = "ok"
	}
	if conn != nil {
		page.Connection = conn.Name
		page.Back = "/console/connections/" + conn.Name
	}
	if err != nil {
		level := "consent callback refused"
		if status >= 500 {
			s.logger(c).Error(level, "connection", page.Connection, "status", status, "error", err.Error())
		} else {
			s.logger(c).Warn(level, "connection", page.Connection, "status", status)
		}
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
