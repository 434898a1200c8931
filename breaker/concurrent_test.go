package breaker

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCircuitConcurrent hammers one breaker from many goroutines while they
// move a shared clock forward, and checks the invariants that must hold
// whatever the interleaving.
func TestCircuitConcurrent(t *testing.T) {
	before := runtime.NumGoroutine()
	const (
		workers    = 8
		iterations = 3000
		probes     = 3
	)
	var clock atomic.Int64 // nanoseconds since t0
	now := func() time.Time { return t0.Add(time.Duration(clock.Load())) }

	// Written only by the callback, which must never run concurrently
	// with itself: the race detector checks that claim too.
	var (
		inCallback  atomic.Bool
		overlaps    atomic.Int64
		last        = Closed
		brokenChain int
		transitions = map[[2]State]int{}
	)
	c := New(Settings{
		ConsecutiveFailures: 3, FailureRatio: 0.5, MinRequests: 10, Window: 10 * time.Millisecond,
		OpenTimeout: 50 * time.Microsecond, MaxOpenTimeout: 400 * time.Microsecond,
		HalfOpenRequests: probes, Now: now,
		OnStateChange: func(_ string, from, to State) {
			if !inCallback.CompareAndSwap(false, true) {
				overlaps.Add(1)
			}
			if from != last {
				brokenChain++
			}
			last = to
			transitions[[2]State{from, to}]++
			inCallback.Store(false)
		},
	})

	// Per half-open period: probes admitted and not yet reported.
	type probeStats struct{ inFlight, admitted, canceled atomic.Int64 }
	var (
		periods    sync.Map // *period → *probeStats
		violations atomic.Int64
		openAdmits atomic.Int64
	)
	type call struct {
		ps   *probeStats
		done func(error)
	}
	finish := func(c call, err error) {
		if c.ps != nil {
			// Before done: once done frees the slot another probe may start.
			c.ps.inFlight.Add(-1)
			if err == context.Canceled {
				c.ps.canceled.Add(1)
			}
		}
		c.done(err)
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			var held []call // calls kept open across iterations, to report late
			outcome := func() error {
				switch x := r.IntN(10); {
				case x < 4:
					return errBoom
				case x < 5:
					return context.Canceled
				}
				return nil
			}
			for range iterations {
				clock.Add(int64(r.IntN(20)) * int64(time.Microsecond))
				if len(held) > 0 && r.IntN(3) == 0 {
					finish(held[0], outcome())
					held = held[1:]
				}
				if r.IntN(8) == 0 {
					c.Ready()
					c.State()
					c.RetryAfter()
					c.Counts()
				}
				p, done, err := c.allow()
				if err != nil {
					if err != ErrOpen && err != ErrTooManyProbes {
						t.Errorf("Allow() err = %v, want nil, ErrOpen or ErrTooManyProbes", err)
					}
					continue
				}
				cl := call{done: done}
				switch p.state {
				case Open:
					openAdmits.Add(1)
				case HalfOpen:
					v, _ := periods.LoadOrStore(p, new(probeStats))
					cl.ps = v.(*probeStats)
					cl.ps.admitted.Add(1)
					if cl.ps.inFlight.Add(1) > probes {
						violations.Add(1)
					}
				}
				if len(held) < 2 && r.IntN(4) == 0 {
					held = append(held, cl)
					continue
				}
				finish(cl, outcome())
			}
			for _, cl := range held {
				finish(cl, outcome())
			}
		})
	}
	wg.Wait()

	if n := violations.Load(); n != 0 {
		t.Errorf("%d times more than %d probes were in flight in one half-open period", n, probes)
	}
	if n := openAdmits.Load(); n != 0 {
		t.Errorf("%d calls admitted by an open period", n)
	}
	halfOpenPeriods := 0
	periods.Range(func(_, v any) bool {
		halfOpenPeriods++
		ps := v.(*probeStats)
		if n := ps.admitted.Load() - ps.canceled.Load(); n > probes {
			t.Errorf("half-open period admitted %d probes that were not canceled, want at most %d", n, probes)
		}
		return true
	})

	// All goroutines have finished: the callback's view must agree with
	// the breaker's.
	if n := overlaps.Load(); n != 0 {
		t.Errorf("OnStateChange ran concurrently with itself %d times", n)
	}
	if brokenChain != 0 {
		t.Errorf("OnStateChange saw %d transitions whose from was not the previous to", brokenChain)
	}
	st := c.State()
	if st != last {
		t.Errorf("State() = %v, want %v (the last transition announced)", st, last)
	}
	total, opens := 0, 0
	for k, n := range transitions {
		total += n
		if k[1] == Open {
			opens += n
		}
	}
	counts := c.Counts()
	if counts.Generation != uint64(total) {
		t.Errorf("Counts().Generation = %d, want %d (transitions announced)", counts.Generation, total)
	}
	if counts.Trips != uint64(opens) {
		t.Errorf("Counts().Trips = %d, want %d (transitions to open announced)", counts.Trips, opens)
	}
	// The test proves nothing unless every kind of transition happened.
	for _, k := range [][2]State{{Closed, Open}, {Open, HalfOpen}, {HalfOpen, Open}, {HalfOpen, Closed}} {
		if transitions[k] == 0 {
			t.Errorf("no %v→%v transition happened; transitions = %v", k[0], k[1], transitions)
		}
	}
	if halfOpenPeriods == 0 {
		t.Error("no probe was admitted")
	}
	t.Logf("transitions %v, half-open periods with probes %d, counts %+v", transitions, halfOpenPeriods, counts)

	checkNoLeak(t, before)
}

// checkNoLeak fails if goroutines started by the test are still running.
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	for range 100 {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("goroutines = %d, want at most %d", runtime.NumGoroutine(), before)
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	clk := &fakeClock{t: t0}
	closed := New(Settings{Now: clk.Now})
	open := New(Settings{ConsecutiveFailures: 1, Now: clk.Now})
	done, _ := open.Allow()
	done(errBoom)

	tests := []struct {
		name string
		f    func()
	}{
		{"closed Allow+done(nil)", func() { d, _ := closed.Allow(); d(nil) }},
		{"closed Allow+done(canceled)", func() { d, _ := closed.Allow(); d(context.Canceled) }},
		{"closed Ready", func() { closed.Ready() }},
		{"open Allow", func() { open.Allow() }},
		{"open Ready", func() { open.Ready() }},
		{"open RetryAfter", func() { open.RetryAfter() }},
		{"Counts", func() { open.Counts() }},
	}
	for _, tt := range tests {
		if got := testing.AllocsPerRun(100, tt.f); got != 0 {
			t.Errorf("%s: AllocsPerRun = %v, want 0", tt.name, got)
		}
	}
}
