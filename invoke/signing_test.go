package invoke_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

// sigv4Checker is a target that signs what it received again, with the
// same key, time and headers, and accepts the call only when the
// signature is the one it came with: the signature covers exactly the
// method, URL, headers and body bytes that arrived.
type sigv4Checker struct {
	srv *httptest.Server

	mu     sync.Mutex
	bodies []int
}

func newSigV4Checker(t *testing.T, secret string) *sigv4Checker {
	c := &sigv4Checker{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.bodies = append(c.bodies, len(body))
		c.mu.Unlock()
		auth := r.Header.Get("Authorization")
		_, signed, _ := strings.Cut(auth, "SignedHeaders=")
		signed, _, _ = strings.Cut(signed, ",")
		again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.RequestURI, bytes.NewReader(body))
		for _, h := range strings.Split(signed, ";") {
			if h != "host" && h != "content-length" {
				again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
			}
		}
		again.ContentLength = int64(len(body))
		when, _ := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
		sum := sha256.Sum256(body)
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "AKIDINVOKE", SecretAccessKey: secret},
			again, hex.EncodeToString(sum[:]), "execute-api", "eu-west-1", when)
		if err != nil || again.Header.Get("Authorization") != auth {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// TestSignedBodies: an AWS_SIGV4 connection (not S3) gets its body held in
// memory and hashed whatever its size within the body limit, known length
// or not; a larger body is refused (413) before the target is called; a
// request without a body is signed with the empty hash.
func TestSignedBodies(t *testing.T) {
	s := newStack(t, storetest.SQLite)
	const secret = canary + "-sigv4"
	target := newSigV4Checker(t, secret)
	s.proxy.MaxBody = 256 << 10
	c := s.create(t, &connections.Connection{Name: "Conn_SigV4_Bodies", Role: connections.RoleInvoke, BaseURL: target.srv.URL + "/v1?stage=prod",
		Security: &security.AWSSigV4{AccessKeyID: "AKIDINVOKE", SecretAccessKey: connections.NewSecret(secret), Region: "eu-west-1",
			Service: "execute-api"}})
	big := strings.Repeat("0123456789abcdef", 10<<10) // 160 KiB: more than the replay buffer
	tests := []struct {
		name     string
		method   string
		body     string
		length   int64 // -1: unknown
		status   int
		tooLarge bool
	}{
		{name: "no body", method: "GET", status: 200},
		{name: "small body", method: "POST", body: `{"id": "A-17"}`, length: 14, status: 200},
		{name: "large body of known length", method: "PUT", body: big, length: int64(len(big)), status: 200},
		{name: "large body of unknown length", method: "PUT", body: big, length: -1, status: 200},
		{name: "over the limit, known length", method: "PUT", body: big + big, length: int64(2 * len(big)), tooLarge: true},
		{name: "over the limit, unknown length", method: "PUT", body: big + big, length: -1, tooLarge: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target.mu.Lock()
			calls := len(target.bodies)
			target.mu.Unlock()
			call := invoke.Call{Conn: c, Method: tt.method, Target: invoke.Target{RelativeURI: "/orders/A%2017?x=1&x=0"},
				Header: http.Header{"Content-Type": {"application/json"}}}
			if tt.body != "" {
				call.Body, call.ContentLength = io.NopCloser(strings.NewReader(tt.body)), tt.length
			}
			rec := httptest.NewRecorder()
			err := s.proxy.Serve(rec, httptest.NewRequest("POST", "/invoke", nil), call)
			target.mu.Lock()
			called := len(target.bodies) > calls
			target.mu.Unlock()
			switch {
			case tt.tooLarge && (!errors.Is(err, invoke.ErrBodyTooLarge) || called):
				t.Errorf("Serve() = %v (target called: %v), want ErrBodyTooLarge before the target is called", err, called)
			case !tt.tooLarge && (err != nil || rec.Code != tt.status):
				t.Errorf("Serve() = %d, %v; want %d (the target checks the signature over what it got)", rec.Code, err, tt.status)
			}
		})
	}
}
