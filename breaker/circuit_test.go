package breaker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestCircuitSteps(t *testing.T) {
	canceled := fmt.Errorf("proxy: %w", context.Canceled)
	tests := []struct {
		name  string
		s     Settings
		steps []step
	}{
		{
			name: "trips on consecutive failures",
			s:    Settings{ConsecutiveFailures: 3, FailureRatio: -1},
			steps: []step{
				fail().times(2), wantState(Closed), wantCounts(2, 2, 2),
				ok(), wantCounts(3, 2, 0), // a success ends the run
				fail().times(2), wantState(Closed), wantReady(true),
				fail(), wantState(Open), wantReady(false), wantCounts(6, 5, 3),
				refuse(ErrOpen),
				wantLog("closed->open"),
			},
		},
		{
			name: "ratio needs MinRequests",
			s:    Settings{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4},
			steps: []step{
				fail().times(3), wantState(Closed), // 3/3 failed, but only 3 requests
				ok(), wantState(Closed), // 4 requests, 3/4 failed: conditions are checked on failures
				fail(), wantState(Open), wantCounts(5, 4, 1),
			},
		},
		{
			name: "ratio at exactly the threshold trips",
			s:    Settings{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4},
			steps: []step{
				ok().times(3), fail(), wantState(Closed), // 1/4
				fail(), wantState(Closed), // 2/5
				fail(), wantState(Open), wantCounts(6, 3, 3), // 3/6
			},
		},
		{
			name: "ratio below threshold stays closed",
			s:    Settings{ConsecutiveFailures: -1, FailureRatio: 0.6, MinRequests: 1},
			steps: []step{
				ok(), fail(), ok(), fail(), ok(), fail(), wantState(Closed), wantCounts(6, 3, 1),
			},
		},
		{
			name: "rolling window forgets old buckets",
			s: Settings{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4,
				Window: 10 * time.Second},
			steps: []step{
				fail().times(3), wantCounts(3, 3, 3),
				advance(10 * time.Second), wantCounts(0, 0, 3), // bucket 0 has left the window
				fail(), wantState(Closed), wantCounts(1, 1, 4),
			},
		},
		{
			name: "rolling window keeps the last ten buckets",
			s: Settings{ConsecutiveFailures: -1, FailureRatio: 0.5, MinRequests: 4,
				Window: 10 * time.Second},
			steps: []step{
				fail().times(2),
				advance(9*time.Second + 999*time.Millisecond), wantCounts(2, 2, 2),
				fail(), wantState(Closed), // 3 in window
				advance(time.Millisecond), wantCounts(1, 1, 3), // the first bucket ages out
				ok().times(3), fail(), wantState(Closed), wantCounts(5, 2, 1), // 2/5
				fail(), wantState(Open), wantCounts(6, 3, 2), // 3/6
			},
		},
		{
			name: "open refuses and RetryAfter counts down",
			s:    Settings{ConsecutiveFailures: 1, OpenTimeout: 10 * time.Second},
			steps: []step{
				wantRetryAfter(0),
				fail(), wantState(Open), wantRetryAfter(10 * time.Second),
				advance(3 * time.Second), wantRetryAfter(7 * time.Second), refuse(ErrOpen), wantReady(false),
				advance(7*time.Second - 1), wantRetryAfter(1), refuse(ErrOpen), wantState(Open),
				advance(1), wantRetryAfter(0), wantLog("closed->open"),
				wantState(HalfOpen), wantRetryAfter(0), wantLog("closed->open", "open->half_open"),
				checkCounts("rejected", func(c Counts) error {
					if c.Rejected != 2 || c.Trips != 1 || c.Generation != 2 {
						return fmt.Errorf("Counts() rejected/trips/generation = %d/%d/%d, want 2/1/2",
							c.Rejected, c.Trips, c.Generation)
					}
					return nil
				}),
			},
		},
		{
			name: "half-open admits exactly HalfOpenRequests probes and closes when all succeed",
			s:    Settings{ConsecutiveFailures: 2, HalfOpenRequests: 3, OpenTimeout: time.Second},
			steps: []step{
				fail().times(2), advance(time.Second),
				wantReady(true), wantReady(true), // Ready takes no slot
				hold("a"), hold("b"), wantReady(true), hold("c"),
				wantReady(false), refuse(ErrTooManyProbes), wantState(HalfOpen),
				finish("a", nil), refuse(ErrTooManyProbes), // a success keeps its slot
				finish("b", nil), wantState(HalfOpen),
				checkCounts("probes", func(c Counts) error {
					if c.Probes != 3 || c.ProbeSuccesses != 2 {
						return fmt.Errorf("Counts() probes/successes = %d/%d, want 3/2", c.Probes, c.ProbeSuccesses)
					}
					return nil
				}),
				finish("c", nil), wantState(Closed),
				wantCounts(0, 0, 0),       // fresh counts
				fail(), wantState(Closed), // the run starts over
				wantLog("closed->open", "open->half_open", "half_open->closed"),
			},
		},
		{
			name: "lazy transition happens in Allow",
			s:    Settings{ConsecutiveFailures: 1, HalfOpenRequests: 1, OpenTimeout: time.Second},
			steps: []step{
				fail(), advance(time.Second), ok(), wantState(Closed),
				wantLog("closed->open", "open->half_open", "half_open->closed"),
			},
		},
		{
			name: "failing probe reopens with doubled timeout, capped",
			s: Settings{ConsecutiveFailures: 1, HalfOpenRequests: 2,
				OpenTimeout: 10 * time.Second, MaxOpenTimeout: 35 * time.Second},
			steps: []step{
				fail(), wantRetryAfter(10 * time.Second),
				advance(10 * time.Second), hold("slow"), fail(), wantState(Open), wantRetryAfter(20 * time.Second),
				finish("slow", nil), wantState(Open), // its period is over
				advance(20 * time.Second), fail(), wantRetryAfter(35 * time.Second), // 40s capped
				advance(35 * time.Second), fail(), wantRetryAfter(35 * time.Second),
				checkCounts("trips", func(c Counts) error {
					if c.Trips != 4 || c.ConsecutiveTrips != 4 {
						return fmt.Errorf("Counts() trips/consecutive = %d/%d, want 4/4", c.Trips, c.ConsecutiveTrips)
					}
					return nil
				}),
				advance(35 * time.Second), ok().times(2), wantState(Closed),
				fail(), wantRetryAfter(10 * time.Second), // reset on closing
			},
		},
		{
			name: "context.Canceled is ignored",
			s:    Settings{ConsecutiveFailures: 2, HalfOpenRequests: 1, OpenTimeout: time.Second},
			steps: []step{
				fail(), call(context.Canceled), call(canceled), wantCounts(1, 1, 1),
				fail(), wantState(Open),
				advance(time.Second), hold("probe"), refuse(ErrTooManyProbes),
				finish("probe", canceled), wantState(HalfOpen), wantReady(true), // slot freed
				hold("probe2"), finish("probe2", nil), wantState(Closed),
			},
		},
		{
			name: "context.DeadlineExceeded is a failure",
			s:    Settings{ConsecutiveFailures: 2},
			steps: []step{
				call(context.DeadlineExceeded).times(2), wantState(Open),
			},
		},
		{
			name: "outcome from a closed period is ignored in half-open",
			s:    Settings{ConsecutiveFailures: 1, HalfOpenRequests: 1, OpenTimeout: time.Second},
			steps: []step{
				hold("slow"), fail(), wantState(Open),
				advance(time.Second), hold("probe"),
				finish("slow", errBoom), wantState(HalfOpen), // would reopen if counted
				wantCounts(1, 1, 1), // nor does it join the counts that tripped the breaker
				finish("probe", nil), wantState(Closed),
			},
		},
		{
			name: "outcome from an earlier closed period is ignored",
			s:    Settings{ConsecutiveFailures: 1, HalfOpenRequests: 1, OpenTimeout: time.Second},
			steps: []step{
				hold("slow"), fail(), advance(time.Second), ok(), wantState(Closed),
				finish("slow", errBoom), wantState(Closed), wantCounts(0, 0, 0),
			},
		},
		{
			name: "stale probe outcome is ignored",
			s:    Settings{ConsecutiveFailures: 1, HalfOpenRequests: 2, OpenTimeout: time.Second},
			steps: []step{
				fail(), advance(time.Second), hold("p1"), fail(), wantState(Open),
				advance(2 * time.Second), hold("p2"),
				finish("p1", nil), // an earlier half-open period's probe
				checkCounts("probes", func(c Counts) error {
					if c.ProbeSuccesses != 0 {
						return fmt.Errorf("Counts().ProbeSuccesses = %d, want 0", c.ProbeSuccesses)
					}
					return nil
				}),
				finish("p2", nil), wantState(HalfOpen), ok(), wantState(Closed),
			},
		},
		{
			name: "OnStateChange sees every transition in order",
			s: Settings{Name: "users", ConsecutiveFailures: 1, HalfOpenRequests: 1,
				OpenTimeout: time.Second, MaxOpenTimeout: time.Second},
			steps: []step{
				fail(), advance(time.Second), fail(), advance(time.Second), ok(), fail(),
				wantLog("closed->open", "open->half_open", "half_open->open",
					"open->half_open", "half_open->closed", "closed->open"),
			},
		},
		{
			name: "custom IsFailure",
			s: Settings{ConsecutiveFailures: 2, HalfOpenRequests: 1, OpenTimeout: time.Second,
				IsFailure: func(err error) bool { return !errors.Is(err, errSoft) }},
			steps: []step{
				call(errSoft).times(5), wantState(Closed), wantCounts(5, 0, 0),
				fail(), call(errSoft), fail(), wantState(Closed), // the soft error ended the run
				fail(), wantState(Open),
				advance(time.Second), call(errSoft), wantState(Closed), // a soft error is a successful probe
			},
		},
		{
			name: "both conditions disabled",
			s:    Settings{ConsecutiveFailures: -1, FailureRatio: -1},
			steps: []step{
				fail().times(100), wantState(Closed), wantCounts(100, 100, 100),
			},
		},
		{
			name: "defaults",
			s:    Settings{},
			steps: []step{
				fail().times(4), wantState(Closed), fail(), wantState(Open), wantRetryAfter(10 * time.Second),
				advance(10 * time.Second), hold("a"), hold("b"), hold("c"), refuse(ErrTooManyProbes),
				finish("a", errBoom), wantRetryAfter(20 * time.Second),
			},
		},
		{
			name: "default ratio and MinRequests",
			s:    Settings{ConsecutiveFailures: -1},
			steps: []step{
				ok(), fail(), ok(), fail(), ok(), fail(), ok(), fail(), ok(), fail(),
				ok(), fail(), ok(), fail(), ok(), fail(), ok(), fail(), ok(), wantState(Closed), // 9/19
				fail(), wantState(Open), // 10/20
			},
		},
		{
			name: "negative minimums mean one",
			s: Settings{ConsecutiveFailures: -1, FailureRatio: 1, MinRequests: -1, HalfOpenRequests: -1,
				OpenTimeout: time.Second},
			steps: []step{
				fail(), wantState(Open), advance(time.Second), hold("a"), refuse(ErrTooManyProbes),
				finish("a", nil), wantState(Closed),
			},
		},
		{
			name: "MaxOpenTimeout below OpenTimeout means no growth",
			s:    Settings{ConsecutiveFailures: 1, OpenTimeout: 5 * time.Second, MaxOpenTimeout: time.Second},
			steps: []step{
				fail(), wantRetryAfter(5 * time.Second), advance(5 * time.Second), fail(), wantRetryAfter(5 * time.Second),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, newHarness(t, tt.s), tt.steps)
		})
	}
}

func TestStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{Closed, "closed"}, {Open, "open"}, {HalfOpen, "half_open"}, {State(7), "State(7)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("State(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

func TestOpenTimeoutOverflow(t *testing.T) {
	c := New(Settings{OpenTimeout: time.Duration(1 << 61), MaxOpenTimeout: time.Duration(1<<63 - 1)})
	for streak, want := range map[int]time.Duration{
		1: 1 << 61, 2: 1 << 62, 3: 1<<63 - 1, 1000: 1<<63 - 1,
	} {
		if got := c.openTimeout(streak); got != want {
			t.Errorf("openTimeout(%d) = %v, want %v", streak, got, want)
		}
	}
}

// A callback may call back into the breaker, and transitions it causes are
// delivered after it returns, in order.
func TestOnStateChangeReentrant(t *testing.T) {
	clk := &fakeClock{t: t0}
	var log []string
	var c *Circuit
	c = New(Settings{
		ConsecutiveFailures: 1, OpenTimeout: time.Second, Now: clk.Now,
		OnStateChange: func(_ string, from, to State) {
			if to == Open {
				clk.Advance(time.Second) // so that State() below turns the breaker half-open
			}
			log = append(log, fmt.Sprintf("%v->%v (state %v)", from, to, c.State()))
		},
	})
	done, _ := c.Allow()
	done(errBoom)
	want := []string{"closed->open (state half_open)", "open->half_open (state half_open)"}
	if fmt.Sprint(log) != fmt.Sprint(want) {
		t.Errorf("transitions = %q, want %q", log, want)
	}
}

// A panicking callback must not silence later ones.
func TestOnStateChangePanic(t *testing.T) {
	clk := &fakeClock{t: t0}
	calls := 0
	c := New(Settings{
		ConsecutiveFailures: 1, OpenTimeout: time.Second, Now: clk.Now,
		OnStateChange: func(string, State, State) {
			calls++
			if calls == 1 {
				panic("callback")
			}
		},
	})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("done(err) did not propagate the callback's panic")
			}
		}()
		done, _ := c.Allow()
		done(errBoom)
	}()
	clk.Advance(time.Second)
	if got := c.State(); got != HalfOpen {
		t.Fatalf("State() = %v, want %v", got, HalfOpen)
	}
	if calls != 2 {
		t.Errorf("OnStateChange calls = %d, want 2", calls)
	}
}

func TestBucketIndex(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int64
	}{
		{0, 0}, {999, 0}, {1000, 1}, {2500, 2}, {-1, -1}, {-1000, -1}, {-1001, -2},
	}
	for _, tt := range tests {
		if got := bucketIndex(t0.Add(tt.d), t0, 1000); got != tt.want {
			t.Errorf("bucketIndex(origin%+d, width 1000) = %d, want %d", tt.d, got, tt.want)
		}
		if got, want := slot(tt.want), int((tt.want%numBuckets+numBuckets)%numBuckets); got != want || got < 0 {
			t.Errorf("slot(%d) = %d, want %d", tt.want, got, want)
		}
	}
}

// An outcome whose clock reading is older than a whole window is dropped
// rather than overwriting a newer bucket.
func TestStatsDropsOutcomesOlderThanTheWindow(t *testing.T) {
	var s stats
	s.record(15, true)
	s.record(5, true) // same slot, ten buckets older
	if reqs, fails := s.sum(15); reqs != 1 || fails != 1 {
		t.Errorf("sum(15) = %d, %d, want 1, 1", reqs, fails)
	}
	if reqs, _ := s.sum(25); reqs != 0 {
		t.Errorf("sum(25) requests = %d, want 0", reqs)
	}
}
