package security

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/encoding/httpbinding"

	"github.com/connmgr/connmgr/connections"
)

// PolicyAWSSigV4 signs every call with AWS Signature Version 4.
const PolicyAWSSigV4 connections.Policy = "AWS_SIGV4"

// AWSSigV4 signs each call with AWS Signature Version 4, using the AWS SDK
// for Go v2's signer: with the static keys, or with AssumeRole's temporary
// credentials, which connmgr obtains from STS and keeps like tokens
// (cached, sealed at rest, refreshed ahead of expiry by the scheduler).
//
// The payload hash covers the body: a body held in memory is hashed; for
// S3 (service "s3") a streamed body of known length is sent as
// UNSIGNED-PAYLOAD; other services always get the body hashed, so the
// invoke buffers it within its body limit (as it does a body of unknown
// length to S3, which needs a Content-Length). S3 gets the x-amz-content-sha256 header it requires and its
// path encoded once; other services the path encoded twice, as SigV4 says.
type AWSSigV4 struct {
	AccessKeyID string `json:"accessKeyId,omitempty"`
	// SecretAccessKey and SessionToken sign target calls, or only the
	// AssumeRole call when assumeRole is set.
	SecretAccessKey connections.Secret `json:"secretAccessKey,omitzero" dest:"baseUrl,assumeRole.stsUrl"`
	SessionToken    connections.Secret `json:"sessionToken,omitzero" dest:"baseUrl,assumeRole.stsUrl"`
	Region          string             `json:"region,omitempty"`
	Service         string             `json:"service,omitempty"`
	AssumeRole      *AssumeRole        `json:"assumeRole,omitempty"`
}

// AssumeRole says which role AWS_SIGV4 assumes with STS AssumeRole.
type AssumeRole struct {
	RoleARN    string `json:"roleArn,omitempty"`
	ExternalID string `json:"externalId,omitempty"`
	// SessionName is RoleSessionName (default "connmgr").
	SessionName string `json:"sessionName,omitempty"`
	// DurationSeconds is the credentials' lifetime (default 3600, 900 to
	// 43200; the role's maximum session duration bounds it too).
	DurationSeconds int `json:"durationSeconds,omitempty"`
	// STSURL is the STS endpoint (default https://sts.REGION.amazonaws.com).
	STSURL string `json:"stsUrl,omitempty" url:"sts"`
}

// emptyPayload is the SHA-256 of nothing, the payload hash of a request
// without a body.
const emptyPayload = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// unsignedPayload is S3's payload hash of a body not signed.
const unsignedPayload = "UNSIGNED-PAYLOAD"

// tokenTypeAWS is the type of the tokens holding temporary credentials.
const tokenTypeAWS = "AWS_TEMPORARY_CREDENTIALS"

