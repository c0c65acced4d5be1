package security

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dghubble/oauth1"

	"github.com/connmgr/connmgr/connections"
)

// PolicyOAuth1 signs every call with OAuth 1.0a (RFC 5849) as a client
// that already holds its credentials: Oracle Integration's "OAuth 1.0 One
// Legged".
const PolicyOAuth1 connections.Policy = "OAUTH1_ONE_LEGGED"

// The OAuth 1.0 signature methods.
const (
	OAuth1HMACSHA1   = "HMAC-SHA1"
	OAuth1HMACSHA256 = "HMAC-SHA256"
	OAuth1RSASHA1    = "RSA-SHA1"
)

// OAuth1 signs each call with the consumer's credentials and, when set,
// a token's (RFC 5849 §3): a fresh nonce and timestamp per request, the
// signature over the final request (method, the resolved URL with its
// merged query, and a form body), in the Authorization header.
//
// The signature methods and RFC 3986 percent-encoding are those of
// github.com/dghubble/oauth1. Its signature base string keeps one value
// per parameter name ("duplicate parameters are not supported"), skips a
// form body whose Content-Type has parameters and sends an empty
// oauth_token when there is none, so the base string is assembled here,
// as RFC 5849 §3.4.1 says: every parameter of the query and the form body,
// repeated names included, sorted by name and then value.
type OAuth1 struct {
	ConsumerKey string `json:"consumerKey,omitempty"`
	// ConsumerSecret keys HMAC-SHA1 and HMAC-SHA256.
	ConsumerSecret connections.Secret `json:"consumerSecret,omitzero" dest:"baseUrl"`
	// Token is the token credential's identifier (oauth_token), optional.
	Token       string             `json:"token,omitempty"`
	TokenSecret connections.Secret `json:"tokenSecret,omitzero" dest:"baseUrl"`
	// SignatureMethod is HMAC-SHA1 (default), HMAC-SHA256 or RSA-SHA1.
	SignatureMethod string `json:"signatureMethod,omitempty"`
	// PrivateKeyPEM is the RSA key of RSA-SHA1.
	PrivateKeyPEM connections.Secret `json:"privateKeyPem,omitzero" dest:"baseUrl"`
	// Realm, optional, goes in the Authorization header (not signed).
	Realm string `json:"realm,omitempty"`
}

// Policy implements connections.Security.
func (*OAuth1) Policy() connections.Policy { return PolicyOAuth1 }

// Validate implements connections.Security.
func (p *OAuth1) Validate(v *connections.Checker) {
	v.Text("consumerKey", p.ConsumerKey, connections.MaxShortField, true)
	v.Text("token", p.Token, connections.MaxShortField, false)
	v.Text("realm", p.Realm, connections.MaxShortField, false)
	if p.SignatureMethod == "" {
		p.SignatureMethod = OAuth1HMACSHA1
	}
	switch p.SignatureMethod {
	case OAuth1HMACSHA1, OAuth1HMACSHA256:
		v.Secret("consumerSecret", p.ConsumerSecret, true)
		v.Secret("tokenSecret", p.TokenSecret, false)
		if p.PrivateKeyPEM.IsSet() {
			v.Add("privateKeyPem", "is used only with signatureMethod RSA-SHA1")
		}
		if p.TokenSecret.IsSet() && p.Token == "" {
			v.Add("tokenSecret", "is used only with a token")
		}
	case OAuth1RSASHA1:
		v.Secret("privateKeyPem", p.PrivateKeyPEM, true)
		if p.PrivateKeyPEM.IsSet() {
			if _, err := p.rsaKey(); err != nil {
				v.Add("privateKeyPem", "%v", err)
			}
		}
		// RFC 5849 §3.4.3: RSA-SHA1 uses neither secret.
		if p.ConsumerSecret.IsSet() {
			v.Add("consumerSecret", "is not used with signatureMethod RSA-SHA1")
		}
		if p.TokenSecret.IsSet() {
			v.Add("tokenSecret", "is not used with signatureMethod RSA-SHA1")
		}
	default:
		v.Add("signatureMethod", "must be HMAC-SHA1, HMAC-SHA256 or RSA-SHA1")
	}
}

