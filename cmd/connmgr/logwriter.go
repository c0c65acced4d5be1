package main

import (
	"io"
	"sync"
)

// maxPendingLog is how much log output may wait for the writer before
// Write blocks: a stalled stderr slows connmgr down rather than grow its
// memory without end.
const maxPendingLog = 1 << 20

// batchWriter passes log lines to w from one goroutine. Write only copies
// the line and wakes it; the goroutine writes everything gathered since its
// last write in one call. When idle, each line goes out at once; under load,
// many lines share one system call, and no request waits on another's write
// while holding the logger's lock (at 13k requests/s that wait was most
// of connmgr's lock contention). Close writes what is left.
type batchWriter struct {
	w    io.Writer
	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	closeOnce sync.Once
	mu        sync.Mutex
	drained   *sync.Cond // signalled when the queue is taken to be written
	pending   []byte
	spare     []byte
	closed    bool
}

func newBatchWriter(w io.Writer) *batchWriter {
	b := &batchWriter{w: w, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	b.drained = sync.NewCond(&b.mu)
	go b.run()
	return b
}

// Write queues a copy of p; it blocks only while maxPendingLog bytes wait.
func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.pending) >= maxPendingLog && !b.closed {
		b.drained.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return b.w.Write(p)
	}
	b.pending = append(b.pending, p...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default: // a wake-up is already due
	}
	return len(p), nil
}

func (b *batchWriter) run() {
	defer close(b.done)
	for {
		select {
		case <-b.wake:
			b.flush()
		case <-b.stop:
			b.flush()
			return
		}
	}
}

func (b *batchWriter) flush() {
	b.mu.Lock()
	out := b.pending
	b.pending, b.spare = b.spare[:0], nil
	b.drained.Broadcast()
	b.mu.Unlock()
	if len(out) > 0 {
		_, _ = b.w.Write(out) // nowhere to report a failing stderr
	}
	b.mu.Lock()
	if cap(out) <= maxPendingLog { // keep one buffer of a usual size
		b.spare = out[:0]
	}
	b.mu.Unlock()
}

// Close writes what is queued and makes later Writes direct.
func (b *batchWriter) Close() error {
	b.closeOnce.Do(func() {
		close(b.stop)
		<-b.done
		b.mu.Lock()
		defer b.mu.Unlock()
		b.closed = true
		b.drained.Broadcast()
		if len(b.pending) > 0 { // queued after the last flush; written under the lock to keep the order
			_, _ = b.w.Write(b.pending)
			b.pending = nil
		}
	})
	return nil
}
