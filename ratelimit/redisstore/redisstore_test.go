package redisstore_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
	"github.com/pyairtable/api-gateway/ratelimit"
	"github.com/pyairtable/api-gateway/ratelimit/internal/conformance"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

// checkGoroutines records the goroutine count now and, at cleanup (which
// runs after every cleanup registered later: clients closed, servers
// stopped), fails t unless it has dropped back. go-redis may leave a dial
// prober asleep for up to a second after Close, hence the patience.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines = %d after cleanup, want <= %d\n%s",
					runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestMain(m *testing.M) {
	// The failure tests make go-redis log every refused dial; the tests
	// check those errors themselves.
	redis.SetLogger(quiet{})
	os.Exit(m.Run())
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// counter is a go-redis hook counting script runs (EVAL and EVALSHA) sent,
// to check round trips; connection handshakes are not counted.
type counter struct{ n atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func newClient(t *testing.T, url string) (redis.UniversalClient, *counter) {
	t.Helper()
	c, err := redisstore.NewClient(url)
	if err != nil {
		t.Fatalf("NewClient(%q) error = %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	n := &counter{}
	c.AddHook(n)
	return c, n
}

type kind struct {
	name string
	new  func(redis.UniversalClient, redisstore.Settings) (*redisstore.Limiter, error)
}

var kinds = []kind{
	{"SlidingWindow", redisstore.NewSlidingWindow},
	{"TokenBucket", redisstore.NewTokenBucket},
}

func mustNew(t *testing.T, k kind, c redis.UniversalClient, s redisstore.Settings) *redisstore.Limiter {
	t.Helper()
	if s.Prefix == "" {
		// Tests share servers; a prefix per test keeps their keys apart.
		s.Prefix = "test:" + t.Name() + ":"
	}
	l, err := k.new(c, s)
	if err != nil {
		t.Fatalf("New%s(%+v) error = %v", k.name, s, err)
	}
	return l
}

func TestConformance(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			conformance.Run(t, func(t *testing.T, s ratelimit.Settings) ratelimit.Limiter {
				return mustNew(t, k, client, redisstore.Settings{Settings: s})
			})
		})
	}
}

func TestSettingsValidation(t *testing.T) {
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	rs := func(limit int, window time.Duration) ratelimit.Settings {
		return ratelimit.Settings{Limit: limit, Window: window}
	}
	tests := []struct {
		name    string
		client  redis.UniversalClient
		s       redisstore.Settings
		swOK    bool
		tbOK    bool
		checkIs error
	}{
		{"minimal", client, redisstore.Settings{Settings: rs(1, 0)}, true, true, nil},
		{"nil client", nil, redisstore.Settings{Settings: rs(1, 0)}, false, false, ratelimit.ErrInvalidSettings},
		{"no limit", client, redisstore.Settings{}, false, false, ratelimit.ErrInvalidSettings},
		{"window under 1ms", client, redisstore.Settings{Settings: rs(1, time.Microsecond)}, false, false, ratelimit.ErrInvalidSettings},
		{"over 1 per µs", client, redisstore.Settings{Settings: rs(2000, time.Millisecond)}, true, false, ratelimit.ErrInvalidSettings},
		{"window beyond exact Lua", client, redisstore.Settings{Settings: rs(1<<31, 24*time.Hour)}, false, true, ratelimit.ErrInvalidSettings},
		{"bucket beyond exact Lua", client, redisstore.Settings{Settings: ratelimit.Settings{Limit: 1, Burst: 1 << 31, Window: 24 * time.Hour}}, true, false, ratelimit.ErrInvalidSettings},
		{"unknown mode", client, redisstore.Settings{Settings: rs(1, 0), FailureMode: 7}, false, false, ratelimit.ErrInvalidSettings},
		{"negative timeout", client, redisstore.Settings{Settings: rs(1, 0), CommandTimeout: -1}, false, false, ratelimit.ErrInvalidSettings},
		{"fail closed", client, redisstore.Settings{Settings: rs(1, 0), FailureMode: redisstore.FailClosed}, true, true, nil},
	}
	for _, tt := range tests {
		for _, k := range kinds {
			want := tt.swOK
			if k.name == "TokenBucket" {
				want = tt.tbOK
			}
			_, err := k.new(tt.client, tt.s)
			if (err == nil) != want || err != nil && !errors.Is(err, tt.checkIs) {
				t.Errorf("%s: New%s() error = %v, want ok = %v (else %v)", tt.name, k.name, err, want, tt.checkIs)
			}
		}
	}
}

func TestFailureModeString(t *testing.T) {
	for m, want := range map[redisstore.FailureMode]string{
		redisstore.FailOpen: "fail-open", redisstore.FailClosed: "fail-closed", 9: "FailureMode(9)",
	} {
		if got := m.String(); got != want {
			t.Errorf("FailureMode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}

func TestNewClient(t *testing.T) {
	tests := []struct {
		url         string
		ok          bool
		wantDial    time.Duration
		wantRetries int
	}{
		{"redis://127.0.0.1:6379/0", true, 500 * time.Millisecond, -1},
		{"redis://127.0.0.1:6379/0?dial_timeout=2s&max_retries=2", true, 2 * time.Second, 2},
		{"rediss://user:secret@127.0.0.1:6380/1", true, 500 * time.Millisecond, -1},
		{"http://127.0.0.1:6379", false, 0, 0},
		{"redis://127.0.0.1:6379/notanumber", false, 0, 0},
		{"redis://127.0.0.1:6379/0?bogus=1", false, 0, 0},
	}
	for _, tt := range tests {
		c, err := redisstore.NewClient(tt.url)
		if (err == nil) != tt.ok {
			t.Errorf("NewClient(%q) error = %v, want ok = %v", tt.url, err, tt.ok)
			continue
		}
		if err != nil {
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("NewClient(%q) error %q reveals the password", tt.url, err)
			}
			continue
		}
		o := c.(*redis.Client).Options()
		if o.DialTimeout != tt.wantDial || !o.ContextTimeoutEnabled || o.MaxRetries != max(tt.wantRetries, 0) {
			t.Errorf("NewClient(%q) options: DialTimeout %v, ContextTimeoutEnabled %v, MaxRetries %d; want %v, true, %d",
				tt.url, o.DialTimeout, o.ContextTimeoutEnabled, o.MaxRetries, tt.wantDial, max(tt.wantRetries, 0))
		}
		_ = c.Close()
	}
}

// TestRoundTrips checks that a decision costs one command, including after
// the server lost its script cache (one extra EVAL to reload it).
func TestRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	client, n := newClient(t, srv.URL)
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			l := mustNew(t, k, client, redisstore.Settings{Settings: ratelimit.Settings{Limit: 100}})
			ctx := context.Background()
			if err := client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatalf("SCRIPT FLUSH: %v", err)
			}
			steps := []struct {
				name string
				want int64
			}{
				{"first decision: EVALSHA, NOSCRIPT, EVAL", 2},
				{"then EVALSHA only", 1},
				{"and again", 1},
			}
			for _, st := range steps {
				before := n.n.Load()
				if _, err := l.Allow(ctx, "k", 1); err != nil {
					t.Fatalf("Allow() error = %v", err)
				}
				if got := n.n.Load() - before; got != st.want {
					t.Errorf("%s: %d commands, want %d", st.name, got, st.want)
				}
			}
		})
	}
}

