package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
)

// leakCheck fails the test if goroutines started during it are still alive
// at the end. Call it first so that its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("NumGoroutine() = %d, want <= %d (leak)\n%s", n, base, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// backend is a real HTTP server whose health answer tests change.
type backend struct {
	*httptest.Server
	status atomic.Int32
	hang   atomic.Bool // block until the client gives up
	hits   atomic.Int64
	path   atomic.Value // last requested path with query
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.status.Store(http.StatusOK)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.path.Store(r.URL.RequestURI())
		if b.hang.Load() {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(int(b.status.Load()))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) instance(t *testing.T) *balancer.Instance {
	t.Helper()
	return balancer.MustInstance(b.URL, 1)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// changes records OnChange calls.
type changes struct {
	mu  sync.Mutex
	got []bool
}

func (c *changes) record(_ *balancer.Instance, healthy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, healthy)
}

func (c *changes) list() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool(nil), c.got...)
}

func TestCheckerThresholds(t *testing.T) {
	leakCheck(t)
	b := newBackend(t)
	in := b.instance(t)
	clk := newClock()
	var ch changes
	c := NewChecker(ActiveSettings{Path: "/health", Timeout: time.Second, Now: clk.Now, OnChange: ch.record, Logger: discard()})
	t.Cleanup(c.transport.CloseIdleConnections)

	steps := []struct {
		status      int32
		wantHealthy bool
		wantChanges int
	}{
		{200, true, 0},
		{500, true, 0},
		{500, true, 0},
		{200, true, 0}, // a success resets the failure count
		{500, true, 0},
		{503, true, 0},
		{404, false, 1}, // third failure in a row
		{500, false, 1},
		{200, false, 1},
		{500, false, 1}, // a failure resets the success count
		{200, false, 1},
		{204, true, 2}, // second success in a row
		{200, true, 2},
	}
	for i, s := range steps {
		clk.Add(10 * time.Second)
		b.status.Store(s.status)
		c.CheckOnce(context.Background(), in)
		healthy := in.Flags()&balancer.Unhealthy == 0
		if healthy != s.wantHealthy {
			t.Fatalf("step %d (status %d): healthy = %v, want %v", i, s.status, healthy, s.wantHealthy)
		}
		if got := len(ch.list()); got != s.wantChanges {
			t.Fatalf("step %d: OnChange calls = %d, want %d", i, got, s.wantChanges)
		}
	}
	if got := ch.list(); got[0] != false || got[1] != true {
		t.Errorf("OnChange healthy = %v, want [false true]", got)
	}
	// Recovery happened at step 11: slow start begins then.
	if want := time.Date(2025, 1, 1, 0, 2, 0, 0, time.UTC); !in.Joined().Equal(want) {
		t.Errorf("Joined() = %v, want %v", in.Joined(), want)
	}
	if got := b.path.Load(); got != "/health" {
		t.Errorf("requested path = %v, want /health", got)
	}
}

func TestCheckerCustomThresholds(t *testing.T) {
	b := newBackend(t)
	in := b.instance(t)
	c := NewChecker(ActiveSettings{Path: "/hc?deep=1", UnhealthyThreshold: 1, HealthyThreshold: 1, Logger: discard()})
	t.Cleanup(c.transport.CloseIdleConnections)
	b.status.Store(500)
	c.CheckOnce(context.Background(), in)
	if in.Available() {
		t.Fatalf("Available() = true after 1 failure with UnhealthyThreshold 1, want false")
	}
	b.status.Store(200)
	c.CheckOnce(context.Background(), in)
	if !in.Available() {
		t.Fatalf("Available() = false after 1 success with HealthyThreshold 1, want true")
	}
	if got := b.path.Load(); got != "/hc?deep=1" {
		t.Errorf("requested = %v, want /hc?deep=1", got)
	}
}

func TestCheckerTimeoutIsFailure(t *testing.T) {
	leakCheck(t)
	b := newBackend(t)
	b.hang.Store(true)
	in := b.instance(t)
	c := NewChecker(ActiveSettings{Path: "/health", Timeout: 30 * time.Millisecond, Logger: discard()})
	t.Cleanup(c.transport.CloseIdleConnections)
	start := time.Now()
	for range 3 {
		c.CheckOnce(context.Background(), in)
	}
	if in.Flags()&balancer.Unhealthy == 0 {
		t.Fatalf("Flags() = %v after 3 timeouts, want unhealthy", in.Flags())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("3 checks took %v, want about 3 × 30ms", d)
	}
}

func TestCheckerConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	in := balancer.MustInstance("http://"+addr, 1)
	c := NewChecker(ActiveSettings{Path: "/health", UnhealthyThreshold: 1, Logger: discard()})
	if err := c.probe(context.Background(), in); err == nil {
		t.Fatalf("probe() = nil for a closed port, want an error")
	}
	c.CheckOnce(context.Background(), in)
	if in.Available() {
		t.Errorf("Available() = true, want false")
	}
}

