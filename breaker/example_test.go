package breaker_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/pyairtable/api-gateway/breaker"
)

// clock is a manual clock so that the examples' output is deterministic;
// real code leaves Settings.Now nil.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

var errUnavailable = errors.New("backend unavailable")

func Example() {
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := breaker.New(breaker.Settings{
		ConsecutiveFailures: 2,
		OpenTimeout:         5 * time.Second,
		HalfOpenRequests:    1,
		Now:                 clk.Now,
	})

	// call guards one call to a backend that fails when told to.
	call := func(fail bool) {
		done, err := c.Allow()
		if err != nil {
			fmt.Printf("refused: %v (retry after %v)\n", err, c.RetryAfter())
			return
		}
		var callErr error
		if fail {
			callErr = errUnavailable
		}
		done(callErr)
		fmt.Printf("called, breaker %v\n", c.State())
	}

	call(true)
	call(true) // the second failure in a row trips the breaker
	call(false)
	clk.Advance(5 * time.Second)
	call(false) // the probe succeeds
	// Output:
	// called, breaker closed
	// called, breaker open
	// refused: breaker: open (retry after 5s)
	// called, breaker closed
}

func Example_onStateChange() {
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := breaker.New(breaker.Settings{
		Name:                "users-1",
		ConsecutiveFailures: 1,
		OpenTimeout:         time.Second,
		HalfOpenRequests:    1,
		Now:                 clk.Now,
		OnStateChange: func(name string, from, to breaker.State) {
			// A gateway would take the instance out of rotation here.
			fmt.Printf("%s: %v -> %v\n", name, from, to)
		},
	})

	done, _ := c.Allow()
	done(errUnavailable)
	clk.Advance(time.Second)
	done, _ = c.Allow() // the open timeout elapsed: half-open, and this is the probe
	done(errUnavailable)
	fmt.Println("retry after", c.RetryAfter()) // the timeout doubled
	clk.Advance(2 * time.Second)
	done, _ = c.Allow()
	done(nil)
	// Output:
	// users-1: closed -> open
	// users-1: open -> half_open
	// users-1: half_open -> open
	// retry after 2s
	// users-1: open -> half_open
	// users-1: half_open -> closed
}

// Only errors that say something about the backend's health should count;
// here a "not found" does not.
func ExampleSettings_isFailure() {
	errNotFound := errors.New("not found")
	c := breaker.New(breaker.Settings{
		ConsecutiveFailures: 3,
		IsFailure:           func(err error) bool { return !errors.Is(err, errNotFound) },
	})
	for range 10 {
		done, _ := c.Allow()
		done(errNotFound)
	}
	fmt.Println(c.State(), c.Counts().Failures)
	// Output: closed 0
}
