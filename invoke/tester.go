package invoke

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
	"github.com/connmgr/connmgr/security"
)

// Tokens obtains fresh tokens for a test.
type Tokens interface {
	// Refresh obtains a new token for c now. Errors wrap
	// security.ErrTokenUnavailable or security.ErrNeedsConsent.
	Refresh(ctx context.Context, c *connections.Connection) (*security.Token, error)
}

// StatusRecorder records a connection's status and last test.
type StatusRecorder interface {
	SetStatus(ctx context.Context, c *connections.Connection, next connections.Status, reason string, test *connections.TestResult) error
}

// Tester tests connections end to end: it obtains the credential (a fresh
// token for token policies) and calls the target with it, then records
// the status and the result. Set its fields before first use; it is then
// safe for concurrent use.
type Tester struct {
	Proxy  *Proxy
	Tokens Tokens
	Status StatusRecorder
	// Tested, when set, hears of every test (for the audit log).
	Tested func(ctx context.Context, c *connections.Connection, r *connections.TestResult)
	// Now returns the time (default time.Now).
	Now func() time.Time
}

// The steps of a test.
const (
	StepToken = "token"
	// StepSign is the signing of the request, for policies that sign each
	// request (OAuth 1.0a, AWS SigV4).
	StepSign    = "sign"
	StepRequest = "request"
)

// Test tests c and records the outcome: status CONFIGURED when every step
// succeeded, else ERROR (NEEDS_CONSENT when consent is missing), with the
// failing step's detail as the reason. The request step sends c's
// testRequest (success: a 2xx answer) or, without one, probes the base URL
// (success: any HTTP answer). Details are short and safe: statuses and
// kinds of failure, never bodies or credentials. The error is one of
// recording the result.
func (t *Tester) Test(ctx context.Context, c *connections.Connection) (*connections.TestResult, error) {
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	start := now()
	r := &connections.TestResult{Result: connections.TestSuccess}
	status := connections.StatusConfigured
	if security.HasTokens(c.Security) {
		_, err := t.Tokens.Refresh(ctx, c)
		step := connections.TestStep{Step: StepToken, Result: connections.TestSuccess, Detail: "token obtained"}
		if err != nil {
			step.Result, step.Detail, status = connections.TestFailure, security.Reason(err), connections.StatusError
			if errors.Is(err, security.ErrNeedsConsent) {
				status = connections.StatusNeedsConsent
			}
		}
		r.Steps = append(r.Steps, step)
	}
	if status == connections.StatusConfigured {
		steps := t.Proxy.request(ctx, c)
		r.Steps = append(r.Steps, steps...)
		if steps[len(steps)-1].Result != connections.TestSuccess {
			status = connections.StatusError
		}
	} else {
		r.Steps = append(r.Steps, connections.TestStep{Step: StepRequest, Result: connections.TestSkipped,
			Detail: "not sent: no credential"})
	}
	var details []string
	for _, s := range r.Steps {
		if s.Result == connections.TestFailure {
			r.Result, r.Detail = connections.TestFailure, s.Step+": "+s.Detail
		}
		if s.Result == connections.TestSuccess {
			details = append(details, s.Detail)
		}
	}
	if r.Result == connections.TestSuccess {
		r.Detail = strings.Join(details, "; ")
	}
	r.At, r.Latency = now().UTC().Truncate(time.Millisecond), now().Sub(start)
	if t.Tested != nil {
		t.Tested(ctx, c, r)
	}
	reason := ""
	if status != connections.StatusConfigured {
		reason = "test failed at " + r.Detail
	}
	if err := t.Status.SetStatus(context.WithoutCancel(ctx), c, status, reason, r); err != nil {
		return r, err
	}
	return r, nil
}

