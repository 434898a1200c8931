package ratelimit_test

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/ratelimit"
	"github.com/pyairtable/api-gateway/ratelimit/internal/conformance"
)

// t0 is aligned to every window used in these tests, so window boundaries
// fall on round offsets from it.
var t0 = time.Unix(1_700_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

// memLimiter is what both in-memory limiters offer.
type memLimiter interface {
	ratelimit.Limiter
	AllowAt(now time.Time, key string, cost int) ratelimit.Decision
	Len() int
}

var constructors = []struct {
	name string
	new  func(ratelimit.Settings) (memLimiter, error)
}{
	{"SlidingWindow", func(s ratelimit.Settings) (memLimiter, error) { return ratelimit.NewSlidingWindow(s) }},
	{"TokenBucket", func(s ratelimit.Settings) (memLimiter, error) { return ratelimit.NewTokenBucket(s) }},
}

func mustNew(t testing.TB, name string, s ratelimit.Settings) memLimiter {
	t.Helper()
	for _, c := range constructors {
		if c.name == name {
			l, err := c.new(s)
			if err != nil {
				t.Fatalf("New%s(%+v) error = %v", name, s, err)
			}
			return l
		}
	}
	t.Fatalf("no constructor %q", name)
	return nil
}

func TestConformance(t *testing.T) {
	for _, c := range constructors {
		t.Run(c.name, func(t *testing.T) {
			conformance.Run(t, func(t *testing.T, s ratelimit.Settings) ratelimit.Limiter {
				return mustNew(t, c.name, s)
			})
		})
	}
}

func TestSettingsValidation(t *testing.T) {
	tests := []struct {
		name string
		s    ratelimit.Settings
		ok   bool
	}{
		{"minimal", ratelimit.Settings{Limit: 1}, true},
		{"zero limit", ratelimit.Settings{}, false},
		{"negative limit", ratelimit.Settings{Limit: -1}, false},
		{"limit above 2^32-1", ratelimit.Settings{Limit: 1 << 32}, false},
		{"negative window", ratelimit.Settings{Limit: 1, Window: -time.Second}, false},
		{"negative burst", ratelimit.Settings{Limit: 1, Burst: -1}, false},
		{"negative max keys", ratelimit.Settings{Limit: 1, MaxKeys: -1}, false},
		{"negative idle TTL", ratelimit.Settings{Limit: 1, IdleTTL: -time.Second}, false},
		{"one key", ratelimit.Settings{Limit: 1, MaxKeys: 1}, true},
	}
	for _, tt := range tests {
		for _, c := range constructors {
			_, err := c.new(tt.s)
			if (err == nil) != tt.ok || err != nil && !errors.Is(err, ratelimit.ErrInvalidSettings) {
				t.Errorf("%s: New%s(%+v) error = %v, want ok = %v (or ErrInvalidSettings)", tt.name, c.name, tt.s, err, tt.ok)
			}
		}
	}
	// Burst × interval must fit in time arithmetic.
	if _, err := ratelimit.NewTokenBucket(ratelimit.Settings{Limit: 1, Burst: 1 << 31, Window: 1 << 40}); !errors.Is(err, ratelimit.ErrInvalidSettings) {
		t.Errorf("NewTokenBucket(overflowing burst) error = %v, want ErrInvalidSettings", err)
	}
}

func TestWithDefaults(t *testing.T) {
	in := ratelimit.Settings{Limit: 7}
	got, err := in.WithDefaults()
	if err != nil {
		t.Fatalf("WithDefaults() error = %v", err)
	}
	if got.Window != time.Second || got.Burst != 7 || got.MaxKeys != 100_000 || got.IdleTTL != 10*time.Minute || got.Now == nil {
		t.Errorf("WithDefaults() = %+v, want Window 1s, Burst 7, MaxKeys 100000, IdleTTL 10m, Now set", got)
	}
	if in.Window != 0 || in.Burst != 0 || in.Now != nil {
		t.Errorf("WithDefaults() mutated its receiver: %+v", in)
	}
	custom := ratelimit.Settings{Limit: 7, Window: time.Minute, Burst: 3, MaxKeys: 5, IdleTTL: time.Hour}
	if got, _ := custom.WithDefaults(); got.Window != custom.Window || got.Burst != 3 || got.MaxKeys != 5 || got.IdleTTL != time.Hour {
		t.Errorf("WithDefaults() = %+v, want explicit fields kept", got)
	}
}

type step struct {
	at   time.Duration
	cost int
	want ratelimit.Decision
}

func runSteps(t *testing.T, l memLimiter, steps []step) {
	t.Helper()
	for i, st := range steps {
		if got := l.AllowAt(at(st.at), "k", st.cost); got != st.want {
			t.Errorf("step %d: AllowAt(t0+%v, cost %d) = %+v, want %+v", i+1, st.at, st.cost, got, st.want)
		}
	}
}

func TestSlidingWindowDecisions(t *testing.T) {
	const ms = time.Millisecond
	l := mustNew(t, "SlidingWindow", ratelimit.Settings{Limit: 10, Window: time.Second})
	d := func(allowed bool, remaining int, reset, retry time.Duration) ratelimit.Decision {
		return ratelimit.Decision{Allowed: allowed, Limit: 10, Remaining: remaining, Reset: reset, RetryAfter: retry}
	}
	runSteps(t, l, []step{
		{0, 4, d(true, 6, 2000*ms, 0)},
		{500 * ms, 6, d(true, 0, 1500*ms, 0)},
		// Full window: wait into the next one until the old window's
		// share leaves room: 10×(1−f) + 1 < 10.5 once f > 0.05.
		{900 * ms, 1, d(false, 0, 1100*ms, 150*ms+1)},
		{1050 * ms, 1, d(false, 0, 950*ms, 1)},
		{1050*ms + 1, 1, d(true, 0, 1950*ms-1, 0)},
		// 10×0.35 + 1 + 3 = 7.5; the share 3.5 rounds to 4.
		{1650 * ms, 3, d(true, 2, 1350*ms, 0)},
		// 3.5 + 4 + 4 = 11.5 until 10×(1−f) + 8 < 10.5, f > 0.75.
		{1650 * ms, 4, d(false, 2, 1350*ms, 100*ms+1)},
		{1650 * ms, 11, d(false, 2, 1350*ms, time.Second)}, // above Limit: never
		{1650 * ms, 0, d(true, 1, 1350*ms, 0)},             // 0 counts as 1
		// Two windows later everything has slid out.
		{3500 * ms, 1, d(true, 9, 1500*ms, 0)},
		// The wall clock steps back a window: judged at the start of the
		// newest window seen, where the previous window (empty) counts fully.
		{2900 * ms, 1, d(true, 8, 2000*ms, 0)},
	})
}

// Filled early in a window, a sliding window makes a client wait longer
// than one window: to the next window, then until the full previous
// window's weight shrinks (10×(1−f) + 1 < 10.5 once f > 0.05). The wait
// is still within Reset.
func TestSlidingWindowRetryAfterBeyondWindow(t *testing.T) {
	const ms = time.Millisecond
	l := mustNew(t, "SlidingWindow", ratelimit.Settings{Limit: 10, Window: time.Second})
	runSteps(t, l, []step{
		{0, 10, ratelimit.Decision{Allowed: true, Limit: 10, Reset: 2000 * ms}},
		{10 * ms, 1, ratelimit.Decision{Limit: 10, Reset: 1990 * ms, RetryAfter: 1040*ms + 1}},
		{1050*ms + 1, 1, ratelimit.Decision{Allowed: true, Limit: 10, Reset: 1950*ms - 1}},
	})
}

func TestTokenBucketDecisions(t *testing.T) {
	const ms = time.Millisecond
	// 10 per second is one token per 100ms; the bucket holds 5 (500ms).
	l := mustNew(t, "TokenBucket", ratelimit.Settings{Limit: 10, Window: time.Second, Burst: 5})
	d := func(allowed bool, remaining int, reset, retry time.Duration) ratelimit.Decision {
		return ratelimit.Decision{Allowed: allowed, Limit: 5, Remaining: remaining, Reset: reset, RetryAfter: retry}
	}
	runSteps(t, l, []step{
		{0, 1, d(true, 4, 100*ms, 0)},
		{0, 4, d(true, 0, 500*ms, 0)},
		{0, 1, d(false, 0, 500*ms, 100*ms)},
		{99 * ms, 1, d(false, 0, 401*ms, 1*ms)},
		{100 * ms, 1, d(true, 0, 500*ms, 0)},
		{350 * ms, 2, d(true, 0, 450*ms, 0)},
		{1000 * ms, 3, d(true, 2, 300*ms, 0)},
		{1000 * ms, 6, d(false, 2, 300*ms, 500*ms)}, // above Burst: never
		{1000 * ms, -1, d(true, 1, 400*ms, 0)},      // negative counts as 1
		{2000 * ms, 5, d(true, 0, 500*ms, 0)},
		// The wall clock steps back: nothing is refilled for the lost time.
		{1500 * ms, 1, d(false, 0, 1000*ms, 600*ms)},
	})
}

// TestAccuracy offers twice the limit at a steady rate for five windows and
// expects limit × 5 allowed within 2%. Two windows of warm-up come first:
// a fresh key may spend a whole allowance at once, and the sliding window's
// weighted previous count takes one more window to settle to the steady
// rate. phase starts the measurement off the window boundaries.
func TestAccuracy(t *testing.T) {
	const (
		limit   = 100
		window  = time.Second
		windows = 5
		offered = 2 * limit // per window
		every   = window / offered
	)
	for _, c := range constructors {
		for _, phase := range []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, 900 * time.Millisecond} {
			t.Run(c.name+"/phase="+phase.String(), func(t *testing.T) {
				l := mustNew(t, c.name, ratelimit.Settings{Limit: limit, Window: window})
				const warmup = 2 * window
				for tt := phase; tt < phase+warmup; tt += every {
					l.AllowAt(at(tt), "k", 1)
				}
				allowed := 0
				for tt := phase + warmup; tt < phase+warmup+windows*window; tt += every {
					if l.AllowAt(at(tt), "k", 1).Allowed {
						allowed++
					}
				}
				want := limit * windows
				t.Logf("allowed %d of %d", allowed, offered*windows)
				if lo, hi := want*98/100, want*102/100; allowed < lo || allowed > hi {
					t.Errorf("allowed %d of %d offered over %d windows, want %d ± 2%%", allowed, offered*windows, windows, want)
				}
			})
		}
	}
}

