package security

import "time"

// The tests are in package security_test: those that need a database must
// be, because package store imports this one. This file gives them the
// few internals they look at.

// LeaseFor is how long m holds a connection's refresh lease.
func (m *Manager) LeaseFor() time.Duration { return m.leaseFor() }

// Cached returns the token m holds in memory for connection id, nil when
// it holds none.
func (m *Manager) Cached(id int64) *Token {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if e := m.cache[id]; e != nil {
		return e.tok
	}
	return nil
}
