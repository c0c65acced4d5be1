package security

import (
	"context"
	"log/slog"
	"time"

	"github.com/robfig/cron/v3"
)

// Scheduler runs the manager's RefreshDue on a cron schedule: each run
// schedules the refreshes that fall before the next run, each at its own
// time. A run that panics is logged and recovered; a run still going when
// the next is due makes that one skip.
type Scheduler struct {
	c      *cron.Cron
	m      *Manager
	cancel context.CancelFunc
}

// StartScheduler starts running m.RefreshDue on spec (standard cron or
// "@every 15s").
func StartScheduler(spec string, m *Manager, log *slog.Logger) (*Scheduler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, err
	}
	l := cronLogger{log}
	c := cron.New(cron.WithChain(cron.Recover(l), cron.SkipIfStillRunning(l)), cron.WithLogger(l))
	ctx, cancel := context.WithCancel(context.Background())
	c.Schedule(sched, cron.FuncJob(func() {
		now := time.Now()
		// A second of slack, so that a refresh due just after the next run
		// begins is not left to the run after that.
		m.RefreshDue(ctx, sched.Next(now).Sub(now)+time.Second)
	}))
	c.Start()
	return &Scheduler{c: c, m: m, cancel: cancel}, nil
}

// Stop stops the schedule, cancels the refreshes not begun yet and waits
// for those under way (each bounded by the request timeout).
func (s *Scheduler) Stop() {
	done := s.c.Stop()
	s.cancel()
	<-done.Done()
	s.m.Wait()
}

// cronLogger adapts slog to cron's logger; cron's chatty info lines go to
// debug.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, keysAndValues ...any) {
	l.log.Debug("scheduler: "+msg, keysAndValues...)
}

func (l cronLogger) Error(err error, msg string, keysAndValues ...any) {
	l.log.Error("scheduler: "+msg, append(keysAndValues, "error", err.Error())...)
}
