package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security"
)

// Problem is an RFC 9457 problem detail. Code is stable: callers branch on
// it to tell connmgr's own errors from a target's.
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Code     string       `json:"code"`
	Errors   []FieldError `json:"errors,omitempty"`
}

// FieldError names one invalid field of a request.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// problemError is an error that already knows its problem.
type problemError struct {
	status int
	code   string
	detail string
	errors []FieldError
	// retryAfter, when set, is sent as Retry-After.
	retryAfter time.Duration
}

func (e *problemError) Error() string { return e.detail }

func newProblem(status int, code, detail string) *problemError {
	return &problemError{status: status, code: code, detail: detail}
}

func invalidField(field, reason string) *problemError {
	return &problemError{status: http.StatusUnprocessableEntity, code: "validation_failed",
		detail: "the request has invalid fields", errors: []FieldError{{field, reason}}}
}

// problemFor maps an error to its problem. It is the one place where errors
// become HTTP statuses. Unknown errors become a 500 whose detail says
// nothing about the cause; the caller logs the cause.
func problemFor(err error) *problemError {
	var pe *problemError
	var ve *connections.ValidationError
	var ves connections.ValidationErrors
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.As(err, &ves):
		p := &problemError{status: http.StatusUnprocessableEntity, code: "validation_failed",
			detail: "the request has invalid fields"}
		for _, e := range ves {
			p.errors = append(p.errors, FieldError{e.Field, e.Reason})
		}
		return p
	case errors.As(err, &ve):
		return invalidField(ve.Field, ve.Reason)
	case errors.As(err, &mbe):
		return newProblem(http.StatusRequestEntityTooLarge, "payload_too_large", "the request body is larger than the limit")
	case errors.Is(err, connections.ErrNotFound):
		return newProblem(http.StatusNotFound, "connection_not_found", "no such connection")
	case errors.Is(err, connections.ErrExists):
		return newProblem(http.StatusConflict, "connection_exists", "a connection with this name (or the same name in another case) exists")
	case errors.Is(err, connections.ErrVersionMismatch):
		return newProblem(http.StatusPreconditionFailed, "precondition_failed", "the connection was changed since the version given in If-Match; read it again")
	case errors.Is(err, connections.ErrUnavailable):
		return newProblem(http.StatusServiceUnavailable, "database_unavailable", "the database cannot be reached; retry later")
	case errors.Is(err, security.ErrNeedsConsent):
		return newProblem(http.StatusConflict, "consent_required", "the connection needs consent ("+security.Reason(err)+"): POST .../consent and open the authorization URL")
	case errors.Is(err, security.ErrTokenUnavailable):
		p := newProblem(http.StatusServiceUnavailable, "token_unavailable", "no token could be obtained: "+security.Reason(err))
		if te := (*security.TokenError)(nil); errors.As(err, &te) {
			if te.Permanent {
				p.status = http.StatusBadGateway
			} else {
				p.retryAfter = te.RetryAfter
			}
		}
		return p
	case errors.Is(err, security.ErrNoConsent):
		return newProblem(http.StatusConflict, "not_authorization_code", "consent applies only to connections whose policy has a consent flow ("+
			strings.Join(security.ConsentPolicies(), ", ")+")")
	case errors.Is(err, security.ErrNoTokens):
		return newProblem(http.StatusConflict, "policy_has_no_token", "only policies that obtain tokens have them")
	case errors.Is(err, security.ErrConsentStale):
		return newProblem(http.StatusConflict, "consent_stale", "the connection changed after consent started; start it again")
	case errors.Is(err, connections.ErrNotInvocable):
		return newProblem(http.StatusForbidden, "connection_not_invocable", strings.TrimPrefix(err.Error(), connections.ErrNotInvocable.Error()+": "))
	case errors.Is(err, invoke.ErrLoop):
		return newProblem(http.StatusLoopDetected, "loop_detected", err.Error()+": a connection whose target is connmgr itself")
	case errors.Is(err, invoke.ErrInvalidRelativeURI):
		return newProblem(http.StatusBadRequest, "invalid_relative_uri", err.Error())
	case errors.Is(err, invoke.ErrTemplate):
		return newProblem(http.StatusUnprocessableEntity, "template_mismatch", err.Error())
	case errors.Is(err, invoke.ErrBodyTooLarge):
		return newProblem(http.StatusRequestEntityTooLarge, "payload_too_large", "the request body is larger than the limit")
	case errors.Is(err, outbound.ErrEgressDenied):
		return newProblem(http.StatusForbidden, "egress_denied", egressDetail(err))
	case errors.Is(err, invoke.ErrUpstreamTimeout):
		return newProblem(http.StatusGatewayTimeout, "upstream_timeout", err.Error())
	case errors.Is(err, invoke.ErrUpstreamUnreachable):
		return newProblem(http.StatusBadGateway, "upstream_unreachable", err.Error())
	case errors.Is(err, invoke.ErrRateLimited):
		p := newProblem(http.StatusTooManyRequests, "rate_limited", err.Error()+" (limits are per connmgr process)")
		var le *invoke.LimitError
		if errors.As(err, &le) {
			p.retryAfter = le.RetryAfter
		}
		return p
	case errors.Is(err, context.Canceled):
		return newProblem(499, "client_closed_request", "the caller went away")
	case errors.Is(err, access.ErrUnauthenticated):
		return newProblem(http.StatusUnauthorized, "unauthorized", "send a valid API key as Authorization: Bearer <key>")
	case errors.Is(err, access.ErrKeyNotFound):
		return newProblem(http.StatusNotFound, "api_key_not_found", "no such API key")
	}
	return newProblem(http.StatusInternalServerError, "internal_error", "connmgr failed to handle the request; the log has the details under this request id")
}

