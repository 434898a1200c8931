package balancer

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is an injected clock that only moves when told to.
type testClock struct{ ns atomic.Int64 }

// testClockStart is where every testClock starts.
var testClockStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestClock() *testClock {
	c := &testClock{}
	c.Set(testClockStart)
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *testClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }

// makePool returns instances named 10.0.0.<i+1>:80 with the given weights
// (all 1 when none are given).
func makePool(t testing.TB, n int, weights ...int) []*Instance {
	t.Helper()
	pool := make([]*Instance, n)
	for i := range pool {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		pool[i] = MustInstance(fmt.Sprintf("http://10.0.0.%d:80", i+1), w)
	}
	return pool
}

// indexOf returns in's index in pool, or -1.
func indexOf(pool []*Instance, in *Instance) int {
	for i, p := range pool {
		if p == in {
			return i
		}
	}
	return -1
}

// checkNoGoroutineLeak fails the test if, at cleanup, more goroutines run
// than at the call, after a short grace period for exiting ones.
func checkNoGoroutineLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var now int
		for range 100 {
			if now = runtime.NumGoroutine(); now <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d after, %d before\n%s", now, before, buf[:runtime.Stack(buf, true)])
	})
}
