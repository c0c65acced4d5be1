package security

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-openapi/jsonpointer"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/oauth2"

	"github.com/connmgr/connmgr/connections"
)

// CustomFlow is what the custom OAuth policies (OAUTH2_CUSTOM_TWO_LEGGED,
// OAUTH2_CUSTOM_THREE_LEGGED) share: token and refresh requests written as
// templates in the provider's own dialect, the answer read by JSON
// pointers, and where the token goes. The policies embed it next to their
// secrets, whose destinations they declare.
type CustomFlow struct {
	// Values are named texts the templates use as ${values.NAME}.
	Values map[string]string `json:"values,omitempty"`
	// TokenRequest obtains a token (two-legged) or exchanges the
	// authorization code (three-legged).
	TokenRequest RequestTemplate `json:"tokenRequest"`
	// RefreshRequest, optional, trades ${refreshToken} for a new token; it
	// must go to the origin of TokenRequest.
	RefreshRequest *RequestTemplate `json:"refreshRequest,omitempty"`
	Response       TokenResponse    `json:"response"`
	Apply          TokenPlacement   `json:"apply"`
}

// TokenResponse says where the token endpoint's JSON answer holds the
// token, as JSON pointers (RFC 6901). A form-encoded answer reads as an
// object of its parameters.
type TokenResponse struct {
	// AccessToken points at a string; default /access_token.
	AccessToken string `json:"accessToken,omitempty"`
	// ExpiresIn points at the lifetime in seconds, a number or a numeric
	// string; default /expires_in. Without one, the access token's JWT exp
	// or the default lifetime applies.
	ExpiresIn string `json:"expiresIn,omitempty"`
	// RefreshToken points at a refresh token; default /refresh_token.
	RefreshToken string `json:"refreshToken,omitempty"`
	// TokenType points at the token type; default /token_type.
	TokenType string `json:"tokenType,omitempty"`
}

// TokenPlacement says how a custom policy's token goes on target calls.
type TokenPlacement struct {
	// In is HEADER (default) or QUERY.
	In KeyLocation `json:"in,omitempty"`
	// Name is the header or query parameter; default Authorization.
	Name string `json:"name,omitempty"`
	// Value is a template with ${accessToken} (and ${values.NAME});
	// default "Bearer ${accessToken}" for Authorization, else
	// "${accessToken}".
	Value string `json:"value,omitempty"`
}

// placeholders says which placeholders a template may use and which it
// must.
type placeholders struct {
	values, secrets bool
	names           []string // the flow's own placeholders allowed
	required        []string
}

func (ps placeholders) allows(ref string) bool {
	if kind, name, ok := strings.Cut(ref, "."); ok {
		return (kind == "values" && ps.values || kind == "secrets" && ps.secrets) && entryName.MatchString(name)
	}
	return slices.Contains(ps.names, ref)
}

// anyPlaceholder accepts every placeholder: templates are checked when
// the policy is validated, before it is stored.
func anyPlaceholder(string) bool { return true }

var (
	tokenPlaceholders   = placeholders{values: true, secrets: true}
	refreshPlaceholders = placeholders{values: true, secrets: true, names: []string{phRefreshToken},
		required: []string{phRefreshToken}}
	applyPlaceholders = placeholders{values: true, names: []string{phAccessToken}, required: []string{phAccessToken}}
)

// validate applies the defaults and checks the flow: its templates with
// the placeholders token allows in the token request, the refresh
// request's origin, the pointers, the placement, and that the policy's
// values and secrets are all used and all there. more are the policy's
// other templates' placeholders (the authorization request's).
func (f *CustomFlow) validate(v *connections.Checker, secrets map[string]connections.Secret, token placeholders, more []string) {
	used := map[string]bool{}
	for _, ref := range more {
		used[ref] = true
	}
	tr := f.TokenRequest.check(v, "tokenRequest", token, used)
	if f.RefreshRequest != nil {
		rr := f.RefreshRequest.check(v, "refreshRequest", refreshPlaceholders, used)
		if tr != nil && rr != nil && rr.url.origin != tr.url.origin {
			v.Add("refreshRequest.url", "must have the origin of tokenRequest.url (%s): the secrets go only there", tr.url.origin)
		}
	}
	r := &f.Response
	for _, p := range []struct {
		field string
		ptr   *string
		def   string
	}{{"accessToken", &r.AccessToken, "/access_token"}, {"expiresIn", &r.ExpiresIn, "/expires_in"},
		{"refreshToken", &r.RefreshToken, "/refresh_token"}, {"tokenType", &r.TokenType, "/token_type"}} {
		if *p.ptr == "" {
			*p.ptr = p.def
		}
		if err := checkPointer(*p.ptr); err != nil {
			v.Add("response."+p.field, "%v", err)
		}
	}
	f.Apply.validate(v.Sub("apply"), used)
	if len(f.Values) > 32 {
		v.Add("values", "at most 32 values")
	}
	if len(secrets) > 32 {
		v.Add("secrets", "at most 32 secrets")
	}
	checkEntries(v, f.Values, secrets, used)
}