// TestSlidingWindowEdge spends the whole limit at the very end of a window
// and tries again right after the boundary: a fixed window would allow a
// second full batch, the sliding window must deny almost all of it.
func TestSlidingWindowEdge(t *testing.T) {
	const limit = 100
	l := mustNew(t, "SlidingWindow", ratelimit.Settings{Limit: limit, Window: time.Second})
	end := at(time.Second - 10*time.Millisecond)
	for i := range limit {
		if !l.AllowAt(end, "k", 1).Allowed {
			t.Fatalf("request %d at the end of the window denied, want allowed", i+1)
		}
	}
	next := at(time.Second + 10*time.Millisecond)
	allowed := 0
	for range limit {
		if l.AllowAt(next, "k", 1).Allowed {
			allowed++
		}
	}
	if allowed > limit*2/100 {
		t.Errorf("allowed %d of %d right after the window edge, want at most %d", allowed, limit, limit*2/100)
	}
}

func TestTokenBucketBurst(t *testing.T) {
	const ms = time.Millisecond
	// 10 per second (one per 100ms), bursts of 20.
	l := mustNew(t, "TokenBucket", ratelimit.Settings{Limit: 10, Window: time.Second, Burst: 20})
	count := func(from, to, every time.Duration) int {
		n := 0
		for tt := from; tt < to; tt += every {
			if l.AllowAt(at(tt), "k", 1).Allowed {
				n++
			}
		}
		return n
	}
	tests := []struct {
		name     string
		from, to time.Duration
		every    time.Duration
		want     int
	}{
		{"burst at one instant", 0, 30, 1, 20}, // 30 requests within 30ns
		{"steady at 10x the rate", 10 * ms, 1010 * ms, 10 * ms, 10},
		{"after a 2s pause, a full burst", 3010 * ms, 3010*ms + 30, 1, 20},
		{"then the rate again", 3020 * ms, 5020 * ms, 5 * ms, 20},
	}
	for _, tt := range tests {
		if got := count(tt.from, tt.to, tt.every); got != tt.want {
			t.Errorf("%s: allowed %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestMemoryBound pushes a million distinct keys (a flood of random source
// addresses) through each limiter and checks the table never exceeds
// MaxKeys, while a key in use survives the flood.
func TestMemoryBound(t *testing.T) {
	const (
		maxKeys = 10_000
		flood   = 1_000_000
	)
	for _, c := range constructors {
		t.Run(c.name, func(t *testing.T) {
			l := mustNew(t, c.name, ratelimit.Settings{Limit: 5, Window: time.Minute, MaxKeys: maxKeys})
			for range 5 {
				l.AllowAt(t0, "hot", 1)
			}
			buf := make([]byte, 0, 16)
			for i := range flood {
				buf = strconv.AppendInt(append(buf[:0], "10."...), int64(i), 10)
				l.AllowAt(t0, string(buf), 1)
				if i%100_000 == 0 {
					if n := l.Len(); n > maxKeys {
						t.Fatalf("after %d keys Len() = %d, want <= %d", i+1, n, maxKeys)
					}
				}
			}
			if n := l.Len(); n > maxKeys || n < maxKeys*95/100 {
				t.Errorf("Len() = %d, want within [%d, %d]", n, maxKeys*95/100, maxKeys)
			}
			// The hot key used its whole allowance, so eviction (oldest
			// first, then least used) should have spared it.
			if d := l.AllowAt(t0, "hot", 1); d.Allowed {
				t.Errorf("AllowAt(hot) after the flood = %+v, want still denied", d)
			}
		})
	}
}

// TestBytesPerKey measures the heap a tracked key costs.
func TestBytesPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~10 MB")
	}
	const n = 200_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	for _, c := range constructors {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			l := mustNew(t, c.name, ratelimit.Settings{Limit: 5, MaxKeys: 2 * n})
			for _, k := range keys {
				l.AllowAt(t0, k, 1)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			if got := l.Len(); got != n {
				t.Fatalf("Len() = %d, want %d", got, n)
			}
			// Worst case, a hash table just grown to 7/16 full: 24-byte
			// (sliding window) or 16-byte (token bucket) slots plus a
			// control byte each.
			limit := map[string]float64{"SlidingWindow": 60, "TokenBucket": 40}[c.name]
			per := float64(after.HeapAlloc-before.HeapAlloc) / n
			t.Logf("%s: %.1f heap bytes per key", c.name, per)
			if per > limit {
				t.Errorf("%.1f heap bytes per key, want <= %.0f", per, limit)
			}
			runtime.KeepAlive(l)
		})
	}
}

// TestIdleExpiry drives the clock past IdleTTL and checks that idle keys
// are swept by later traffic, while a key whose state still matters is
// kept however long it has been idle.
func TestIdleExpiry(t *testing.T) {
	const (
		idle  = time.Minute
		batch = 2000 // enough to touch all 64 shards at each step
	)
	for _, c := range constructors {
		t.Run(c.name, func(t *testing.T) {
			l := mustNew(t, c.name, ratelimit.Settings{Limit: 5, Window: time.Second, IdleTTL: idle})
			touch := func(d time.Duration, prefix string) {
				for i := range batch {
					l.AllowAt(at(d), prefix+strconv.Itoa(i), 1)
				}
			}
			// Sliding-window keys stop mattering 2 windows after their
			// window began, token-bucket keys once the bucket refilled
			// (1 token = 200ms): both well within 2s of t0.
			touch(0, "a")
			steps := []struct {
				at      time.Duration
				prefix  string
				wantLen int
			}{
				// Shards were swept at t0 and are next due at t0+30s.
				{30 * time.Second, "b", 2 * batch},
				// Due at t0+60s: "a" has been idle under a minute, kept.
				{60 * time.Second, "c", 3 * batch},
				// Due at t0+90s: "a" has been idle over a minute, "b" not.
				{90 * time.Second, "d", 3 * batch},
				{91 * time.Second, "e", 4 * batch}, // not due: nothing swept
				// Due at t0+120s: "b" goes, "c" (idle under a minute) stays.
				{120 * time.Second, "f", 4 * batch},
			}
			for _, st := range steps {
				touch(st.at, st.prefix)
				if got := l.Len(); got != st.wantLen {
					t.Errorf("after touching %q at t0+%v: Len() = %d, want %d", st.prefix, st.at, got, st.wantLen)
				}
			}
		})
	}
}

// TestIdleKeepsLiveState checks that sweeping never forgets a key whose
// allowance is still being restored: 1 request per hour, idle for far
// longer than IdleTTL, must still be denied.
func TestIdleKeepsLiveState(t *testing.T) {
	for _, c := range constructors {
		t.Run(c.name, func(t *testing.T) {
			l := mustNew(t, c.name, ratelimit.Settings{Limit: 1, Window: time.Hour, IdleTTL: time.Second})
			if d := l.AllowAt(t0, "k", 1); !d.Allowed {
				t.Fatalf("first AllowAt = %+v, want allowed", d)
			}
			for i := range 10 { // sweeps run at each of these
				l.AllowAt(at(time.Duration(i+1)*5*time.Minute), "other"+strconv.Itoa(i), 1)
			}
			if d := l.AllowAt(at(50*time.Minute), "k", 1); d.Allowed {
				t.Errorf("AllowAt(k) 50m later = %+v, want denied: its hour is not over", d)
			}
		})
	}
}

// TestConcurrentExact hammers a few keys from many goroutines at one
// instant; each key must allow exactly its limit.
func TestConcurrentExact(t *testing.T) {
	const (
		limit      = 1000
		keys       = 4
		goroutines = 8
		each       = 1000
	)
	for _, c := range constructors {
		t.Run(c.name, func(t *testing.T) {
			l := mustNew(t, c.name, ratelimit.Settings{Limit: limit, Window: time.Minute})
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				allowed [keys]int
			)
			for g := range goroutines {
				wg.Go(func() {
					var mine [keys]int
					for i := range each {
						k := (g + i) % keys
						if l.AllowAt(t0, "key"+strconv.Itoa(k), 1).Allowed {
							mine[k]++
						}
					}
					mu.Lock()
					for k := range mine {
						allowed[k] += mine[k]
					}
					mu.Unlock()
				})
			}
			wg.Wait()
			for k, n := range allowed {
				if n != limit {
					t.Errorf("key%d: allowed %d of %d, want %d", k, n, goroutines*each/keys, limit)
				}
			}
		})
	}
}

func TestNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, c := range constructors {
		l := mustNew(t, c.name, ratelimit.Settings{Limit: 1})
		l.AllowAt(t0, "k", 1)
	}
	if after := runtime.NumGoroutine(); after != before {
		t.Errorf("NumGoroutine() = %d after constructing limiters, want %d", after, before)
	}
}