// request is the request step of a test: c's testRequest, or a probe of
// the base URL, sent with the credential through the same transport as
// Serve and bounded by c's timeout. It reads at most a little of the
// response body and discards it. For a policy that signs requests the
// sign step comes first; a probe that the target answers 401 or 403 then
// fails, since the target refused the signature.
func (p *Proxy) request(ctx context.Context, c *connections.Connection) []connections.TestStep {
	step := p.requestStep(ctx, c)
	if !security.Signs(c) {
		return []connections.TestStep{step.TestStep}
	}
	sign := connections.TestStep{Step: StepSign, Result: connections.TestSuccess, Detail: security.SignatureName(c)}
	switch {
	case step.signErr != "":
		sign.Result, sign.Detail = connections.TestFailure, step.signErr
		step.Result, step.Detail = connections.TestSkipped, "not sent: the request could not be signed"
	case step.probe && (step.status == http.StatusUnauthorized || step.status == http.StatusForbidden):
		step.Result = connections.TestFailure
		step.Detail = strings.TrimSuffix(step.Detail, " (reachable; set testRequest to check an answer)") +
			" from the target: it refused the signature or the credentials"
	}
	return []connections.TestStep{sign, step.TestStep}
}

// requestOutcome is the request step with what request needs to judge a
// signed request.
type requestOutcome struct {
	connections.TestStep
	probe   bool
	status  int
	signErr string // why the credential could not be applied
}

func (p *Proxy) requestStep(ctx context.Context, c *connections.Connection) (out requestOutcome) {
	out.TestStep = connections.TestStep{Step: StepRequest, Result: connections.TestFailure}
	step := &out.TestStep
	method, rel, probe := http.MethodGet, "", true
	defer func() { out.probe = probe }()
	if t := c.TestRequest; t != nil {
		if t.Method != "" {
			method = t.Method
		}
		rel, probe = t.RelativeURI, false
	}
	base, err := p.bases.get(c.BaseURL)
	if err != nil {
		step.Detail = "invalid base URL"
		return out
	}
	target, err := Resolve(base, Target{RelativeURI: rel})
	if err != nil {
		step.Detail = "invalid test request: " + resolveReason(err)
		return out
	}
	transport, err := p.Transports(c)
	if err != nil {
		step.Detail = "cannot set up the connection's transport: " + err.Error()
		return out
	}
	timeout := timeoutOf(c)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errDeadline)
	defer cancel()
	req := (&http.Request{Method: method, URL: target, Host: target.Host, Header: http.Header{},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	setStatic(req.Header, c)
	req.Header.Set("Via", via)
	if p.Credentials != nil {
		if _, err := p.Credentials.Apply(ctx, c, req); err != nil {
			// Credentials' errors are safe to show.
			step.Detail = "no credential: " + security.Reason(err)
			out.signErr = security.Reason(err)
			return out
		}
	}
	what := method + " " + displayPath(target.EscapedPath())
	res, err := transport.RoundTrip(req)
	if err != nil {
		step.Detail = what + ": " + testFailure(ctx, timeout, err)
		return out
	}
	discard(res.Body)
	out.status = res.StatusCode
	code := "HTTP " + strconv.Itoa(res.StatusCode)
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		step.Result, step.Detail = connections.TestSuccess, what+": "+code
	case probe:
		step.Result, step.Detail = connections.TestSuccess, what+": "+code+" (reachable; set testRequest to check an answer)"
	default:
		step.Detail = what + ": " + code + " from the target"
	}
	return out
}

// displayPath shortens a path for a test detail.
func displayPath(p string) string {
	if p == "" {
		p = "/"
	}
	if len(p) > 80 {
		p = p[:80] + "..."
	}
	return p
}

// resolveReason phrases an error of Resolve for a test's detail.
func resolveReason(err error) string {
	msg := err.Error()
	if errors.Is(err, ErrInvalidRelativeURI) {
		return "relative URI " + strings.TrimPrefix(msg, ErrInvalidRelativeURI.Error()+": ")
	}
	return strings.TrimPrefix(msg, "invoke: ")
}

// testFailure describes why a test request got no answer.
func testFailure(ctx context.Context, timeout time.Duration, err error) string {
	f := outbound.Classify(err)
	switch {
	case f.Kind == outbound.KindEgressDenied:
		return "refused by the egress guard: " + f.Reason
	case context.Cause(ctx) == errDeadline || f.Kind == outbound.KindTimeout:
		return "timeout after " + timeout.String()
	}
	return f.Reason
}
