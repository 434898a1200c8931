package redisstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
	"github.com/pyairtable/api-gateway/ratelimit"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

const (
	testTimeout  = 50 * time.Millisecond
	testCooldown = 100 * time.Millisecond
)

// outage is the result of hammering a limiter while Redis is down.
type outage struct {
	calls, errs, allowed int
	slow                 int           // calls that took >= 5ms
	maxFast              time.Duration // slowest of the others
	total                time.Duration
}

// hammer calls Allow back to back for d and checks every call failed the
// way mode says.
func hammer(t *testing.T, l *redisstore.Limiter, mode redisstore.FailureMode, d time.Duration) outage {
	t.Helper()
	var o outage
	ctx := context.Background()
	for end := time.Now().Add(d); time.Now().Before(end); {
		start := time.Now()
		dec, err := l.Allow(ctx, "victim", 1)
		took := time.Since(start)
		o.calls++
		o.total += took
		if took >= 5*time.Millisecond {
			o.slow++
		} else {
			o.maxFast = max(o.maxFast, took)
		}
		if err != nil {
			o.errs++
			if !errors.Is(err, redisstore.ErrUnavailable) {
				t.Errorf("Allow() error = %v, want ErrUnavailable", err)
			}
		}
		if dec.Allowed {
			o.allowed++
		}
		switch {
		case mode == redisstore.FailOpen && (!dec.Allowed || dec.Remaining != dec.Limit):
			t.Errorf("fail-open Allow() = %+v, want allowed with full Remaining", dec)
		case mode == redisstore.FailClosed && (dec.Allowed || dec.RetryAfter != testCooldown):
			t.Errorf("fail-closed Allow() = %+v, want denied with RetryAfter %v", dec, testCooldown)
		}
		time.Sleep(500 * time.Microsecond)
	}
	return o
}