// UnusedSecrets implements connections.UnusedSecrets: a switch between
// HMAC and RSA leaves the other's secrets behind.
func (p *OAuth1) UnusedSecrets() []string {
	if p.SignatureMethod == OAuth1RSASHA1 {
		return []string{"consumerSecret", "tokenSecret"}
	}
	if p.Token == "" {
		return []string{"privateKeyPem", "tokenSecret"}
	}
	return []string{"privateKeyPem"}
}

func (p *OAuth1) rsaKey() (*rsa.PrivateKey, error) {
	k, err := ParsePrivateKey(p.PrivateKeyPEM.Reveal())
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("is not an RSA private key (RSA-SHA1 needs one)")
	}
	return rk, nil
}

// signer returns the library's signer of the policy's method.
func (p *OAuth1) signer() (oauth1.Signer, error) {
	switch p.SignatureMethod {
	case OAuth1HMACSHA256:
		return &oauth1.HMAC256Signer{ConsumerSecret: p.ConsumerSecret.Reveal()}, nil
	case OAuth1RSASHA1:
		k, err := p.rsaKey()
		if err != nil {
			return nil, fmt.Errorf("the private key cannot be used: %w", err)
		}
		return &oauth1.RSASigner{PrivateKey: k}, nil
	}
	return &oauth1.HMACSigner{ConsumerSecret: p.ConsumerSecret.Reveal()}, nil
}

// signsBody implements requestSigner: a form body is signed (RFC 5849
// §3.4.1.3.1), any other body is not.
func (*OAuth1) signsBody(contentType string, _ int64) bool { return formBody(contentType) }

