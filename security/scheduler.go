package security

import (
	"context"
	"log/slog"

	"github.com/robfig/cron/v3"
)

// Scheduler runs the manager's RefreshDue on a cron schedule. A run that
// panics is logged and recovered; a run still going when the next is due
// makes that one skip.
type Scheduler struct {
	c      *cron.Cron
	cancel context.CancelFunc
}

// StartScheduler starts running m.RefreshDue on spec (standard cron or
// "@every 15s").
func StartScheduler(spec string, m *Manager, log *slog.Logger) (*Scheduler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := cronLogger{log}
	c := cron.New(cron.WithChain(cron.Recover(l), cron.SkipIfStillRunning(l)), cron.WithLogger(l))
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := c.AddFunc(spec, func() { m.RefreshDue(ctx) }); err != nil {
		cancel()
		return nil, err
	}
	c.Start()
	return &Scheduler{c: c, cancel: cancel}, nil
}

// Stop stops the schedule, cancels a running refresh and waits for it.
func (s *Scheduler) Stop() {
	done := s.c.Stop()
	s.cancel()
	<-done.Done()
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