var (
	awsRegion      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	awsService     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	awsKeyID       = regexp.MustCompile(`^[A-Za-z0-9+/=_.-]{3,128}$`)
	awsSessionName = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	awsExternalID  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// Policy implements connections.Security.
func (*AWSSigV4) Policy() connections.Policy { return PolicyAWSSigV4 }

// Validate implements connections.Security.
func (p *AWSSigV4) Validate(v *connections.Checker) {
	if p.AccessKeyID == "" {
		v.Add("accessKeyId", "is required")
	} else if !awsKeyID.MatchString(p.AccessKeyID) {
		v.Add("accessKeyId", "is not an access key id")
	}
	v.Secret("secretAccessKey", p.SecretAccessKey, true)
	v.Secret("sessionToken", p.SessionToken, false)
	for field, s := range map[string]connections.Secret{"secretAccessKey": p.SecretAccessKey, "sessionToken": p.SessionToken} {
		if strings.ContainsAny(s.Reveal(), "\r\n\x00") {
			v.Add(field, "must not contain CR, LF or NUL")
		}
	}
	switch {
	case p.Region == "":
		v.Add("region", "is required (such as us-east-1)")
	case !awsRegion.MatchString(p.Region):
		v.Add("region", "is not a region name (such as us-east-1)")
	}
	switch {
	case p.Service == "":
		v.Add("service", "is required (such as s3 or execute-api)")
	case !awsService.MatchString(p.Service):
		v.Add("service", "is not a service name (such as s3 or execute-api)")
	}
	a := p.AssumeRole
	if a == nil {
		return
	}
	switch {
	case a.RoleARN == "":
		v.Add("assumeRole.roleArn", "is required")
	case !strings.HasPrefix(a.RoleARN, "arn:") || len(a.RoleARN) > 2048 || strings.ContainsFunc(a.RoleARN, isSpaceOrControl):
		v.Add("assumeRole.roleArn", "is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
	}
	if a.ExternalID != "" && (len(a.ExternalID) < 2 || len(a.ExternalID) > 1224 || !awsExternalID.MatchString(a.ExternalID)) {
		v.Add("assumeRole.externalId", "must be 2 to 1224 letters, digits or +=,.@:/-_")
	}
	if a.SessionName == "" {
		a.SessionName = "connmgr"
	}
	if !awsSessionName.MatchString(a.SessionName) {
		v.Add("assumeRole.sessionName", "must be 2 to 64 letters, digits or +=,.@-_")
	}
	if a.DurationSeconds == 0 {
		a.DurationSeconds = 3600
	}
	if a.DurationSeconds < 900 || a.DurationSeconds > 43200 {
		v.Add("assumeRole.durationSeconds", "must be between 900 and 43200")
	}
	if a.STSURL == "" && awsRegion.MatchString(p.Region) {
		a.STSURL = "https://sts." + p.Region + ".amazonaws.com"
	}
	v.URL("assumeRole.stsUrl", a.STSURL, true)
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// UnusedSecrets implements connections.UnusedSecrets: a session token
// belongs to the keys it came with; a replace that sends new keys without
// one drops it rather than pairing it with them.
func (p *AWSSigV4) UnusedSecrets() []string {
	if p.SecretAccessKey.IsSet() {
		return []string{"sessionToken"}
	}
	return nil
}

// hasTokens implements optionalTokens: only AssumeRole obtains tokens.
func (p *AWSSigV4) hasTokens() bool { return p.AssumeRole != nil }

// signsBody implements requestSigner: every body is hashed, except that
// S3 takes a streamed one of known length as UNSIGNED-PAYLOAD. One of
// unknown length is held too: S3 wants a Content-Length (PutObject
// answers 411 without one).
func (p *AWSSigV4) signsBody(_ string, length int64) bool { return p.Service != "s3" || length < 0 }

// signatureName implements requestSigner.
func (p *AWSSigV4) signatureName() string {
	name := "request signed with AWS Signature Version 4 (service " + p.Service + ", region " + p.Region
	if p.AssumeRole != nil {
		return name + ", temporary credentials of " + p.AssumeRole.RoleARN + ")"
	}
	return name + ", access key " + p.AccessKeyID + ")"
}

// staticCredentials are the connection's own keys.
func (p *AWSSigV4) staticCredentials() aws.Credentials {
	return aws.Credentials{AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey.Reveal(),
		SessionToken: p.SessionToken.Reveal(), Source: "connmgr"}
}

// sign implements requestSigner.
func (p *AWSSigV4) sign(req *http.Request, tok *Token, now time.Time) ([]string, error) {
	creds := p.staticCredentials()
	var used []string
	if p.AssumeRole != nil {
		tc, err := temporaryCredentials(tok)
		if err != nil {
			return nil, err
		}
		creds = aws.Credentials{AccessKeyID: tc.AccessKeyID, SecretAccessKey: tc.SecretAccessKey,
			SessionToken: tc.SessionToken, Source: "sts"}
		used = []string{tc.SecretAccessKey, tc.SessionToken}
	}
	hash, err := p.payloadHash(req)
	if err != nil {
		return nil, err
	}
	// A request signed before (a retry) is signed afresh.
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"} {
		req.Header.Del(h)
	}
	s3 := p.Service == "s3"
	if s3 {
		req.Header.Set("X-Amz-Content-Sha256", hash)
		// S3 signs the path as sent, encoded once with AWS's rules (only
		// unreserved characters raw). Go leaves sub-delimiters such as '+'
		// raw in a path, which S3 reads as the same key but signs encoded:
		// so the path goes out encoded as S3 signs it.
		req.URL.RawPath = httpbinding.EscapePath(req.URL.Path, false)
	}
	// A signer per request: the SDK's caches the derived signing key by
	// service, region and access key id, not by secret, so a shared one
	// would sign a connection's calls with the key of another connection
	// (or of the secret before a rotation) that has the same access key id.
	err = v4.NewSigner().SignHTTP(req.Context(), creds, req, hash, p.Service, p.Region, now,
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = s3 })
	if err != nil {
		return nil, fmt.Errorf("cannot sign the request: %w", err)
	}
	return used, nil
}

// payloadHash returns the hex SHA-256 of req's body: of nothing when it
// has none, of the bytes GetBody gives when it is in memory, and
// UNSIGNED-PAYLOAD for a streamed body to S3.
func (p *AWSSigV4) payloadHash(req *http.Request) (string, error) {
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		return emptyPayload, nil
	case req.GetBody != nil:
		return hashBody(req.GetBody)
	case p.Service == "s3":
		return unsignedPayload, nil
	}
	return "", errors.New("the body is not in memory, so its hash cannot be signed")
}

