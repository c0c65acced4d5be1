package store

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// ChangeChannel is the PostgreSQL channel on which the database announces
// changes to connections, tokens and API keys (see migration 00003).
const ChangeChannel = "connmgr_changes"

// Notification is a change announced by the database. Kind is
// "connection" (ID and Name set), "token" (ID is the connection's),
// "apikey" (Name is the key id), or "reset": the listener (re)connected
// and may have missed changes, so every cache must be dropped.
type Notification struct {
	Kind string `json:"kind"`
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// Listen follows ChangeChannel on the PostgreSQL database at url and calls
// handle for every notification, until ctx ends. It reconnects with
// backoff after a failure and announces each (re)connection with a
// "reset" notification. ready, when not nil, is closed once the first
// LISTEN is in place.
func Listen(ctx context.Context, url string, handle func(Notification), log *slog.Logger, ready chan<- struct{}) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := listenOnce(ctx, url, handle, &ready)
		if ctx.Err() != nil {
			return
		}
		log.Warn("change listener lost the database; reconnecting", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func listenOnce(ctx context.Context, url string, handle func(Notification), ready *chan<- struct{}) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.Connect(cctx, url)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+ChangeChannel); err != nil {
		return err
	}
	handle(Notification{Kind: "reset"})
	if *ready != nil {
		close(*ready)
		*ready = nil
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var msg Notification
		if json.Unmarshal([]byte(n.Payload), &msg) == nil && msg.Kind != "" {
			handle(msg)
		}
	}
}