// recover waits until l decides through Redis again, bounded by a few
// cooldowns.
func recovered(t *testing.T, l *redisstore.Limiter, key string) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 10*testCooldown {
		if _, err := l.Allow(context.Background(), key, 1); err == nil {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("Allow() still failing %v after Redis came back", time.Since(start))
	return 0
}

// TestRedisKilled kills the server mid-test: fail-open keeps allowing,
// fail-closed denies, neither adds more than a few ms per request, and
// limiting resumes once the server is back.
func TestRedisKilled(t *testing.T) {
	checkGoroutines(t)
	for _, mode := range []redisstore.FailureMode{redisstore.FailOpen, redisstore.FailClosed} {
		t.Run(mode.String(), func(t *testing.T) {
			srv := redistest.Start(t)
			client, n := newClient(t, srv.URL)
			var onError atomic.Uint64
			l := mustNew(t, kinds[0], client, redisstore.Settings{
				Settings:        ratelimit.Settings{Limit: 3, Window: time.Hour},
				FailureMode:     mode,
				CommandTimeout:  testTimeout,
				CircuitCooldown: testCooldown,
				OnError:         func(error) { onError.Add(1) },
			})
			ctx := context.Background()
			if _, err := l.Allow(ctx, "warm", 1); err != nil {
				t.Fatalf("Allow() before the outage error = %v", err)
			}

			srv.Stop()
			before := n.n.Load()
			const d = 4 * testCooldown
			o := hammer(t, l, mode, d)
			sent := n.n.Load() - before
			t.Logf("%s: %d calls, %d sent to Redis, %d slow, slowest fast %v, mean %v",
				mode, o.calls, sent, o.slow, o.maxFast, o.total/time.Duration(o.calls))
			if maxSent := int64(d/testCooldown) + 1; sent < 2 || sent > maxSent {
				t.Errorf("%d commands sent to a dead Redis in %v, want 2 to %d (one per cooldown)", sent, d, maxSent)
			}
			if o.errs != o.calls {
				t.Errorf("%d of %d calls returned an error, want all", o.errs, o.calls)
			}
			if got := l.Failures(); got != uint64(o.calls) || onError.Load() != got {
				t.Errorf("Failures() = %d, OnError calls = %d, want %d each", got, onError.Load(), o.calls)
			}
			// A refused connection fails fast, and the short circuit
			// skips Redis entirely between probes.
			if mean := o.total / time.Duration(o.calls); mean >= 5*time.Millisecond || o.slow > 5 {
				t.Errorf("added latency: mean %v, %d calls >= 5ms; want mean < 5ms and at most one slow probe per cooldown", mean, o.slow)
			}

			srv.Restart()
			t.Logf("recovered %v after restart", recovered(t, l, "probe"))
			// The restarted server is empty: a new allowance, enforced.
			for i := range 4 {
				d, err := l.Allow(ctx, "after", 1)
				if err != nil || d.Allowed != (i < 3) {
					t.Errorf("after restart, request %d: Allow() = %+v, %v; want allowed = %v, no error", i+1, d, err, i < 3)
				}
			}
		})
	}
}

// TestRedisHung freezes the server (SIGSTOP): connections hang instead of
// failing, the worst case for a client. Without the short circuit every
// request would wait CommandTimeout; with it only one probe per cooldown
// does.
func TestRedisHung(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	client, n := newClient(t, srv.URL)
	l := mustNew(t, kinds[1], client, redisstore.Settings{
		Settings:        ratelimit.Settings{Limit: 3, Window: time.Hour},
		CommandTimeout:  testTimeout,
		CircuitCooldown: testCooldown,
	})
	if _, err := l.Allow(context.Background(), "warm", 1); err != nil {
		t.Fatalf("Allow() before the outage error = %v", err)
	}

	srv.Pause()
	before := n.n.Load()
	const d = 5 * testCooldown
	o := hammer(t, l, redisstore.FailOpen, d)
	probes := n.n.Load() - before
	t.Logf("%d calls, %d slow, %d sent to Redis, slowest fast %v", o.calls, o.slow, probes, o.maxFast)
	// The first call and one probe per cooldown after it reach Redis.
	if maxProbes := int64(d/testCooldown) + 1; probes < 2 || probes > maxProbes {
		t.Errorf("%d commands sent to a hung Redis in %v, want 2 to %d", probes, d, maxProbes)
	}
	if int64(o.slow) > probes || o.maxFast >= 5*time.Millisecond {
		t.Errorf("%d slow calls (probes %d), slowest other %v; want only probes slow, others < 5ms", o.slow, probes, o.maxFast)
	}
	if o.calls < 10*int(probes) {
		t.Errorf("only %d calls in %v, want most of them answered at once", o.calls, d)
	}

	srv.Resume()
	t.Logf("recovered %v after resume", recovered(t, l, "probe"))
}

// TestCircuit walks the short circuit through its states with a fake clock
// (for the cooldown) against a frozen real server.
func TestCircuit(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	client, n := newClient(t, srv.URL)
	var (
		mu  sync.Mutex
		now = time.Unix(1_700_000_000, 0)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l := mustNew(t, kinds[0], client, redisstore.Settings{
		Settings:        ratelimit.Settings{Limit: 100, Window: time.Hour, Now: clock},
		FailureMode:     redisstore.FailClosed,
		CommandTimeout:  testTimeout,
		CircuitCooldown: time.Second,
	})
	ctx := context.Background()
	if _, err := l.Allow(ctx, "k", 1); err != nil {
		t.Fatalf("Allow() error = %v", err)
	}
	srv.Pause()

	// call makes concurrent Allow calls and returns how many commands
	// reached Redis and how many calls failed short-circuited.
	call := func(concurrent int) (sent int64, short int) {
		before := n.n.Load()
		var (
			wg sync.WaitGroup
			sc atomic.Int64
		)
		for range concurrent {
			wg.Go(func() {
				if _, err := l.Allow(ctx, "k", 1); errors.Is(err, redisstore.ErrShortCircuit) {
					sc.Add(1)
				}
			})
		}
		wg.Wait()
		return n.n.Load() - before, int(sc.Load())
	}
	steps := []struct {
		name       string
		advance    time.Duration
		resume     bool
		concurrent int
		wantSent   int64
		wantShort  int
	}{
		{"first failure reaches Redis and trips", 0, false, 1, 1, 0},
		{"within the cooldown nothing is sent", 999 * time.Millisecond, false, 5, 0, 5},
		{"after it, one caller probes, the rest wait", time.Millisecond, false, 5, 1, 4},
		{"the failed probe starts a new cooldown", 500 * time.Millisecond, false, 3, 0, 3},
		{"Redis is back: the next probe closes", 500 * time.Millisecond, true, 1, 1, 0},
		{"closed: every call reaches Redis", 0, false, 4, 4, 0},
	}
	for _, st := range steps {
		advance(st.advance)
		if st.resume {
			srv.Resume()
		}
		sent, short := call(st.concurrent)
		if sent != st.wantSent || short != st.wantShort {
			t.Errorf("%s: %d commands sent, %d short-circuited; want %d, %d", st.name, sent, short, st.wantSent, st.wantShort)
		}
	}
}

// TestErrorReplyDoesNotTrip checks that an error answered by a healthy
// server (a key of the wrong type) fails that decision only.
func TestErrorReplyDoesNotTrip(t *testing.T) {
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	ctx := context.Background()
	l := mustNew(t, kinds[0], client, redisstore.Settings{
		Settings:    ratelimit.Settings{Limit: 5},
		Prefix:      "wrongtype:",
		FailureMode: redisstore.FailClosed,
	})
	if err := client.LPush(ctx, "wrongtype:list", "x").Err(); err != nil {
		t.Fatalf("LPUSH: %v", err)
	}
	d, err := l.Allow(ctx, "list", 1)
	if !errors.Is(err, redisstore.ErrUnavailable) || !strings.Contains(err.Error(), "WRONGTYPE") || d.Allowed {
		t.Errorf("Allow(list) = %+v, %v; want denied with a WRONGTYPE error wrapping ErrUnavailable", d, err)
	}
	if d, err := l.Allow(ctx, "fine", 1); err != nil || !d.Allowed {
		t.Errorf("Allow(fine) after an error reply = %+v, %v; want allowed without error", d, err)
	}
}

// TestCallerGaveUp checks that a caller's cancelled context is reported
// as such, and neither counts as a Redis failure nor trips the circuit.
func TestCallerGaveUp(t *testing.T) {
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	l := mustNew(t, kinds[1], client, redisstore.Settings{Settings: ratelimit.Settings{Limit: 5}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d, err := l.Allow(ctx, "k", 1); !errors.Is(err, context.Canceled) || !d.Allowed {
		t.Errorf("Allow(cancelled) = %+v, %v; want the fail-open decision and context.Canceled", d, err)
	}
	if got := l.Failures(); got != 0 {
		t.Errorf("Failures() = %d after a cancelled call, want 0", got)
	}
	if _, err := l.Allow(context.Background(), "k", 1); err != nil {
		t.Errorf("Allow() after a cancelled call error = %v, want nil (not short-circuited)", err)
	}
}
