//go:build interop

package interop

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The cases of issue #11 for signed requests and client certificates:
// AWS Signature Version 4 against versitygw (an S3-compatible server that
// verifies signatures, built from the module proxy by versitygw.sh), and
// connections with client certificates against nginx with
// ssl_verify_client on (nginx.sh). Only connmgr's public API is used.

// raw sends a request with a raw body through connmgr (the transparent
// invoke), authenticated with the admin token.
func (c *connmgr) raw(method, path string, body []byte, header map[string]string) (*answer, error) {
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	req.Header.Set("Authorization", "Bearer "+c.admin)
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	return &answer{status: res.StatusCode, header: res.Header, body: b}, nil
}

// fullTest is the answer of POST .../test with its steps.
type fullTest struct {
	Result string `json:"result"`
	Detail string `json:"detail"`
	Steps  []struct {
		Step, Result, Detail string
	} `json:"steps"`
}

func (c *connmgr) fullTest(o *observation, name string) *fullTest {
	a, err := c.do(http.MethodPost, connPath(name, "/test"), nil, true)
	if err != nil || a.status != http.StatusOK {
		o.fail("POST /test → %v %s", err, answerText(a))
		return nil
	}
	var r fullTest
	if err := json.Unmarshal(a.body, &r); err != nil {
		o.fail("POST /test: %v", err)
		return nil
	}
	return &r
}

func (r *fullTest) String() string {
	parts := []string{r.Result}
	for _, s := range r.Steps {
		parts = append(parts, fmt.Sprintf("%s %s %q", s.Step, s.Result, s.Detail))
	}
	return strings.Join(parts, ", ")
}

func answerText(a *answer) string {
	if a == nil {
		return ""
	}
	return a.problem()
}

var s3Code = regexp.MustCompile(`<Code>([^<]+)</Code>`)

// s3Error names the S3 error code of an answer, if it has one.
func s3Error(a *answer) string {
	if m := s3Code.FindSubmatch(a.body); m != nil {
		return string(m[1])
	}
	return ""
}

func TestSigV4(t *testing.T) {
	cm := newConnmgr(t)
	s3, region := need(t, "S3_URL"), need(t, "S3_REGION")
	access, secret := need(t, "S3_ACCESS_KEY"), need(t, "S3_SECRET_KEY")
	conn := func(name, secret string) map[string]any {
		return map[string]any{"name": name, "role": "INVOKE", "baseUrl": s3,
			"security": map[string]any{"policy": "AWS_SIGV4", "accessKeyId": access, "secretAccessKey": secret,
				"region": region, "service": "s3"}}
	}
	object := make([]byte, 300<<10) // more than the 64 KiB connmgr buffers for replays: streamed
	rand.Read(object)
	bucket := fmt.Sprintf("interop-%d", time.Now().Unix())
	const key = "dir/hello wörld+1.bin"
	objectPath := "/invoke/Conn_S3/" + bucket + "/" + (&url.URL{Path: key}).EscapedPath()
	ok := runCase(t, "8a SigV4 S3: create a bucket (versitygw)",
		"PUT /invoke/Conn_S3/{bucket} → 200: versitygw verifies connmgr's AWS SigV4 signature (SDK signer, empty payload hash)",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_S3", secret)) {
				return
			}
			a, err := cm.raw(http.MethodPut, "/invoke/Conn_S3/"+bucket, nil, nil)
			if err != nil {
				o.fail("%v", err)
				return
			}
			o.check(a.status == 200, "PUT bucket %s → HTTP %d %s", bucket, a.status, s3Error(a))
		})
	runCase(t, "8b SigV4 S3: PUT an object, streamed",
		"PUT of 300 KiB with Content-Length → 200: the body streams (x-amz-content-sha256: UNSIGNED-PAYLOAD) and versitygw accepts the signature; the key has a space, non-ASCII and '+'",
		func(t *testing.T, o *observation) {
			if !ok {
				o.fail("no bucket (8a)")
				return
			}
			a, err := cm.raw(http.MethodPut, objectPath, object, map[string]string{"Content-Type": "application/octet-stream"})
			if err != nil {
				o.fail("%v", err)
				return
			}
			o.check(a.status == 200, "PUT %q (%d bytes) → HTTP %d %s", key, len(object), a.status, s3Error(a))
		})
	runCase(t, "8c SigV4 S3: GET the object back",
		"GET → 200 with the same bytes; a GET with a query (list-type=2, prefix) → 200 listing the key",
		func(t *testing.T, o *observation) {
			a, err := cm.raw(http.MethodGet, objectPath, nil, nil)
			if err != nil {
				o.fail("%v", err)
				return
			}
			o.check(a.status == 200 && bytes.Equal(a.body, object), "GET %q → HTTP %d %s, %d bytes, same as sent: %v",
				key, a.status, s3Error(a), len(a.body), bytes.Equal(a.body, object))
			a, err = cm.raw(http.MethodGet, "/invoke/Conn_S3/"+bucket+"?list-type=2&prefix="+url.QueryEscape("dir/"), nil, nil)
			if err != nil {
				o.fail("%v", err)
				return
			}
			o.check(a.status == 200 && bytes.Contains(a.body, []byte("<Key>dir/hello wörld+1.bin</Key>")),
				"ListObjectsV2 prefix dir/ → HTTP %d %s, lists the key: %v", a.status, s3Error(a),
				bytes.Contains(a.body, []byte("<Key>dir/hello wörld+1.bin</Key>")))
		})
	runCase(t, "8d SigV4 S3: a wrong secret is refused",
		"a connection with another secret: GET → versitygw's 403 SignatureDoesNotMatch passed through; its test FAILS at the request step",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_S3_Wrong", secret+"x")) {
				return
			}
			a, err := cm.raw(http.MethodGet, "/invoke/Conn_S3_Wrong/"+bucket, nil, nil)
			if err != nil {
				o.fail("%v", err)
				return
			}
			o.check(a.status == 403 && s3Error(a) == "SignatureDoesNotMatch", "GET → HTTP %d %s", a.status, s3Error(a))
			if r := cm.fullTest(o, "Conn_S3_Wrong"); r != nil {
				o.check(r.Result == "FAILURE" && len(r.Steps) == 2 && r.Steps[1].Result == "FAILURE", "test: %s", r)
			}
		})
	runCase(t, "8e SigV4 S3: connection test",
		"POST .../test → SUCCESS with the steps sign (AWS SigV4, service s3) and request (GET / is ListBuckets: 200)",
		func(t *testing.T, o *observation) {
			if r := cm.fullTest(o, "Conn_S3"); r != nil {
				o.check(r.Result == "SUCCESS" && len(r.Steps) == 2 && r.Steps[0].Step == "sign" && r.Steps[1].Detail == "GET /: HTTP 200",
					"test: %s", r)
			}
		})
}

