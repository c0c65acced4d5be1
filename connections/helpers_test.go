package connections_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// testEnv is a migrated database on one engine with the real connection
// store on it.
type testEnv struct {
	engine storetest.Engine
	db     *store.DB
	store  *store.Connections
}

// forEngine runs f on a fresh database for every engine under test.
func forEngine(t *testing.T, f func(t *testing.T, env *testEnv)) {
	for _, engine := range storetest.Engines(t) {
		t.Run(string(engine), func(t *testing.T) {
			db := storetest.Open(t, engine)
			f(t, &testEnv{engine: engine, db: db, store: store.NewConnections(db, storetest.KeyRing(t))})
		})
	}
}

// fingerprints is the Fingerprinter of the services under test.
var fingerprints = connections.NewFingerprinter([]byte("connections-test-fingerprint-key"))

// newConn returns a valid connection with policy p, as a client sends it.
func newConn(name string, p connections.Policy) *connections.Connection {
	return storetest.Connection(name, p)
}

// sample returns a valid connection with policy p, defaults applied.
func sample(name string, p connections.Policy) *connections.Connection {
	return storetest.ValidConnection(name, p)
}

func ptr[T any](v T) *T { return &v }

// fields returns the sorted fields named by a ValidationErrors error.
func fields(err error) []string {
	var errs connections.ValidationErrors
	if !errors.As(err, &errs) {
		return nil
	}
	var fs []string
	for _, e := range errs {
		fs = append(fs, e.Field)
	}
	slices.Sort(fs)
	return fs
}

// expect reports the failure unless ok. A non-empty bug names the fixed
// bug the case guards against, so a regression says what came back.
func expect(t *testing.T, bug string, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	if bug != "" {
		t.Errorf("regression (%s): "+format, append([]any{bug}, args...)...)
		return
	}
	t.Errorf(format, args...)
}

// sec returns c's policy settings as the policy type T, failing the test
// when they are another policy's.
func sec[T connections.Security](t testing.TB, c *connections.Connection) T {
	t.Helper()
	s, ok := c.Security.(T)
	if !ok {
		t.Fatalf("connection %q has policy %s, not the one the test expects", c.Name, c.Policy())
	}
	return s
}

// client returns the OAuth client of c's policy.
func client(t testing.TB, c *connections.Connection) *security.Client {
	t.Helper()
	switch s := c.Security.(type) {
	case *security.ClientCredentials:
		return &s.Client
	case *security.Password:
		return &s.Client
	case *security.AuthorizationCode:
		return &s.Client
	}
	t.Fatalf("connection %q has policy %s, which has no OAuth client", c.Name, c.Policy())
	return nil
}
