package alerts_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/connmgr/connmgr/alerts"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/outbound"
)

// tolerance is how far a delivery's timestamp may be from the receiver's
// clock; older deliveries are refused as possible replays.
const tolerance = 5 * time.Minute

// verify checks a delivery as a receiver does: the timestamp is recent,
// and the signature is the HMAC-SHA256, under the shared secret, of the
// timestamp, a dot and the raw body, compared in constant time.
func verify(secret []byte, h http.Header, body []byte, now time.Time) error {
	ts := h.Get("X-Connmgr-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("missing or malformed timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("timestamp too far from now")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(h.Get("X-Connmgr-Signature"))) {
		return errors.New("bad signature")
	}
	return nil
}

// A receiver verifies each delivery before trusting it, and drops repeats
// by event id (delivery is at least once).
func Example() {
	secret := []byte("a shared secret, 16 bytes or more")
	got := make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = verify(secret, r.Header, body, time.Now())
		}
		if err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			got <- err.Error()
			return
		}
		var ev struct{ ID, Type, Connection, From, To, Detail string }
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			got <- err.Error()
			return
		}
		got <- fmt.Sprintf("%s: %s %s -> %s (%s)", ev.Type, ev.Connection, ev.From, ev.To, ev.Detail)
	}))
	defer receiver.Close()

	allow, _ := outbound.ParseAllow("127.0.0.0/8") // the receiver is local here
	n, err := alerts.New(alerts.Config{
		URL:    receiver.URL,
		Secret: secret,
		Client: (&outbound.Guard{Allow: allow}).Client(5 * time.Second),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)

	svc := &connections.Service{}
	svc.StatusObservers = append(svc.StatusObservers, n.StatusChanged)
	// What svc.SetStatus does when a refresh fails:
	n.StatusChanged(ctx, &connections.Connection{Name: "Conn_REST_Orders"},
		connections.StatusConfigured, connections.StatusError, "token endpoint answered 401")
	fmt.Println(<-got)

	if err := n.Close(ctx); err != nil {
		fmt.Println(err)
	}
	// Output: connection.status_changed: Conn_REST_Orders CONFIGURED -> ERROR (token endpoint answered 401)
}
