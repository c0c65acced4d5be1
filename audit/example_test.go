package audit_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/connmgr/connmgr/audit"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
	"github.com/connmgr/connmgr/store"
)

// Example attaches the audit log to the connection service and reads back
// what a create and an update recorded.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "audit-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := store.OpenDB(ctx, "", dir)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	spec, _ := keyring.GenerateKeySpec("k1")
	ring, _ := keyring.ParseKeyRing(spec)
	// Derived keys come from the instance secret, which keys rotate keeps.
	instance, err := store.InstanceSecret(ctx, db, ring, "derive")
	if err != nil {
		log.Fatal(err)
	}

	events := audit.New(store.NewAuditEvents(db), keyring.Derive(instance, "audit"))
	svc := &connections.Service{Store: store.NewConnections(db, ring),
		Fingerprints: connections.NewFingerprinter(keyring.Derive(instance, "fingerprint"))}
	svc.Observers = append(svc.Observers, events.ConnectionChanged)
	svc.StatusObservers = append(svc.StatusObservers, events.StatusChanged)

	// The API puts the caller and the request id into the context.
	ctx = audit.WithRequest(ctx, "alice", "req-1")
	c := &connections.Connection{Name: "Conn_REST_Orders", Role: connections.RoleInvoke,
		BaseURL: "https://api.example.com/v2", Security: &security.Basic{Username: "orders", Password: connections.NewSecret("s3cret")}}
	if err := svc.Create(ctx, "alice", c); err != nil {
		log.Fatal(err)
	}
	c.Description = "Orders API"
	c.Security = &security.Basic{Username: "orders", Password: connections.NewSecret("n3w-s3cret")}
	if err := svc.Replace(ctx, "alice", nil, c); err != nil {
		log.Fatal(err)
	}

	list, _, err := events.List(ctx, audit.Filter{Connection: "Conn_REST_Orders"})
	if err != nil {
		log.Fatal(err)
	}
	for i := len(list) - 1; i >= 0; i-- {
		e := list[i]
		fmt.Println(e.Actor, e.Action, e.Detail["field"], e.Detail["changed"], e.Detail["host"])
	}
	// Output:
	// alice connection.created <nil> <nil> api.example.com
	// alice secret.set security.password <nil> <nil>
	// alice connection.updated <nil> [description] <nil>
	// alice secret.changed security.password <nil> <nil>
}
