package gate

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitQueued waits until n requests wait at g.
func waitQueued(t *testing.T, g *Gate, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, q := g.Load(); q == n {
			return
		}
		if time.Now().After(deadline) {
			_, q := g.Load()
			t.Fatalf("queued = %d, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGateGrantsInArrivalOrder(t *testing.T) {
	g := New(2)
	ctx := context.Background()
	for range 2 {
		if _, err := g.Acquire(ctx, 0, time.Now); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Acquire(ctx, 0, time.Now); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}()
		waitQueued(t, g, i+1) // fixes the arrival order
	}
	for i := range 5 {
		g.Release() // one at a time: who wakes is who was granted
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			n := len(order)
			mu.Unlock()
			if n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no waiter woke after release %d", i+1)
			}
		}
	}
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("grant order %v, want arrival order", order)
		}
	}
	if in, q := g.Load(); in != 2 || q != 0 {
		t.Fatalf("in flight %d, queued %d; want 2, 0", in, q)
	}
	g.Release()
	g.Release()
	if in, _ := g.Load(); in != 0 {
		t.Fatalf("in flight %d after releasing all, want 0", in)
	}
}

func TestGateNeverExceedsItsLimit(t *testing.T) {
	const limit, workers, rounds = 3, 16, 200
	g := New(limit)
	var cur, peak atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if _, err := g.Acquire(context.Background(), 0, time.Now); err != nil {
					t.Error(err)
					return
				}
				n := cur.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				cur.Add(-1)
				g.Release()
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > limit || p < 1 {
		t.Fatalf("peak concurrency %d, want 1..%d", p, limit)
	}
	if in, q := g.Load(); in != 0 || q != 0 {
		t.Fatalf("in flight %d, queued %d at the end; want 0, 0", in, q)
	}
}

// TestGateWaiterLeavesOnCancel: a waiter whose context ends leaves the
// queue without a slot, and the slots stay accounted for.
func TestGateWaiterLeavesOnCancel(t *testing.T) {
	g := New(1)
	g.Acquire(context.Background(), 0, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := g.Acquire(ctx, 0, time.Now); errc <- err }()
	waitQueued(t, g, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire = %v, want context.Canceled", err)
	}
	if in, q := g.Load(); in != 1 || q != 0 {
		t.Fatalf("in flight %d, queued %d; want 1, 0", in, q)
	}
	g.Release()
	if _, err := g.Acquire(context.Background(), 0, time.Now); err != nil {
		t.Fatal(err)
	}
	g.Release()
}

// TestGateCancelRacingAGrant: when a release hands the slot to a waiter
// whose context is ending, the slot is passed on, never lost.
func TestGateCancelRacingAGrant(t *testing.T) {
	g := New(1)
	for range 500 {
		g.Acquire(context.Background(), 0, time.Now)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := g.Acquire(ctx, 0, time.Now); errc <- err }()
		waitQueued(t, g, 1)
		go cancel()
		g.Release()
		if err := <-errc; err == nil {
			g.Release() // it got the slot
		}
		if in, q := g.Load(); in != 0 || q != 0 {
			t.Fatalf("in flight %d, queued %d after the race; want 0, 0", in, q)
		}
	}
}

func TestGateQueueStaysCompact(t *testing.T) {
	g := New(1)
	g.Acquire(context.Background(), 0, time.Now)
	var wg sync.WaitGroup
	const n = 300
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.Acquire(context.Background(), 0, time.Now)
			g.Release()
		}()
	}
	waitQueued(t, g, n)
	g.Release()
	wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.head != 0 || len(g.queue) != 0 {
		t.Fatalf("queue head %d, len %d after draining; want 0, 0", g.head, len(g.queue))
	}
}

func TestGateFastPathDoesNotAllocate(t *testing.T) {
	g := New(4)
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		g.Acquire(ctx, 0, time.Now)
		g.Release()
	}); n != 0 {
		t.Fatalf("acquire+release allocates %v times, want 0", n)
	}
}

func BenchmarkGate(b *testing.B) {
	g := New(1 << 20)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Acquire(ctx, 0, time.Now)
			g.Release()
		}
	})
}

func TestGateReportsTheWait(t *testing.T) {
	g := New(1)
	var reads atomic.Int64
	clock := func() time.Time { return time.Unix(0, reads.Add(1)*int64(5*time.Millisecond)) }
	if w, err := g.Acquire(context.Background(), 0, clock); err != nil || w != 0 {
		t.Fatalf("free slot: waited %v, err %v; want 0, nil", w, err)
	}
	if n := reads.Load(); n != 0 {
		t.Fatalf("a free slot read the clock %d times, want 0", n)
	}
	waited := make(chan time.Duration, 1)
	go func() {
		w, _ := g.Acquire(context.Background(), 0, clock)
		waited <- w
	}()
	waitQueued(t, g, 1)
	g.Release()
	if w := <-waited; w != 5*time.Millisecond {
		t.Fatalf("queued request waited %v, want 5ms by the clock", w)
	}
	g.Release()
}

// TestGateQueueTimeout: a waiter gives up after maxWait with
// ErrTimeout and leaves no trace in the gate.
func TestGateQueueTimeout(t *testing.T) {
	g := New(1)
	g.Acquire(context.Background(), 0, time.Now)
	if _, err := g.Acquire(context.Background(), 20*time.Millisecond, time.Now); err != ErrTimeout {
		t.Fatalf("acquire = %v, want ErrTimeout", err)
	}
	if in, q := g.Load(); in != 1 || q != 0 {
		t.Fatalf("in flight %d, queued %d; want 1, 0", in, q)
	}
	g.Release()
	if _, err := g.Acquire(context.Background(), 20*time.Millisecond, time.Now); err != nil {
		t.Fatalf("free slot with a queue timeout: %v", err)
	}
	g.Release()
}