// formBody reports whether contentType is application/x-www-form-urlencoded
// (parameters such as charset allowed).
func formBody(contentType string) bool {
	if contentType == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// signatureName implements requestSigner.
func (p *OAuth1) signatureName() string {
	name := "request signed with OAuth 1.0a " + cmpOr(p.SignatureMethod, OAuth1HMACSHA1) + " (consumer " + p.ConsumerKey
	if p.Token != "" {
		name += ", token " + p.Token
	}
	return name + ")"
}

// sign implements requestSigner with a fresh nonce.
func (p *OAuth1) sign(req *http.Request, _ *Token, now time.Time) ([]string, error) {
	return nil, p.signWith(req, now, randomString(24), true)
}

// signWith signs req with the given timestamp and nonce (RFC 5849 §3.1)
// and sets the Authorization header. version says whether to send the
// optional oauth_version (connmgr does: some servers require it; RFC
// 5849's examples do not).
func (p *OAuth1) signWith(req *http.Request, now time.Time, nonce string, version bool) error {
	signer, err := p.signer()
	if err != nil {
		return err
	}
	oauthParams := [][2]string{
		{"oauth_consumer_key", p.ConsumerKey},
		{"oauth_nonce", nonce},
		{"oauth_signature_method", signer.Name()},
		{"oauth_timestamp", strconv.FormatInt(now.Unix(), 10)},
	}
	if version {
		oauthParams = append(oauthParams, [2]string{"oauth_version", "1.0"})
	}
	if p.Token != "" {
		oauthParams = append(oauthParams, [2]string{"oauth_token", p.Token})
	}
	base, err := signatureBase(req, oauthParams)
	if err != nil {
		return err
	}
	sig, err := signer.Sign(p.TokenSecret.Reveal(), base)
	if err != nil {
		return fmt.Errorf("cannot sign the request: %w", err)
	}
	var h strings.Builder
	h.WriteString("OAuth ")
	if p.Realm != "" {
		h.WriteString(`realm="` + oauth1.PercentEncode(p.Realm) + `", `)
	}
	for _, kv := range append(oauthParams, [2]string{"oauth_signature", sig}) {
		h.WriteString(kv[0] + `="` + oauth1.PercentEncode(kv[1]) + `", `)
	}
	req.Header.Set("Authorization", strings.TrimSuffix(h.String(), ", "))
	return nil
}

// signatureBase returns RFC 5849 §3.4.1's signature base string of req
// with the protocol parameters oauthParams: the method, the base string
// URI, and every parameter of the query, the form body and oauthParams,
// each name and value percent-encoded, sorted by name and then by value,
// repeated names included.
func signatureBase(req *http.Request, oauthParams [][2]string) (string, error) {
	var params [][2]string
	// Split at '&' only, as HTML's form decoding and oauthlib do: a raw
	// ';' is data (url.ParseQuery refuses it).
	add := func(raw string) bool {
		for _, pair := range strings.Split(raw, "&") {
			if pair == "" {
				continue
			}
			k, v, _ := strings.Cut(pair, "=")
			k, err1 := url.QueryUnescape(k)
			v, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				return false
			}
			params = append(params, [2]string{oauth1.PercentEncode(k), oauth1.PercentEncode(v)})
		}
		return true
	}
	if !add(req.URL.RawQuery) {
		return "", fmt.Errorf("the query cannot be read as parameters for the OAuth 1.0 signature")
	}
	if formBody(req.Header.Get("Content-Type")) && req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return "", fmt.Errorf("the form body is not in memory, so it cannot be signed")
		}
		body, err := readAll(req.GetBody)
		if err != nil {
			return "", err
		}
		if !add(string(body)) {
			// The caller's body: an invalid field, not a failure of connmgr.
			return "", &connections.ValidationError{Field: "body",
				Reason: "is not application/x-www-form-urlencoded (invalid percent-encoding), so OAuth 1.0 cannot sign it"}
		}
	}
	for _, kv := range oauthParams {
		params = append(params, [2]string{oauth1.PercentEncode(kv[0]), oauth1.PercentEncode(kv[1])})
	}
	slices.SortFunc(params, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	pairs := make([]string, len(params))
	for i, kv := range params {
		pairs[i] = kv[0] + "=" + kv[1]
	}
	return strings.ToUpper(req.Method) + "&" + oauth1.PercentEncode(baseStringURI(req)) + "&" +
		oauth1.PercentEncode(strings.Join(pairs, "&")), nil
}

// baseStringURI is RFC 5849 §3.4.1.2's base string URI: scheme and host
// in lower case, the port only when it is not the scheme's default, and
// the path as sent.
func baseStringURI(req *http.Request) string {
	scheme := strings.ToLower(req.URL.Scheme)
	hostport := req.Host
	if hostport == "" {
		hostport = req.URL.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, ""
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" && !(scheme == "http" && port == "80" || scheme == "https" && port == "443") {
		host += ":" + port
	}
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// maxSignedBody bounds a body read for a signature; the invoke's body
// limit is lower.
const maxSignedBody = 1 << 30

// hashBody returns the hex SHA-256 of a fresh copy of a request body
// from getBody, hashed as it is read.
func hashBody(getBody func() (io.ReadCloser, error)) (string, error) {
	r, err := getBody()
	if err != nil {
		return "", fmt.Errorf("cannot read the body to sign it")
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(r, maxSignedBody)); err != nil {
		return "", fmt.Errorf("cannot read the body to sign it")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readAll reads a fresh copy of a request body from getBody.
func readAll(getBody func() (io.ReadCloser, error)) ([]byte, error) {
	r, err := getBody()
	if err != nil {
		return nil, fmt.Errorf("cannot read the body to sign it")
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxSignedBody))
	if err != nil {
		return nil, fmt.Errorf("cannot read the body to sign it")
	}
	return b, nil
}