// check compiles r, the policy's field, with the placeholders ps allows,
// reporting to v, and adds the names it uses to used; nil when r is
// invalid.
func (r *RequestTemplate) check(v *connections.Checker, field string, ps placeholders, used map[string]bool) *compiledRequest {
	cr := r.compile(v.Sub(field), ps.allows)
	if cr == nil {
		return nil
	}
	refs := cr.refs()
	for _, ref := range refs {
		used[ref] = true
	}
	for _, need := range ps.required {
		if !slices.Contains(refs, need) {
			v.Add(field, "must use ${%s}", need)
		}
	}
	return cr
}

// refs returns the names the request's templates use.
func (cr *compiledRequest) refs() []string {
	refs := cr.url.t.refs()
	for _, t := range cr.headers {
		refs = append(refs, t.refs()...)
	}
	return append(refs, cr.body.refs()...)
}

// checkPointer checks a JSON pointer (RFC 6901).
func checkPointer(p string) error {
	if len(p) > 256 {
		return fmt.Errorf("must be at most 256 characters")
	}
	if _, err := jsonpointer.New(p); err != nil || p == "" {
		return fmt.Errorf("is not a JSON pointer (RFC 6901), such as /access_token or /data/token")
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 == len(p) || p[i+1] != '0' && p[i+1] != '1') {
			return fmt.Errorf("is not a JSON pointer: '~' must be followed by 0 or 1")
		}
	}
	return nil
}

func (a *TokenPlacement) validate(v *connections.Checker, used map[string]bool) {
	if _, ok := checkPlacement(v, &a.In, &a.Name, "may not carry a token"); !ok {
		return
	}
	if a.Value == "" {
		a.Value = "${accessToken}"
		if strings.EqualFold(a.Name, "Authorization") {
			a.Value = "Bearer ${accessToken}"
		}
	}
	t, err := parseTemplate(a.Value, applyPlaceholders.allows)
	switch {
	case err != nil:
		v.Add("value", "%v", err)
	case !t.uses(phAccessToken):
		v.Add("value", "must use ${accessToken}")
	case len(a.Value) > 1024 || !httpguts.ValidHeaderFieldValue(t.with("")):
		v.Add("value", "is not a valid header value (no CR, LF or NUL)")
	default:
		for _, ref := range t.refs() {
			used[ref] = true
		}
	}
}

// applyToken implements tokenApplier.
func (f *CustomFlow) applyToken(req *http.Request, tok *Token) error {
	t, err := parseTemplate(f.Apply.Value, anyPlaceholder)
	if err != nil {
		return &TokenError{Reason: "apply.value: " + err.Error(), Permanent: true}
	}
	vs := f.vars(nil)
	vs[phAccessToken] = tok.AccessToken.Reveal()
	value, err := t.expand(vs, func(_ segment, x string) (string, error) { return x, nil })
	if err != nil {
		return &TokenError{Reason: "apply.value: " + err.Error(), Permanent: true}
	}
	if f.Apply.In == InQuery {
		req.URL.RawQuery = setQueryParam(req.URL.RawQuery, f.Apply.Name, value)
		return nil
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		return &TokenError{Reason: "the token would put CR, LF or NUL into header " + f.Apply.Name, Permanent: true}
	}
	req.Header.Set(f.Apply.Name, value)
	return nil
}

// queryParam implements queryCarrier.
func (f *CustomFlow) queryParam() string {
	if f.Apply.In == InQuery {
		return f.Apply.Name
	}
	return ""
}

// vars returns the placeholders of the flow's values and of secrets.
func (f *CustomFlow) vars(secrets map[string]connections.Secret) vars {
	vs := vars{}
	for k, x := range f.Values {
		vs["values."+k] = x
	}
	for k, s := range secrets {
		vs["secrets."+k] = s.Reveal()
	}
	return vs
}

// MintsTokens implements connections.Minter: tokens obtained with the
// policy's secrets go to the base URL.
func (*CustomFlow) MintsTokens() {}

// refresh trades prev's refresh token for a new token with the refresh
// request. ok is false when the flow has no refresh request or prev no
// refresh token.
func (f *CustomFlow) refresh(ctx context.Context, e *tokenEnv, secrets map[string]connections.Secret, prev *Token) (tok *Token, ok bool, err error) {
	if f.RefreshRequest == nil || prev == nil || !prev.RefreshToken.IsSet() {
		return nil, false, nil
	}
	vs := f.vars(secrets)
	vs[phRefreshToken] = prev.RefreshToken.Reveal()
	tok, err = f.send(ctx, e, f.RefreshRequest, vs)
	if err != nil {
		return nil, true, refreshFailure(err)
	}
	return tok, true, nil
}

