package connections

import (
	"context"
	"strconv"
	"sync"

	"golang.org/x/sync/singleflight"
)

// Cache keeps connections in memory for the invoke path, so a warm invoke
// reads no database. Entries are dropped by Invalidate, which the service
// calls after each change and, with several replicas, the change listener
// calls for changes made elsewhere. Connections returned are shared: callers
// must not modify them. It is safe for concurrent use.
type Cache struct {
	store Store

	mu      sync.RWMutex
	entries map[string]*Connection
	gen     uint64 // bumped by every Invalidate; a load that saw an older gen is not kept
	group   singleflight.Group
}

// NewCache returns an empty cache in front of store.
func NewCache(store Store) *Cache {
	return &Cache{store: store, entries: map[string]*Connection{}}
}

// Get returns the named connection from memory, or loads it once (callers
// asking at the same time share the load). Returns ErrNotFound.
func (c *Cache) Get(ctx context.Context, name string) (*Connection, error) {
	c.mu.RLock()
	conn, ok := c.entries[name]
	gen := c.gen
	c.mu.RUnlock()
	if ok {
		return conn, nil
	}
	// The flight is keyed by generation too: a Get that starts after an
	// Invalidate never joins a load that started before it.
	v, err, _ := c.group.Do(strconv.FormatUint(gen, 10)+"/"+name, func() (any, error) {
		conn, err := c.store.Get(context.WithoutCancel(ctx), name)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.gen == gen {
			c.entries[name] = conn
		}
		c.mu.Unlock()
		return conn, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Connection), nil
}

// Invalidate drops the named connection, or every connection when name is "".
func (c *Cache) Invalidate(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if name == "" {
		clear(c.entries)
		return
	}
	delete(c.entries, name)
}

// Observe is a Service observer that invalidates changed connections.
func (c *Cache) Observe(_ context.Context, ch Change) { c.Invalidate(ch.Name()) }