// TestKeyTTL checks that keys expire once their state stops mattering.
func TestKeyTTL(t *testing.T) {
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	ctx := context.Background()
	tests := []struct {
		k      kind
		s      ratelimit.Settings
		maxTTL time.Duration
	}{
		// Two windows at most: the current one and the next, in which it
		// is the weighted previous window.
		{kinds[0], ratelimit.Settings{Limit: 10, Window: time.Minute}, 2 * time.Minute},
		// A token bucket's key lives until the bucket is full again:
		// 3 tokens of 6s each.
		{kinds[1], ratelimit.Settings{Limit: 10, Window: time.Minute, Burst: 20}, 18 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.k.name, func(t *testing.T) {
			l := mustNew(t, tt.k, client, redisstore.Settings{Settings: tt.s, Prefix: "ttl:"})
			if _, err := l.Allow(ctx, "k", 3); err != nil {
				t.Fatalf("Allow() error = %v", err)
			}
			ttl, err := client.PTTL(ctx, "ttl:k").Result()
			if err != nil {
				t.Fatalf("PTTL: %v", err)
			}
			if ttl <= 0 || ttl > tt.maxTTL {
				t.Errorf("PTTL(ttl:k) = %v, want within (0, %v]", ttl, tt.maxTTL)
			}
			if tt.k.name == "TokenBucket" && ttl < tt.maxTTL-time.Second {
				t.Errorf("PTTL(ttl:k) = %v, want about %v", ttl, tt.maxTTL)
			}
			client.Del(ctx, "ttl:k")
		})
	}
}

