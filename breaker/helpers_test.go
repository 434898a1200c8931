package breaker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	errBoom = errors.New("boom")
	errSoft = errors.New("soft") // not a failure when a test's IsFailure says so
)

// t0 is the fake clocks' starting time.
var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a manual clock for single-goroutine tests.
type fakeClock struct{ t time.Time }

func (f *fakeClock) Now() time.Time          { return f.t }
func (f *fakeClock) Advance(d time.Duration) { f.t = f.t.Add(d) }

// harness drives one Circuit through a step table.
type harness struct {
	c    *Circuit
	clk  *fakeClock
	held map[string]func(error)
	log  []string // transitions seen by OnStateChange, as "from->to"
}

func newHarness(t *testing.T, s Settings) *harness {
	t.Helper()
	h := &harness{clk: &fakeClock{t: t0}, held: map[string]func(error){}}
	s.Now = h.clk.Now
	s.OnStateChange = func(name string, from, to State) {
		if name != s.Name {
			t.Errorf("OnStateChange name = %q, want %q", name, s.Name)
		}
		h.log = append(h.log, from.String()+"->"+to.String())
	}
	h.c = New(s)
	return h
}

// step is one row of a step table: an action or a check.
type step struct {
	desc string
	run  func(h *harness) error
}

func runSteps(t *testing.T, h *harness, steps []step) {
	t.Helper()
	for i, s := range steps {
		if err := s.run(h); err != nil {
			t.Fatalf("step %d (%s): %v", i, s.desc, err)
		}
	}
}

// times repeats s n times.
func (s step) times(n int) step {
	return step{fmt.Sprintf("%s ×%d", s.desc, n), func(h *harness) error {
		for i := range n {
			if err := s.run(h); err != nil {
				return fmt.Errorf("repetition %d: %w", i, err)
			}
		}
		return nil
	}}
}

// call is an admitted call that reports err at once.
func call(err error) step {
	return step{fmt.Sprintf("call(%v)", err), func(h *harness) error {
		done, aerr := h.c.Allow()
		if aerr != nil || done == nil {
			return fmt.Errorf("Allow() = (done nil: %t, %v), want admitted", done == nil, aerr)
		}
		done(err)
		return nil
	}}
}

func ok() step   { return call(nil) }
func fail() step { return call(errBoom) }

// refuse expects Allow to refuse with want.
func refuse(want error) step {
	return step{fmt.Sprintf("refuse(%v)", want), func(h *harness) error {
		done, err := h.c.Allow()
		if err != want || done != nil {
			return fmt.Errorf("Allow() = (done nil: %t, %v), want (true, %v)", done == nil, err, want)
		}
		return nil
	}}
}

// hold starts a call and keeps its done func under name.
func hold(name string) step {
	return step{"hold " + name, func(h *harness) error {
		done, err := h.c.Allow()
		if err != nil || done == nil {
			return fmt.Errorf("Allow() = (done nil: %t, %v), want admitted", done == nil, err)
		}
		h.held[name] = done
		return nil
	}}
}

// finish reports err for the call held under name.
func finish(name string, err error) step {
	return step{fmt.Sprintf("finish %s(%v)", name, err), func(h *harness) error {
		done, ok := h.held[name]
		if !ok {
			return fmt.Errorf("no held call %q", name)
		}
		delete(h.held, name)
		done(err)
		return nil
	}}
}

func advance(d time.Duration) step {
	return step{"advance " + d.String(), func(h *harness) error {
		h.clk.Advance(d)
		return nil
	}}
}

func wantState(want State) step {
	return step{"state " + want.String(), func(h *harness) error {
		if got := h.c.State(); got != want {
			return fmt.Errorf("State() = %v, want %v", got, want)
		}
		return nil
	}}
}

func wantReady(want bool) step {
	return step{fmt.Sprintf("ready %t", want), func(h *harness) error {
		if got := h.c.Ready(); got != want {
			return fmt.Errorf("Ready() = %t, want %t", got, want)
		}
		return nil
	}}
}

func wantRetryAfter(want time.Duration) step {
	return step{"retry after " + want.String(), func(h *harness) error {
		if got := h.c.RetryAfter(); got != want {
			return fmt.Errorf("RetryAfter() = %v, want %v", got, want)
		}
		return nil
	}}
}

// wantCounts checks the window and failure-run counts.
func wantCounts(reqs, fails, consec int64) step {
	return step{fmt.Sprintf("counts %d/%d/%d", reqs, fails, consec), func(h *harness) error {
		got := h.c.Counts()
		if got.Requests != reqs || got.Failures != fails || got.ConsecutiveFailures != consec {
			return fmt.Errorf("Counts() requests/failures/consecutive = %d/%d/%d, want %d/%d/%d",
				got.Requests, got.Failures, got.ConsecutiveFailures, reqs, fails, consec)
		}
		return nil
	}}
}

func checkCounts(desc string, check func(Counts) error) step {
	return step{desc, func(h *harness) error { return check(h.c.Counts()) }}
}

// wantLog checks every transition announced so far.
func wantLog(want ...string) step {
	return step{"log " + strings.Join(want, ","), func(h *harness) error {
		if !slices.Equal(h.log, want) {
			return fmt.Errorf("transitions = %q, want %q", h.log, want)
		}
		return nil
	}}
}
