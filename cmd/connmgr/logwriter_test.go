package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// gate is a writer whose writes wait for a release; it records each write
// whole and says when one has started.
type gate struct {
	entered chan struct{}
	release chan struct{}

	mu     sync.Mutex
	writes []string
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gate) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	<-g.release
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes = append(g.writes, string(p))
	return len(p), nil
}

func (g *gate) got() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.writes...)
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestBatchWriterBatches: lines written while the output is busy go out
// together in one write, in order, after the line being written.
func TestBatchWriterBatches(t *testing.T) {
	g := newGate()
	b := newBatchWriter(g)
	if n, err := b.Write([]byte("line 0\n")); n != 7 || err != nil {
		t.Fatalf("Write = %d, %v; want 7, nil", n, err)
	}
	waitFor(t, g.entered, "the first line's write")
	var want strings.Builder
	for i := 1; i < 100; i++ {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		b.Write([]byte(line))
	}
	close(g.release)
	b.Close()
	got := g.got()
	if len(got) != 2 || got[0] != "line 0\n" || got[1] != want.String() {
		t.Errorf("writes = %q, want line 0 alone, then lines 1 to 99 in one write", got)
	}
}

// TestBatchWriterConcurrent: lines from many goroutines all arrive, whole,
// each goroutine's in its order, and none after Close returns is lost.
func TestBatchWriterConcurrent(t *testing.T) {
	var out syncBuffer
	b := newBatchWriter(&out)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				b.Write([]byte(fmt.Sprintf("w%d %d\n", w, i)))
			}
		})
	}
	wg.Wait()
	b.Close()
	b.Write([]byte("after close\n"))
	next := make([]int, writers)
	all := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for _, l := range all[:len(all)-1] {
		var w, i int
		if _, err := fmt.Sscanf(l, "w%d %d", &w, &i); err != nil || w < 0 || w >= writers || i != next[w] {
			t.Fatalf("line %q out of order or broken (next of writer %d is %d)", l, w, next[w])
		}
		next[w]++
	}
	for w, n := range next {
		if n != lines {
			t.Errorf("writer %d: %d lines arrived, want %d", w, n, lines)
		}
	}
	if last := all[len(all)-1]; last != "after close" {
		t.Errorf("last line = %q, want the one written after Close", last)
	}
}

// TestBatchWriterBounded: with the output stuck, Write blocks once
// maxPendingLog bytes wait, and goes on when the output drains.
func TestBatchWriterBounded(t *testing.T) {
	g := newGate()
	b := newBatchWriter(g)
	b.Write([]byte("first\n"))
	waitFor(t, g.entered, "the first write")
	b.Write(bytes.Repeat([]byte("x"), maxPendingLog)) // fills the queue
	returned := make(chan struct{})
	go func() {
		b.Write([]byte("over the bound\n"))
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("Write returned with maxPendingLog bytes queued and the output stuck, want it to wait")
	case <-time.After(100 * time.Millisecond):
	}
	close(g.release)
	waitFor(t, returned, "the blocked Write after the output drained")
	b.Close()
	got := strings.Join(g.got(), "")
	if want := "first\n" + strings.Repeat("x", maxPendingLog) + "over the bound\n"; got != want {
		t.Errorf("output is %d bytes, want %d in order", len(got), len(want))
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
