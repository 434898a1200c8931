// Package conformance is the test suite every ratelimit.Limiter must pass,
// whatever its algorithm or store. It checks only what holds in real time
// on any implementation (no injected clock), so the in-memory limiters and
// the Redis ones run the very same cases.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/ratelimit"
)

// NewFunc returns a fresh limiter for s, with no keys in use. It may call
// t.Skip or t.Fatal.
type NewFunc func(t *testing.T, s ratelimit.Settings) ratelimit.Limiter

// window is long enough that no allowance is restored while a case runs,
// so counts are exact: a sliding window would have to cross an hour
// boundary (and even then the previous window still counts in full at its
// start), a token bucket refills one token per window/limit (12 minutes).
const window = time.Hour

// Run runs the suite against the limiters newLimiter returns.
func Run(t *testing.T, newLimiter NewFunc) {
	t.Run("FreshKey", func(t *testing.T) { testFreshKey(t, newLimiter) })
	t.Run("Cost", func(t *testing.T) { testCost(t, newLimiter) })
	t.Run("KeysIndependent", func(t *testing.T) { testKeysIndependent(t, newLimiter) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newLimiter) })
}

func allow(t *testing.T, l ratelimit.Limiter, key string, cost int) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(context.Background(), key, cost)
	if err != nil {
		t.Fatalf("Allow(%q, %d) error = %v", key, cost, err)
	}
	if (d.Err() == nil) != d.Allowed || d.Err() != nil && !errors.Is(d.Err(), ratelimit.ErrLimited) {
		t.Errorf("Allow(%q, %d).Err() = %v with Allowed = %v", key, cost, d.Err(), d.Allowed)
	}
	if d.Allowed && d.RetryAfter != 0 {
		t.Errorf("Allow(%q, %d) allowed with RetryAfter = %v, want 0", key, cost, d.RetryAfter)
	}
	if !d.Allowed && d.RetryAfter <= 0 {
		t.Errorf("Allow(%q, %d) denied with RetryAfter = %v, want > 0", key, cost, d.RetryAfter)
	}
	if !d.Allowed && max(cost, 1) <= d.Limit && d.RetryAfter > d.Reset {
		t.Errorf("Allow(%q, %d) = %+v: RetryAfter beyond Reset, when the whole allowance is back", key, cost, d)
	}
	if d.Remaining < 0 || d.Remaining > d.Limit {
		t.Errorf("Allow(%q, %d).Remaining = %d, want within [0, %d]", key, cost, d.Remaining, d.Limit)
	}
	if d.Reset < 0 || d.Reset > 2*window {
		t.Errorf("Allow(%q, %d).Reset = %v, want within [0, %v]", key, cost, d.Reset, 2*window)
	}
	return d
}

func testFreshKey(t *testing.T, newLimiter NewFunc) {
	const limit = 5
	l := newLimiter(t, ratelimit.Settings{Limit: limit, Window: window})
	for i := range limit {
		d := allow(t, l, "k", 1)
		if !d.Allowed || d.Limit != limit || d.Remaining != limit-1-i || d.Reset <= 0 {
			t.Errorf("request %d: Allow() = %+v, want allowed, Limit %d, Remaining %d, Reset > 0", i+1, d, limit, limit-1-i)
		}
	}
	for i := range 3 {
		d := allow(t, l, "k", 1)
		if d.Allowed || d.Limit != limit || d.Remaining != 0 || d.Reset <= 0 {
			t.Errorf("request %d: Allow() = %+v, want denied, Limit %d, Remaining 0, Reset > 0", limit+1+i, d, limit)
		}
		// Waiting out Reset brings the whole allowance back, so no wait is
		// longer. A sliding window's can exceed one window: denied early
		// in a window, a client waits for the next one and then for the
		// full previous window's weight to shrink.
		if d.RetryAfter > d.Reset || d.RetryAfter > 2*window {
			t.Errorf("request %d: RetryAfter = %v, want <= Reset (%v) and <= %v", limit+1+i, d.RetryAfter, d.Reset, 2*window)
		}
	}
}

func testCost(t *testing.T, newLimiter NewFunc) {
	const limit = 10
	l := newLimiter(t, ratelimit.Settings{Limit: limit, Window: window})
	steps := []struct {
		cost          int
		wantAllowed   bool
		wantRemaining int
	}{
		{cost: limit + 1, wantAllowed: false, wantRemaining: limit}, // never admissible, takes nothing
		{cost: 0, wantAllowed: true, wantRemaining: limit - 1},      // 0 means 1
		{cost: -3, wantAllowed: true, wantRemaining: limit - 2},     // negative means 1
		{cost: 5, wantAllowed: true, wantRemaining: limit - 7},
		{cost: 4, wantAllowed: false, wantRemaining: limit - 7}, // denial takes nothing
		{cost: 3, wantAllowed: true, wantRemaining: 0},
		{cost: 1, wantAllowed: false, wantRemaining: 0},
	}
	for i, st := range steps {
		d := allow(t, l, "k", st.cost)
		if d.Allowed != st.wantAllowed || d.Remaining != st.wantRemaining {
			t.Errorf("step %d: Allow(cost %d) = %+v, want Allowed %v, Remaining %d",
				i, st.cost, d, st.wantAllowed, st.wantRemaining)
		}
	}
}

func testKeysIndependent(t *testing.T, newLimiter NewFunc) {
	const limit = 3
	l := newLimiter(t, ratelimit.Settings{Limit: limit, Window: window})
	for range limit {
		allow(t, l, "a", 1)
	}
	if d := allow(t, l, "a", 1); d.Allowed {
		t.Fatalf("Allow(a) after %d = %+v, want denied", limit, d)
	}
	for _, k := range []string{"b", "", "a ", "A"} {
		if d := allow(t, l, k, 1); !d.Allowed || d.Remaining != limit-1 {
			t.Errorf("Allow(%q) = %+v, want allowed with Remaining %d: keys must not share state", k, d, limit-1)
		}
	}
}

func testConcurrent(t *testing.T, newLimiter NewFunc) {
	const (
		limit      = 40
		goroutines = 8
		each       = 10
	)
	l := newLimiter(t, ratelimit.Settings{Limit: limit, Window: window})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
		errs    []error
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				// Every goroutine hits the shared key and one of its own.
				for _, k := range []string{"shared", fmt.Sprint("own", g)} {
					d, err := l.Allow(context.Background(), k, 1)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					}
					if d.Allowed && k == "shared" {
						allowed++
					}
					if !d.Allowed && k != "shared" {
						errs = append(errs, fmt.Errorf("Allow(%q) request %d denied, want allowed", k, i+1))
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if allowed != limit {
		t.Errorf("allowed %d of %d concurrent requests on one key, want exactly %d", allowed, goroutines*each, limit)
	}
}