// tempCredentials are AssumeRole's credentials as a token holds them: as
// JSON in the access token, which is sealed at rest.
type tempCredentials struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken"`
}

func temporaryCredentials(tok *Token) (*tempCredentials, error) {
	var tc tempCredentials
	if tok == nil || json.Unmarshal([]byte(tok.AccessToken.Reveal()), &tc) != nil || tc.AccessKeyID == "" || tc.SecretAccessKey == "" {
		return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, &TokenError{Reason: "the stored temporary credentials cannot be read"})
	}
	return &tc, nil
}

// obtain implements tokenPolicy: STS AssumeRole with the static keys,
// through the connection's guarded client, at the STS URL.
func (p *AWSSigV4) obtain(ctx context.Context, e *tokenEnv, _ *connections.Connection, _ *Token) (*Token, error) {
	a := p.AssumeRole
	if a == nil {
		return nil, &TokenError{Reason: "the policy has no assumeRole", Permanent: true}
	}
	static := p.staticCredentials()
	client := sts.New(sts.Options{
		Region:       p.Region,
		BaseEndpoint: aws.String(a.STSURL),
		Credentials:  aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return static, nil }),
		HTTPClient:   e.client,
		// The token manager backs off and retries on its own schedule.
		Retryer: aws.NopRetryer{},
	})
	in := &sts.AssumeRoleInput{RoleArn: aws.String(a.RoleARN), RoleSessionName: aws.String(cmpOr(a.SessionName, "connmgr"))}
	if a.ExternalID != "" {
		in.ExternalId = aws.String(a.ExternalID)
	}
	if a.DurationSeconds > 0 {
		in.DurationSeconds = aws.Int32(int32(a.DurationSeconds))
	}
	out, err := client.AssumeRole(ctx, in)
	if err != nil {
		return nil, stsFailure(err, e)
	}
	c := out.Credentials
	if c == nil || aws.ToString(c.AccessKeyId) == "" || aws.ToString(c.SecretAccessKey) == "" {
		return nil, &TokenError{Reason: "STS answered AssumeRole without credentials", Permanent: true}
	}
	blob, err := json.Marshal(tempCredentials{AccessKeyID: aws.ToString(c.AccessKeyId),
		SecretAccessKey: aws.ToString(c.SecretAccessKey), SessionToken: aws.ToString(c.SessionToken)})
	if err != nil {
		return nil, &TokenError{Reason: "cannot keep the temporary credentials", Permanent: true}
	}
	expires := e.now.Add(e.defaultTTL)
	if c.Expiration != nil && c.Expiration.After(e.now) {
		expires = *c.Expiration
	}
	// Expiration is on STS's clock: one already past on ours (our clock
	// ahead), or none, leaves the lifetime asked for as the best estimate.
	if a.DurationSeconds > 0 && (c.Expiration == nil || !c.Expiration.After(e.now)) {
		expires = e.now.Add(time.Duration(a.DurationSeconds) * time.Second)
	}
	expires = minTime(expires, e.now.Add(maxTokenTTL))
	return &Token{AccessToken: connections.NewSecret(string(blob)), TokenType: tokenTypeAWS,
		ObtainedAt: e.now.UTC(), ExpiresAt: expires.UTC()}, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// stsFailure turns an error of the STS client into a *TokenError: STS's
// error code and sanitised message, permanent unless STS is throttling or
// failing (5xx), and network failures as for token requests.
func stsFailure(err error, e *tokenEnv) *TokenError {
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		status = re.Response.StatusCode
	}
	var api smithy.APIError
	if !errors.As(err, &api) {
		if status != 0 {
			return &TokenError{Reason: "STS: " + httpReason(status), Status: status, Permanent: status < 500 && status != 429}
		}
		return networkFailure(err)
	}
	code := api.ErrorCode()
	out := &TokenError{Status: status, Reason: "STS AssumeRole failed"}
	if safeCode(code, e.secrets) {
		out.OAuthCode = code
		out.Reason = "STS AssumeRole: " + code
		if d := sanitize(code, api.ErrorMessage(), e.secrets); d != "" {
			out.Reason += ": " + d
		}
	} else if status != 0 {
		out.Reason += ": " + httpReason(status)
	}
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
	case code == "Throttling" || code == "ThrottlingException" || code == "RequestLimitExceeded" || code == "ServiceUnavailable":
	case status == 0 && api.ErrorFault() == smithy.FaultServer:
	default:
		out.Permanent = true
	}
	return out
}
