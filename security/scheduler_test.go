package security

import (
	"log/slog"
	"testing"
	"time"

	"github.com/connmgr/connmgr/connections/connectionstest"
)

func TestScheduler(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	e := newTokenEnv(t, connectionstest.SQLite)
	ts := newTokenServer(t, e.clock.Now)
	c := e.create(clientCredentials("Conn_Scheduled", ts.URL(), "scheduled"))
	e.seed(c, canary+"-seeded", "", e.clock.Now().Add(-55*time.Minute), time.Hour) // due

	s, err := StartScheduler("@every 1s", e.m, e.log)
	if err != nil {
		t.Fatalf("StartScheduler: %v", err)
	}
	waitFor(5*time.Second, func() bool { return ts.count() > 0 })
	if got := ts.count(); got != 1 {
		t.Errorf("token requests within 5s of starting the scheduler = %d, want 1", got)
	}

	start := time.Now()
	s.Stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Stop() took %v, want it prompt", d)
	}
	// Stopped: a due token is not refreshed any more.
	e.clock.Advance(55 * time.Minute)
	n := ts.count()
	time.Sleep(1500 * time.Millisecond)
	if got := ts.count(); got != n {
		t.Errorf("token requests after Stop = %d, want 0", got-n)
	}
	if got := e.stored(c).Version; got != 2 {
		t.Errorf("token version = %d, want 2 (seeded, then refreshed once)", got)
	}
}

// TestSchedulerStopFinishesARefresh: Stop at shutdown, during a refresh
// with rotation, returns once the rotated refresh token is stored: the
// database closes right after, and an answer stored by nobody would be a
// refresh token lost.
func TestSchedulerStopFinishesARefresh(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	e := newTokenEnv(t, connectionstest.SQLite)
	ts := newTokenServer(t, e.clock.Now)
	hold := make(chan struct{})
	ts.script(func(s *tokenServer) { s.hold = hold })
	c := e.create(authorizationCode("Conn_Scheduled_Rotating", ts.srv.URL+"/authorize", ts.URL(), "rotating", canary+"-secret"))
	rt := ts.newFamily("rotating")
	e.seed(c, canary+"-seeded", rt, e.clock.Now().Add(-55*time.Minute), time.Hour)

	s, err := StartScheduler("@every 1s", e.m, e.log)
	if err != nil {
		t.Fatalf("StartScheduler: %v", err)
	}
	waitFor(5*time.Second, ts.busy)
	if !ts.busy() {
		close(hold)
		s.Stop()
		t.Fatalf("the scheduler did not call the token endpoint within 5s")
	}
	stopped := make(chan struct{})
	go func() {
		s.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Errorf("Stop() returned while a token request was in flight")
	case <-time.After(300 * time.Millisecond):
	}
	close(hold)
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatalf("Stop() did not return within 2s of the token response")
	}
	st := e.stored(c)
	cur, _ := ts.current(rt)
	if st.Version != 2 || cur == rt || st.Token.RefreshToken.Reveal() != cur {
		t.Errorf("when Stop() returned: token version %d, stored refresh token is the rotated one: %v; want version 2 with the rotated refresh token",
			st.Version, st.Token.RefreshToken.Reveal() == cur && cur != rt)
	}
}

func TestSchedulerInvalidSpec(t *testing.T) {
	m := NewManager(ManagerConfig{})
	log := slog.New(slog.DiscardHandler)
	for _, spec := range []string{"", "every 15s", "@every", "@every 1x", "61 * * * *", "* * *"} {
		if s, err := StartScheduler(spec, m, log); err == nil {
			s.Stop()
			t.Errorf("StartScheduler(%q) error = nil, want one", spec)
		}
	}
}