func TestCheckerStatus(t *testing.T) {
	b := newBackend(t)
	in := b.instance(t)
	def := NewChecker(ActiveSettings{Path: "/health"})
	only204 := NewChecker(ActiveSettings{Path: "/health", ExpectedStatus: []int{204, 418}})
	t.Cleanup(def.transport.CloseIdleConnections)
	t.Cleanup(only204.transport.CloseIdleConnections)
	tests := []struct {
		status       int32
		def, only204 bool
	}{
		{200, true, false},
		{204, true, true},
		{302, true, false}, // not followed: the redirect itself answers
		{399, true, false},
		{400, false, false},
		{404, false, false},
		{418, false, true},
		{500, false, false},
		{503, false, false},
	}
	for _, tt := range tests {
		b.status.Store(tt.status)
		for _, c := range []struct {
			name string
			c    *Checker
			want bool
		}{{"default", def, tt.def}, {"[204 418]", only204, tt.only204}} {
			err := c.c.probe(context.Background(), in)
			if (err == nil) != c.want {
				t.Errorf("%s: probe(status %d) = %v, want healthy %v", c.name, tt.status, err, c.want)
			}
			if err != nil && !errors.Is(err, errStatus) {
				t.Errorf("%s: probe(status %d) = %v, want errStatus", c.name, tt.status, err)
			}
		}
	}
}

func TestCheckerCanceledCheckCountsForNothing(t *testing.T) {
	b := newBackend(t)
	b.hang.Store(true)
	in := b.instance(t)
	c := NewChecker(ActiveSettings{Path: "/health", UnhealthyThreshold: 1, Logger: discard()})
	t.Cleanup(c.transport.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	c.CheckOnce(ctx, in)
	if !in.Available() {
		t.Errorf("Available() = false after a check cut short by ctx, want true")
	}
}

func TestJitter(t *testing.T) {
	const d = 10 * time.Second
	if got, want := jitter(d, 0), 9*time.Second; got != want {
		t.Errorf("jitter(10s, 0) = %v, want %v", got, want)
	}
	if got, want := jitter(d, 0.5), d; got != want {
		t.Errorf("jitter(10s, 0.5) = %v, want %v", got, want)
	}
	if got := jitter(d, 0.999999); got >= 11*time.Second || got < 10999*time.Millisecond {
		t.Errorf("jitter(10s, 0.999999) = %v, want just under 11s", got)
	}
	// With the real random source: every delay in bounds, and spread out.
	lo, hi := d, time.Duration(0)
	for range 1000 {
		got := jitter(d, randFloat())
		if got < 9*time.Second || got >= 11*time.Second {
			t.Fatalf("jitter(10s) = %v, want within [9s, 11s)", got)
		}
		lo, hi = min(lo, got), max(hi, got)
	}
	if lo > 9200*time.Millisecond || hi < 10800*time.Millisecond {
		t.Errorf("1000 jittered delays span [%v, %v], want most of [9s, 11s)", lo, hi)
	}
}

func TestCheckerRun(t *testing.T) {
	leakCheck(t)
	a, b, c := newBackend(t), newBackend(t), newBackend(t)
	ia, ib, ic := a.instance(t), b.instance(t), c.instance(t)
	b.status.Store(http.StatusInternalServerError)

	var mu sync.Mutex
	pool := []*balancer.Instance{ia, ib}
	instances := func() []*balancer.Instance {
		mu.Lock()
		defer mu.Unlock()
		return append([]*balancer.Instance(nil), pool...)
	}
	checker := NewChecker(ActiveSettings{Path: "/health", Interval: 10 * time.Millisecond, Timeout: time.Second, Logger: discard()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- checker.Run(ctx, instances) }()

	waitFor(t, "b unhealthy", func() bool { return ib.Flags()&balancer.Unhealthy != 0 })
	if !ia.Available() {
		t.Fatalf("a.Available() = false, want true")
	}

	// Membership change: c joins, a leaves.
	mu.Lock()
	pool = []*balancer.Instance{ib, ic}
	mu.Unlock()
	waitFor(t, "c checked", func() bool { return c.hits.Load() >= 2 })
	waitFor(t, "a forgotten", func() bool {
		checker.mu.Lock()
		defer checker.mu.Unlock()
		_, ok := checker.state[ia]
		return !ok
	})
	hitsA := a.hits.Load()
	time.Sleep(50 * time.Millisecond)
	if got := a.hits.Load(); got != hitsA {
		t.Errorf("a checked %d more times after leaving the pool, want 0", got-hitsA)
	}

	b.status.Store(http.StatusOK)
	waitFor(t, "b healthy again", func() bool { return ib.Available() })

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run did not return after cancel")
	}
	// Run returned only after its checkers stopped: no check comes later.
	hits := b.hits.Load() + c.hits.Load()
	time.Sleep(50 * time.Millisecond)
	if got := b.hits.Load() + c.hits.Load(); got != hits {
		t.Errorf("%d checks after Run returned, want 0", got-hits)
	}
}

func TestCheckerRunWithoutPath(t *testing.T) {
	err := NewChecker(ActiveSettings{}).Run(context.Background(), func() []*balancer.Instance { return nil })
	if !errors.Is(err, ErrNoPath) {
		t.Fatalf("Run() = %v, want ErrNoPath", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