// offer sends requests to l at rate per second from start until end
// (catching up if the loop falls behind), and counts the allowed ones
// issued at or after from.
func offer(t *testing.T, l ratelimit.Limiter, key string, every time.Duration, start, from, end time.Time) int {
	t.Helper()
	ctx := context.Background()
	allowed, sent := 0, 0
	for {
		now := time.Now()
		if !now.Before(end) {
			return allowed
		}
		for due := int(now.Sub(start)/every) + 1; sent < due; sent++ {
			d, err := l.Allow(ctx, key, 1)
			if err != nil {
				t.Errorf("Allow() error = %v", err)
				return allowed
			}
			if d.Allowed && !time.Now().Before(from) {
				allowed++
			}
		}
		time.Sleep(every / 2)
	}
}

// TestAccuracy offers twice the limit (100 per 200ms) in real time for five
// windows after two of warm-up, as TestAccuracy in package ratelimit does
// with a fake clock.
func TestAccuracy(t *testing.T) {
	const (
		limit   = 100
		window  = 200 * time.Millisecond
		windows = 5
		every   = window / (2 * limit)
	)
	checkGoroutines(t)
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel() // mostly asleep between requests
			l := mustNew(t, k, client, redisstore.Settings{Settings: ratelimit.Settings{Limit: limit, Window: window}})
			start := time.Now()
			from := start.Add(2 * window)
			allowed := offer(t, l, "k", every, start, from, from.Add(windows*window))
			want := limit * windows
			t.Logf("allowed %d, want %d", allowed, want)
			if allowed < want*98/100 || allowed > want*102/100 {
				t.Errorf("allowed %d over %d windows at twice the limit, want %d ± 2%%", allowed, windows, want)
			}
		})
	}
}

// TestReplicasShareLimit runs two limiters, each with its own client (two
// gateway replicas), against one server. Each offers the limit; together
// they offer twice the limit, and together they must get the limit.
func TestReplicasShareLimit(t *testing.T) {
	const (
		limit   = 100
		window  = 200 * time.Millisecond
		windows = 5
		every   = window / limit // per replica
	)
	checkGoroutines(t)
	srv := redistest.Start(t)
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel() // mostly asleep between requests
			var replicas []*redisstore.Limiter
			for range 2 {
				c, _ := newClient(t, srv.URL)
				replicas = append(replicas, mustNew(t, k, c, redisstore.Settings{
					Settings: ratelimit.Settings{Limit: limit, Window: window},
					Prefix:   "shared:" + k.name + ":",
				}))
			}
			start := time.Now()
			from := start.Add(2 * window)
			end := from.Add(windows * window)
			var (
				wg      sync.WaitGroup
				allowed [2]int
			)
			for i, l := range replicas {
				wg.Go(func() { allowed[i] = offer(t, l, "client-1", every, start, from, end) })
			}
			wg.Wait()
			total, want := allowed[0]+allowed[1], limit*windows
			t.Logf("replicas allowed %d + %d = %d, want %d", allowed[0], allowed[1], total, want)
			if total < want*98/100 || total > want*102/100 {
				t.Errorf("replicas allowed %d together, want %d ± 2%%", total, want)
			}
		})
	}
}