func readFile(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(need(t, key))
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return string(b)
}

// shortLived issues a client certificate of the client CA valid for the
// next few seconds, with its key, as PEM.
func shortLived(t *testing.T, caCertPEM, caKeyPEM string, life time.Duration) (string, string) {
	t.Helper()
	cb, _ := pem.Decode([]byte(caCertPEM))
	kb, _ := pem.Decode([]byte(caKeyPEM))
	if cb == nil || kb == nil {
		t.Fatal("fixture: the client CA is not PEM")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "connmgr interop short-lived"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(life), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
}

var titleRe = regexp.MustCompile(`<title>([^<]+)</title>`)

// page names an nginx error page by its title.
func page(a *answer) string {
	if m := titleRe.FindSubmatch(a.body); m != nil {
		return string(m[1])
	}
	return strings.TrimSpace(truncate(string(a.body), 80))
}

func TestMTLS(t *testing.T) {
	cm := newConnmgr(t)
	target, serverCA := need(t, "NGINX_URL"), readFile(t, "NGINX_SERVER_CA")
	cert, key := readFile(t, "NGINX_CLIENT_CERT"), readFile(t, "NGINX_CLIENT_KEY")
	other, otherKey := readFile(t, "NGINX_OTHER_CERT"), readFile(t, "NGINX_OTHER_KEY")
	caCert, caKey := readFile(t, "NGINX_CLIENT_CA_CERT"), readFile(t, "NGINX_CLIENT_CA_KEY")
	conn := func(name string, tls map[string]any) map[string]any {
		return map[string]any{"name": name, "role": "INVOKE", "baseUrl": target, "security": map[string]any{"policy": "NONE"},
			"testRequest": map[string]any{"method": "GET", "relativeUri": "/whoami"}, "tls": tls}
	}
	get := func(o *observation, name string) *answer {
		a, err := cm.raw(http.MethodGet, "/invoke/"+name+"/whoami", nil, nil)
		if err != nil {
			o.fail("%v", err)
			return nil
		}
		return a
	}
	runCase(t, "9a mTLS nginx: the right client certificate",
		"nginx (ssl_verify_client on) with a private server CA: GET → 200 naming the client certificate, verify SUCCESS; the connection test SUCCEEDS",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_MTLS", map[string]any{"clientCertificatePem": cert, "clientKeyPem": key, "caCertificatesPem": serverCA})) {
				return
			}
			if a := get(o, "Conn_MTLS"); a != nil {
				o.check(a.status == 200 && strings.Contains(string(a.body), "verify SUCCESS"), "GET → HTTP %d %q", a.status, strings.TrimSpace(string(a.body)))
			}
			if r := cm.fullTest(o, "Conn_MTLS"); r != nil {
				o.check(r.Result == "SUCCESS", "test: %s", r)
			}
			got, err := cm.get("Conn_MTLS")
			if err == nil {
				tls, _ := got["tls"].(map[string]any)
				o.check(tls["clientKeyPem"] == "********", "GET connection: tls.clientKeyPem %v", tls["clientKeyPem"])
			}
		})
	runCase(t, "9b mTLS nginx: a certificate of another CA",
		"nginx refuses it: HTTP 400 \"The SSL certificate error\" passed through; the connection test FAILS with HTTP 400",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_MTLS_Other", map[string]any{"clientCertificatePem": other, "clientKeyPem": otherKey, "caCertificatesPem": serverCA})) {
				return
			}
			if a := get(o, "Conn_MTLS_Other"); a != nil {
				o.check(a.status == 400 && strings.Contains(page(a), "SSL certificate error"), "GET → HTTP %d %q", a.status, page(a))
			}
			if r := cm.fullTest(o, "Conn_MTLS_Other"); r != nil {
				o.check(r.Result == "FAILURE" && strings.Contains(r.Detail, "HTTP 400"), "test: %s", r)
			}
		})
	runCase(t, "9c mTLS nginx: a certificate that expired after it was set",
		"a certificate valid for 3 s is accepted at create; once expired nginx refuses it (HTTP 400 \"The SSL certificate error\"); an already expired one is refused at create (422 tls.clientCertificatePem)",
		func(t *testing.T, o *observation) {
			c, k := shortLived(t, caCert, caKey, 3*time.Second)
			if !cm.create(o, conn("Conn_MTLS_Expiring", map[string]any{"clientCertificatePem": c, "clientKeyPem": k, "caCertificatesPem": serverCA})) {
				return
			}
			if a := get(o, "Conn_MTLS_Expiring"); a != nil {
				o.check(a.status == 200, "GET while valid → HTTP %d", a.status)
			}
			time.Sleep(4 * time.Second)
			if a := get(o, "Conn_MTLS_Expiring"); a != nil {
				o.check(a.status == 400 && strings.Contains(page(a), "SSL certificate error"), "GET once expired → HTTP %d %q", a.status, page(a))
			}
			a, err := cm.do(http.MethodPost, "/api/v1/connections", conn("Conn_MTLS_Expired",
				map[string]any{"clientCertificatePem": c, "clientKeyPem": k, "caCertificatesPem": serverCA}), true)
			if err != nil {
				o.fail("%v", err)
				return
			}
			o.check(a.status == 422 && strings.Contains(a.problem(), "tls.clientCertificatePem"), "create with it now → %s", a.problem())
		})
	runCase(t, "9d mTLS nginx: no client certificate",
		"nginx refuses: HTTP 400 \"No required SSL certificate was sent\"",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_MTLS_None", map[string]any{"caCertificatesPem": serverCA})) {
				return
			}
			if a := get(o, "Conn_MTLS_None"); a != nil {
				o.check(a.status == 400 && strings.Contains(page(a), "No required SSL certificate"), "GET → HTTP %d %q", a.status, page(a))
			}
		})
	runCase(t, "9e mTLS nginx: without the server's private CA",
		"connmgr refuses the target before sending anything: 502 naming the reason (the server's certificate is not signed by a trusted authority); the test FAILS saying so",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_MTLS_NoCA", map[string]any{"clientCertificatePem": cert, "clientKeyPem": key})) {
				return
			}
			if a := get(o, "Conn_MTLS_NoCA"); a != nil {
				o.check(a.status == 502 && strings.Contains(a.problem(), "not signed by a trusted authority"), "GET → %s", a.problem())
			}
			if r := cm.fullTest(o, "Conn_MTLS_NoCA"); r != nil {
				o.check(r.Result == "FAILURE" && strings.Contains(r.Detail, "not signed by a trusted authority"), "test: %s", r)
			}
		})
}

