package security_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store/storetest"
)

func TestScheduler(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	e := newTokenEnv(t, storetest.SQLite)
	ts := newTokenServer(t, e.clock.Now)
	c := e.create(clientCredentials("Conn_Scheduled", ts.URL(), "scheduled"))
	e.seed(c, canary+"-seeded", "", e.clock.Now().Add(-55*time.Minute), time.Hour) // due

	s, err := security.StartScheduler("@every 1s", e.m, e.log)
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
	e := newTokenEnv(t, storetest.SQLite)
	ts := newTokenServer(t, e.clock.Now)
	hold, release := newHold(t)
	ts.script(func(s *tokenServer) { s.hold = hold })
	c := e.create(authorizationCode("Conn_Scheduled_Rotating", ts.srv.URL+"/authorize", ts.URL(), "rotating", canary+"-secret"))
	rt := ts.newFamily("rotating")
	e.seed(c, canary+"-seeded", rt, e.clock.Now().Add(-55*time.Minute), time.Hour)

	s, err := security.StartScheduler("@every 1s", e.m, e.log)
	if err != nil {
		t.Fatalf("StartScheduler: %v", err)
	}
	waitFor(5*time.Second, ts.busy)
	if !ts.busy() {
		release()
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
	release()
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
	m := security.NewManager(security.ManagerConfig{})
	log := slog.New(slog.DiscardHandler)
	for _, spec := range []string{"", "every 15s", "@every", "@every 1x", "61 * * * *", "* * *"} {
		if s, err := security.StartScheduler(spec, m, log); err == nil {
			s.Stop()
			t.Errorf("security.StartScheduler(%q) error = nil, want one", spec)
		}
	}
}

// TestRefreshDueSchedules: RefreshDue schedules the refreshes due within
// its lookahead, each at its own time, and returns at once; Wait waits for
// them; those not begun when the context ends are dropped.
func TestRefreshDueSchedules(t *testing.T) {
	t.Parallel() // waits for a refresh a second ahead
	// Real time: the refreshes wait on timers, and the Manager checks the
	// time when they fire.
	e := newTokenEnv(t, storetest.SQLite, func(cfg *security.ManagerConfig) { cfg.Now = time.Now })
	ts := newTokenServer(t, time.Now)
	now := time.Now().UTC()
	const lead = time.Second
	// A 1h token is due 48 minutes after it was obtained: this one in a
	// second, the other in 48 minutes.
	soon := e.create(clientCredentials("Conn_Due_Soon", ts.URL(), "soon"))
	e.seed(soon, canary+"-seeded-soon", "", now.Add(-48*time.Minute+lead), time.Hour)
	later := e.create(clientCredentials("Conn_Due_Later", ts.URL(), "later"))
	e.seed(later, canary+"-seeded-later", "", now, time.Hour)

	t.Run("canceled before its time", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		e.m.RefreshDue(ctx, time.Minute)
		cancel()
		e.m.Wait()
		if got := ts.count(); got != 0 {
			t.Errorf("token requests after a canceled RefreshDue = %d, want 0", got)
		}
	})

	t.Run("at its time", func(t *testing.T) {
		due := now.Add(lead)
		e.m.RefreshDue(context.Background(), time.Minute)
		if got, early := ts.count(), time.Until(due); got != 0 && early > 0 {
			t.Errorf("token requests when RefreshDue returned = %d, want 0 (the refresh is due in %v)", got, early)
		}
		e.m.Wait()
		// The databases keep microseconds: the stored time may be a little
		// earlier.
		if early := time.Until(due); early > 10*time.Millisecond {
			t.Errorf("Wait() returned %v before the refresh was due, want it to wait for the refresh at its time", early)
		}
		if got := ts.countBy(byClient); got["soon"] != 1 || got["later"] != 0 {
			t.Errorf("token requests by client = %v, want 1 for soon (due in %v) and 0 for later (due in 48m)", got, lead)
		}
		if v := e.stored(soon).Version; v != 2 {
			t.Errorf("token version of %s = %d, want 2 (seeded, then refreshed)", soon.Name, v)
		}
	})
}