// TestDecisionFields checks the script's Decision against what package
// ratelimit defines, within what real server time allows: values fixed by
// the algorithm exactly, the others within bounds.
func TestDecisionFields(t *testing.T) {
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	ctx := context.Background()
	allow := func(t *testing.T, l *redisstore.Limiter, cost int) ratelimit.Decision {
		t.Helper()
		d, err := l.Allow(ctx, "k", cost)
		if err != nil {
			t.Fatalf("Allow(cost %d) error = %v", cost, err)
		}
		return d
	}
	within := func(d, lo, hi time.Duration) bool { return d > lo && d <= hi }

	t.Run("SlidingWindow", func(t *testing.T) {
		const w = time.Hour
		l := mustNew(t, kinds[0], client, redisstore.Settings{Settings: ratelimit.Settings{Limit: 10, Window: w}})
		d := allow(t, l, 4)
		if !d.Allowed || d.Limit != 10 || d.Remaining != 6 || d.RetryAfter != 0 || !within(d.Reset, w, 2*w) {
			t.Errorf("Allow(4) = %+v, want allowed, Limit 10, Remaining 6, Reset in (1h, 2h]", d)
		}
		d = allow(t, l, 11)
		if d.Allowed || d.Remaining != 6 || d.RetryAfter != w {
			t.Errorf("Allow(11) = %+v, want denied, Remaining 6, RetryAfter %v (never admissible)", d, w)
		}
		// 4 + 7 > 10: wait for the next window until 4×(1−f) + 7 < 10.5,
		// f > 1/8.
		d = allow(t, l, 7)
		if d.Allowed || d.Remaining != 6 || !within(d.RetryAfter, w/8, w+w/8) || d.RetryAfter > d.Reset {
			t.Errorf("Allow(7) = %+v, want denied, Remaining 6, RetryAfter in (%v, %v] and <= Reset", d, w/8, w+w/8)
		}
	})
	t.Run("TokenBucket", func(t *testing.T) {
		// One token per second, 5 in the bucket.
		l := mustNew(t, kinds[1], client, redisstore.Settings{Settings: ratelimit.Settings{Limit: 10, Window: 10 * time.Second, Burst: 5}})
		d := allow(t, l, 1)
		if !d.Allowed || d.Limit != 5 || d.Remaining != 4 || d.RetryAfter != 0 || d.Reset != time.Second {
			t.Errorf("Allow(1) = %+v, want allowed, Limit 5, Remaining 4, Reset 1s", d)
		}
		d = allow(t, l, 6)
		if d.Allowed || d.Remaining != 4 || d.RetryAfter != 5*time.Second {
			t.Errorf("Allow(6) = %+v, want denied, Remaining 4, RetryAfter 5s (never admissible)", d)
		}
		// Four tokens left, five wanted: wait for one, less the time
		// elapsed since the first request.
		d = allow(t, l, 5)
		if d.Allowed || d.Remaining != 4 || !within(d.RetryAfter, 900*time.Millisecond, time.Second) || !within(d.Reset, 900*time.Millisecond, time.Second) {
			t.Errorf("Allow(5) = %+v, want denied, Remaining 4, RetryAfter and Reset in (0.9s, 1s]", d)
		}
	})
}

// TestSlidingWindowEdge spends the limit just before a window boundary and
// tries again just after it: the server must count the previous window.
// The server runs on this host, so the local clock finds its boundaries.
func TestSlidingWindowEdge(t *testing.T) {
	const (
		limit  = 100
		window = time.Second
	)
	srv := redistest.Start(t)
	client, _ := newClient(t, srv.URL)
	l := mustNew(t, kinds[0], client, redisstore.Settings{Settings: ratelimit.Settings{Limit: limit, Window: window}})
	burst := func(at time.Time) (allowed int) {
		time.Sleep(time.Until(at))
		for range limit {
			d, err := l.Allow(context.Background(), "k", 1)
			if err != nil {
				t.Fatalf("Allow() error = %v", err)
			}
			if d.Allowed {
				allowed++
			}
		}
		return allowed
	}
	now := time.Now()
	edge := now.Truncate(window).Add(window)
	if edge.Sub(now) < 300*time.Millisecond {
		edge = edge.Add(window)
	}
	if got := burst(edge.Add(-150 * time.Millisecond)); got != limit {
		t.Fatalf("allowed %d of %d before the edge, want all", got, limit)
	}
	// 50ms into the next window, the previous one still weighs ~95%.
	if got := burst(edge.Add(50 * time.Millisecond)); got > limit/10 {
		t.Errorf("allowed %d of %d just after the edge, want at most %d", got, limit, limit/10)
	}
}
