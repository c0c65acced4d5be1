package security_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// TestOAuth1FormBodyAsParsedElsewhere: a form body is split into
// parameters at '&' only, as oauthlib (and HTML's form decoding) split it,
// so a raw ';' is data and the call is signed, not failed; a form body
// that does not decode (a bare '%') is the caller's mistake, an error
// naming the body (422), not an internal error.
func TestOAuth1FormBodyAsParsedElsewhere(t *testing.T) {
	py := python(t)
	e := newTokenEnv(t, storetest.SQLite)
	client := loopbackClient(t, 0)
	proxy := invoke.NewProxy(e.m, func(*connections.Connection) (http.RoundTripper, error) { return client.Transport, nil }, nil)
	const consumerSecret = canary + "-cs-form"
	v := newVerifier(t, oauthlibCheck(py))
	v.use(verifierCreds{ConsumerKey: "orders-consumer", ConsumerSecret: consumerSecret})
	c := e.create(&connections.Connection{Name: "Conn_OAuth1_Semicolon", Role: connections.RoleInvoke, BaseURL: v.srv.URL + "/api",
		Security: &security.OAuth1{ConsumerKey: "orders-consumer", ConsumerSecret: connections.NewSecret(consumerSecret)}})
	call := oauth1Call{method: "POST", relativeURI: "/orders?x=1;2", contentType: "application/x-www-form-urlencoded",
		body: "note=a;b=c&item=caf%C3%A9+%2B1&flag"}
	if got := serveOAuth1(t, proxy, c, call); got != 200 {
		verdict, seen := v.last()
		t.Errorf("oauthlib answered %d (%s) to %s %s body %q", got, verdict, seen.method, seen.uri, seen.body)
	}

	req, _ := http.NewRequest("POST", "https://api.example.com/orders", strings.NewReader("amount=100%&x=1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	_, err := security.OAuth1Base(req, nil)
	var ve *connections.ValidationError
	if !errors.As(err, &ve) || ve.Field != "body" {
		t.Errorf("OAuth1Base(undecodable form body) = %v, want a *connections.ValidationError of field body", err)
	}
}

// TestSignedBodyHashedAsItStreams: the payload hash of a body held in
// memory is computed as the body is read, not over a second copy of it,
// so a large buffered body is not held twice while it is signed.
func TestSignedBodyHashedAsItStreams(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB
	sum := sha256.Sum256(body)
	p := &security.AWSSigV4{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: connections.NewSecret(canary + "-aws"),
		Region: "eu-west-1", Service: "s3"}
	req, _ := http.NewRequest("PUT", "https://bucket.s3.eu-west-1.amazonaws.com/big.bin", bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := security.SignAWS(p, req, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := req.Header.Get("X-Amz-Content-Sha256"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("X-Amz-Content-Sha256 = %s, want the body's SHA-256", got)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("signing a 32 MiB body allocated %d MiB, want it hashed as it is read (under 4 MiB)", alloc>>20)
	}
}