// egressDetail is the guard's own message: which address was refused and
// which variable would allow it.
func egressDetail(err error) string {
	var de *outbound.DeniedError
	if errors.As(err, &de) {
		return de.Error()
	}
	return "the target's address is not allowed; see CONNMGR_EGRESS_ALLOW"
}

// fail renders err as problem+json and logs what a 5xx hides.
func (s *Server) fail(c *gin.Context, err error) {
	p := problemFor(err)
	if p.status >= 500 {
		s.logger(c).Error("request failed", "status", p.status, "code", p.code, "error", err.Error())
	}
	s.renderProblem(c, p)
}

func (s *Server) renderProblem(c *gin.Context, p *problemError) {
	if p.status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", `Bearer realm="connmgr"`)
	}
	if p.retryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int(p.retryAfter.Round(time.Second).Seconds())))
	} else if p.status == http.StatusServiceUnavailable {
		c.Header("Retry-After", "5")
	}
	body := Problem{Type: "urn:connmgr:problem:" + p.code, Title: http.StatusText(p.status), Status: p.status,
		Detail: p.detail, Instance: requestID(c), Code: p.code, Errors: p.errors}
	c.Header("Content-Type", "application/problem+json")
	c.Header("Cache-Control", "no-store")
	if onInvokeRoute(c) {
		c.Header(ErrorHeader, p.code)
	}
	c.Abort()
	s.writeJSON(c, p.status, body)
}

// ErrorHeader marks the answers to invokes that connmgr made itself (a
// problem+json), as opposed to those of the target, which are relayed with
// an allowlist of headers that never includes it. Its value is the
// problem's code.
const ErrorHeader = "Connmgr-Error"

// onInvokeRoute reports whether c is a call to a target: the transparent
// form /invoke/... (any method, matched or not) or the dynamic form
// POST /api/v1/connections/{name}/invoke. A problem on such a route carries
// ErrorHeader, so that a caller can tell it from the target's own answer
// with the same status.
func onInvokeRoute(c *gin.Context) bool {
	switch c.FullPath() {
	case "/api/v1/connections/:name/invoke", "/invoke/:name", "/invoke/:name/*path":
		return true
	}
	p := c.Request.URL.Path
	if strings.HasPrefix(p, "/invoke/") {
		return true
	}
	// An unmatched method on the dynamic form (GET .../invoke is 405).
	rest, ok := strings.CutPrefix(p, "/api/v1/connections/")
	name, tail, _ := strings.Cut(rest, "/")
	return ok && name != "" && tail == "invoke"
}
