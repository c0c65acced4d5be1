package connections_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
)

// countingStore counts the loads a cache makes. When hold is set, each
// Get reads the database, then waits for hold to close before returning.
type countingStore struct {
	connections.Store
	loads  atomic.Int64
	loaded chan string   // receives the name of each load that has read
	hold   chan struct{} // when not nil, loads wait for it
}

func (s *countingStore) Get(ctx context.Context, name string) (*connections.Connection, error) {
	s.loads.Add(1)
	c, err := s.Store.Get(ctx, name)
	if s.loaded != nil {
		s.loaded <- name
	}
	if s.hold != nil {
		<-s.hold
	}
	return c, err
}

// update changes the stored description of the named connection.
func update(t *testing.T, store connections.Store, name, description string) {
	t.Helper()
	c, err := store.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	c.Description = description
	if err := store.Update(context.Background(), c, false); err != nil {
		t.Fatal(err)
	}
}

func cacheEnv(t *testing.T, env *testEnv, names ...string) *countingStore {
	t.Helper()
	for _, name := range names {
		if err := env.store.Create(context.Background(), sample(name, security.PolicyBasic)); err != nil {
			t.Fatal(err)
		}
	}
	return &countingStore{Store: env.store}
}

func TestCacheLoadsOnce(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		store := cacheEnv(t, env, "Conn_A")
		store.hold = make(chan struct{})
		cache := connections.NewCache(store)
		const n = 10
		got := make([]*connections.Connection, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { got[i], errs[i] = cache.Get(context.Background(), "Conn_A") })
		}
		time.Sleep(50 * time.Millisecond) // let the callers pile up on the load
		close(store.hold)
		wg.Wait()
		for i := range n {
			if errs[i] != nil || got[i] == nil || got[i].Name != "Conn_A" {
				t.Errorf("Get(%q) #%d = %v, %v", "Conn_A", i, got[i], errs[i])
			}
		}
		if loads := store.loads.Load(); loads != 1 {
			t.Errorf("%d concurrent Gets made %d loads, want 1", n, loads)
		}
		if c, err := cache.Get(context.Background(), "Conn_A"); err != nil || c != got[0] || store.loads.Load() != 1 {
			t.Errorf("warm Get(%q) = %p, %v after %d loads, want the cached %p and no load", "Conn_A", c, err, store.loads.Load(), got[0])
		}
	})
}

func TestCacheInvalidate(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		store := cacheEnv(t, env, "Conn_A", "Conn_B")
		cache := connections.NewCache(store)
		tests := []struct {
			name        string
			action      func()
			get         string
			loads       int64 // total after the Get
			description string
		}{
			{name: "cold", action: func() {}, get: "Conn_A", loads: 1},
			{name: "warm", action: func() {}, get: "Conn_A", loads: 1},
			{name: "other cold", action: func() {}, get: "Conn_B", loads: 2},
			{name: "changed, not invalidated", action: func() { update(t, env.store, "Conn_A", "v2") }, get: "Conn_A", loads: 2},
			{name: "invalidated", action: func() { cache.Invalidate("Conn_A") }, get: "Conn_A", loads: 3, description: "v2"},
			{name: "other one kept", action: func() {}, get: "Conn_B", loads: 3},
			{name: "all invalidated", action: func() { update(t, env.store, "Conn_B", "v2"); cache.Invalidate("") }, get: "Conn_B", loads: 4, description: "v2"},
			{name: "all invalidated, first one", action: func() {}, get: "Conn_A", loads: 5, description: "v2"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tt.action()
				c, err := cache.Get(ctx, tt.get)
				if err != nil || c.Description != tt.description {
					t.Errorf("Get(%q) = %v, %v, want description %q", tt.get, c, err, tt.description)
				}
				if loads := store.loads.Load(); loads != tt.loads {
					t.Errorf("loads = %d, want %d", loads, tt.loads)
				}
			})
		}
		if _, err := cache.Get(ctx, "Conn_Missing"); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Get(missing) = %v, want ErrNotFound", err)
		}
	})
}

// TestCacheObservesService checks the wiring the server uses: the cache,
// as a service observer, never serves a connection older than the last
// change made through the service.
func TestCacheObservesService(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		cache := connections.NewCache(env.store)
		svc := &connections.Service{Store: env.store, Fingerprints: fingerprints,
			Observers: []func(context.Context, connections.Change){cache.Observe}}
		if err := svc.Create(ctx, "alice", newConn("Conn_A", security.PolicyBasic)); err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Get(ctx, "Conn_A"); err != nil {
			t.Fatal(err)
		}
		c := newConn("Conn_A", security.PolicyBasic)
		c.Description = "replaced"
		if err := svc.Replace(ctx, "bob", nil, c); err != nil {
			t.Fatal(err)
		}
		if got, err := cache.Get(ctx, "Conn_A"); err != nil || got.Description != "replaced" || got.Version != 2 {
			t.Errorf("Get after Replace = %v, %v, want version 2", got, err)
		}
		if err := svc.Delete(ctx, "bob", "Conn_A", nil); err != nil {
			t.Fatal(err)
		}
		if got, err := cache.Get(ctx, "Conn_A"); !errors.Is(err, connections.ErrNotFound) {
			t.Errorf("Get after Delete = %v, %v, want ErrNotFound", got, err)
		}
	})
}

// TestCacheInvalidateDuringLoad invalidates while a load that read the old
// row is in flight. The old row must not stay cached, and a Get that
// starts after Invalidate must see the change.
func TestCacheInvalidateDuringLoad(t *testing.T) {
	forEngine(t, func(t *testing.T, env *testEnv) {
		ctx := context.Background()
		store := cacheEnv(t, env, "Conn_A")
		store.loaded, store.hold = make(chan string, 10), make(chan struct{})
		cache := connections.NewCache(store)

		first := make(chan *connections.Connection)
		go func() {
			c, _ := cache.Get(ctx, "Conn_A")
			first <- c
		}()
		<-store.loaded // the first load has read the old row
		update(t, env.store, "Conn_A", "v2")
		cache.Invalidate("Conn_A")
		second := make(chan *connections.Connection)
		go func() {
			c, _ := cache.Get(ctx, "Conn_A")
			second <- c
		}()
		select { // a fresh load reads, or the caller joined the old one
		case <-store.loaded:
		case <-time.After(100 * time.Millisecond):
		}
		close(store.hold)
		if c := <-first; c == nil || c.Description != "" {
			t.Errorf("Get started before the change = %v, want the old connection", c)
		}
		c := <-second
		if c == nil {
			t.Fatal("Get started after Invalidate failed")
		}
		expect(t, "Cache.Get joins a load that started before Invalidate", c.Description == "v2",
			"Get started after Invalidate = version %d, description %q; want version 2, v2", c.Version, c.Description)

		if c, err := cache.Get(ctx, "Conn_A"); err != nil || c.Description != "v2" {
			t.Errorf("Get after the loads = %v, %v, want description v2: a stale load was kept", c, err)
		}
	})
}