// send makes the request r with vs filled in and reads the token from
// the answer. Errors are *TokenError: a non-2xx answer keeps its status
// and, when it is an OAuth error object, the code and the sanitised
// description; they never hold the body or a value filled in.
func (f *CustomFlow) send(ctx context.Context, e *tokenEnv, r *RequestTemplate, vs vars) (*Token, error) {
	cr := r.compile(connections.NewChecker(), anyPlaceholder)
	if cr == nil {
		return nil, &TokenError{Reason: "the request template is not valid", Permanent: true}
	}
	req, err := cr.build(vs)
	if err != nil {
		return nil, &TokenError{Reason: "cannot make the token request: " + err.Error(), Permanent: true}
	}
	// Every secret filled in is redacted from what the provider says.
	redact := *e
	redact.secrets = slices.Clone(e.secrets)
	for k, x := range vs {
		if !strings.HasPrefix(k, "values.") {
			redact.secrets = append(redact.secrets, x)
		}
	}
	res, err := e.client.Do(req.WithContext(ctx))
	if err != nil {
		return nil, networkFailure(err)
	}
	defer res.Body.Close()
	body, err := readTokenAnswer(res.Body)
	var te *TokenError
	if errors.As(err, &te) {
		return nil, te
	}
	if err != nil {
		return nil, networkFailure(err)
	}
	if res.StatusCode/100 != 2 {
		re := &oauth2.RetrieveError{Response: res, Body: body}
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil {
			re.ErrorCode, re.ErrorDescription = oe.Error, oe.Description
		}
		return nil, classify(re, &redact)
	}
	doc, err := decodeAnswer(res.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, err
	}
	// An OAuth error in a 2xx (GitHub answers 200 with error=...) is
	// reported as one.
	if code, _ := pointed(doc, "/error").(string); code != "" && pointed(doc, f.Response.AccessToken) == nil {
		desc, _ := pointed(doc, "/error_description").(string)
		return nil, classify(&oauth2.RetrieveError{Response: res, ErrorCode: code, ErrorDescription: desc}, &redact)
	}
	tok, err := f.Response.token(doc, e)
	if err == nil && f.Apply.In != InQuery && !httpguts.ValidHeaderFieldValue(tok.AccessToken.Reveal()) {
		// It would fail every call until it expires: it is not kept.
		return nil, &TokenError{Reason: "the token endpoint's access_token cannot be sent in a header (it holds CR, LF or other control characters)", Permanent: true}
	}
	return tok, err
}

// decodeAnswer reads a token endpoint's answer: JSON, or a form-encoded
// body as an object of its parameters.
func decodeAnswer(contentType string, body []byte) (any, error) {
	if mt, _, _ := mime.ParseMediaType(contentType); mt == "application/x-www-form-urlencoded" {
		q, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, &TokenError{Reason: "the token endpoint's form-encoded answer does not parse", Permanent: true}
		}
		doc := map[string]any{}
		for k := range q {
			doc[k] = q.Get(k)
		}
		return doc, nil
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, &TokenError{Reason: "the token endpoint's answer is not JSON", Permanent: true}
	}
	return doc, nil
}

// token reads the token from doc with the pointers of r and applies the
// lifetime rules.
func (r *TokenResponse) token(doc any, e *tokenEnv) (*Token, error) {
	access, _ := pointed(doc, r.AccessToken).(string)
	if access == "" {
		return nil, &TokenError{Reason: "the token endpoint's answer has no string at " + r.AccessToken +
			" (response.accessToken)", Permanent: true}
	}
	secs, _ := expiresSeconds(pointed(doc, r.ExpiresIn))
	ttl := lifetime(secs, access, e.now, e.defaultTTL)
	refresh, _ := pointed(doc, r.RefreshToken).(string)
	typ, _ := pointed(doc, r.TokenType).(string)
	return &Token{AccessToken: connections.NewSecret(access), RefreshToken: connections.NewSecret(refresh),
		TokenType: typ, ObtainedAt: e.now.UTC(), ExpiresAt: e.now.Add(ttl).UTC()}, nil
}

// pointed returns the value at JSON pointer p in doc, nil when there is
// none.
func pointed(doc any, p string) any {
	ptr, err := jsonpointer.New(p)
	if err != nil {
		return nil
	}
	v, _, err := ptr.Get(doc)
	if err != nil {
		return nil
	}
	return v
}

// errNoRefreshRequest: a three-legged flow without a refresh request
// needs consent whenever its token expires.
var errNoRefreshRequest = &TokenError{Reason: "the token expired and the policy has no refreshRequest: consent is needed",
	Permanent: true, consent: true}

// deadRefresh reports whether err says the refresh token is dead.
func deadRefresh(err error) bool {
	var te *TokenError
	return errors.As(err, &te) && te.consent
}

// hasSecretEntry reports whether path ("secrets.NAME") names an entry of
// secrets, sent again or not.
func hasSecretEntry(secrets map[string]connections.Secret, path string) bool {
	name, ok := strings.CutPrefix(path, "secrets.")
	return !ok || hasKey(secrets, name)
}