// oauth1Answer is what interop/oauth1.py (oauthlib) says of a request.
type oauth1Answer struct {
	Valid  bool              `json:"valid"`
	Params [][2]string       `json:"params"`
	Log    map[string]string `json:"log"`
}

func TestOAuth1(t *testing.T) {
	cm := newConnmgr(t)
	target := need(t, "OAUTH1_URL")
	conn := func(name, method, consumerSecret string) map[string]any {
		return map[string]any{"name": name, "role": "INVOKE", "baseUrl": target + "/api?tenant=t1",
			"testRequest": map[string]any{"method": "GET", "relativeUri": "/photos?size=original"},
			"security": map[string]any{"policy": "OAUTH1_ONE_LEGGED", "consumerKey": need(t, "OAUTH1_CONSUMER_KEY"),
				"consumerSecret": consumerSecret, "token": need(t, "OAUTH1_TOKEN"), "tokenSecret": need(t, "OAUTH1_TOKEN_SECRET"),
				"signatureMethod": method, "realm": "connmgr interop"}}
	}
	secret := need(t, "OAUTH1_CONSUMER_SECRET")
	verdict := func(o *observation, a *answer) *oauth1Answer {
		var v oauth1Answer
		if err := json.Unmarshal(a.body, &v); err != nil {
			o.fail("the resource answered HTTP %d %q", a.status, truncate(string(a.body), 120))
			return nil
		}
		return &v
	}
	params := func(v *oauth1Answer, name string) []string {
		var out []string
		for _, p := range v.Params {
			if p[0] == name {
				out = append(out, p[1])
			}
		}
		return out
	}
	runCase(t, "10a OAuth 1.0a HMAC-SHA1: repeated query parameters (oauthlib)",
		"GET /invoke/Conn_OAuth1/photos?size=a&size=b&file=x+y → 200: oauthlib verifies the signature over the base URL's query merged with the call's, repeated names included",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_OAuth1", "HMAC-SHA1", secret)) {
				return
			}
			a, err := cm.raw(http.MethodGet, "/invoke/Conn_OAuth1/photos?size=b&size=a&file=x+y%2Bz&note=caf%C3%A9", nil, nil)
			if err != nil {
				o.fail("%v", err)
				return
			}
			if v := verdict(o, a); v != nil {
				o.check(a.status == 200 && v.Valid, "HTTP %d, valid %v %v; oauthlib saw size=%v tenant=%v file=%v",
					a.status, v.Valid, v.Log, params(v, "size"), params(v, "tenant"), params(v, "file"))
			}
		})
	runCase(t, "10b OAuth 1.0a HMAC-SHA256: a form body",
		"POST of an application/x-www-form-urlencoded body with repeated names and non-ASCII → 200: the body is signed; oauthlib sees its parameters",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_OAuth1_256", "HMAC-SHA256", secret)) {
				return
			}
			a, err := cm.raw(http.MethodPost, "/invoke/Conn_OAuth1_256/orders", []byte("item=J%C3%BCrgen&item=%E2%82%AC+10&flag"),
				map[string]string{"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
			if err != nil {
				o.fail("%v", err)
				return
			}
			if v := verdict(o, a); v != nil {
				o.check(a.status == 200 && v.Valid && len(params(v, "item")) == 2, "HTTP %d, valid %v %v; oauthlib saw item=%v",
					a.status, v.Valid, v.Log, params(v, "item"))
			}
		})
	runCase(t, "10c OAuth 1.0a: a wrong consumer secret",
		"oauthlib refuses the signature: its 401 passes through; the connection test FAILS at the request step",
		func(t *testing.T, o *observation) {
			if !cm.create(o, conn("Conn_OAuth1_Wrong", "HMAC-SHA1", secret+"x")) {
				return
			}
			a, err := cm.raw(http.MethodGet, "/invoke/Conn_OAuth1_Wrong/photos", nil, nil)
			if err != nil {
				o.fail("%v", err)
				return
			}
			if v := verdict(o, a); v != nil {
				o.check(a.status == 401 && !v.Valid && v.Log["signature"] == "False", "HTTP %d, oauthlib's log %v", a.status, v.Log)
			}
			if r := cm.fullTest(o, "Conn_OAuth1_Wrong"); r != nil {
				o.check(r.Result == "FAILURE" && len(r.Steps) == 2 && r.Steps[1].Result == "FAILURE", "test: %s", r)
			}
		})
	runCase(t, "10d OAuth 1.0a: a fresh nonce per request, and the connection test",
		"the same call twice → 200 both times (oauthlib refuses a nonce it saw); POST .../test → SUCCESS with the steps sign and request",
		func(t *testing.T, o *observation) {
			for i := range 2 {
				a, err := cm.raw(http.MethodGet, "/invoke/Conn_OAuth1/photos?size=original", nil, nil)
				if err != nil {
					o.fail("%v", err)
					return
				}
				o.check(a.status == 200, "call %d → HTTP %d", i+1, a.status)
			}
			if r := cm.fullTest(o, "Conn_OAuth1"); r != nil {
				o.check(r.Result == "SUCCESS" && len(r.Steps) == 2 && r.Steps[0].Step == "sign", "test: %s", r)
			}
		})
}
