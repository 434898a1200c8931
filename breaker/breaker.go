// Package breaker implements circuit breakers: guards that stop calling
// something that keeps failing, give it time to recover, and probe it with a
// few calls before trusting it again.
//
// A [Circuit] starts closed and lets every call through, counting outcomes.
// It trips open after too many failures in a row, or when the failure ratio
// over a rolling window is too high; while open it refuses calls with
// [ErrOpen]. When the open timeout has elapsed it turns half-open and lets a
// few probe calls through: if they all succeed it closes, and if one fails
// it opens again for twice as long (up to a cap).
//
// Use is two-step, because the decision and the outcome are often made in
// different places (a load balancer and a proxy's response handler):
//
//	done, err := c.Allow()
//	if err != nil {
//		return err // refused: ErrOpen or ErrTooManyProbes
//	}
//	err = call()
//	done(err)
//
// A breaker needs no goroutine and no timer: the open → half-open transition
// is computed from the clock whenever the breaker is next consulted.
package breaker

import (
	"errors"
	"strconv"
	"time"
)

// Breaker guards calls to something that may fail.
type Breaker interface {
	// Allow reports whether a call may proceed now. When it may, done must
	// be called exactly once with the call's outcome (nil = success). Errors
	// satisfying errors.Is(err, context.Canceled) are ignored (neither
	// success nor failure: the caller gave up). When refused, err is
	// ErrOpen (or ErrTooManyProbes in half-open) and done is nil.
	Allow() (done func(err error), err error)
}

var (
	// ErrOpen is returned by Allow while the breaker is open.
	ErrOpen = errors.New("breaker: open")
	// ErrTooManyProbes is returned by Allow while the breaker is half-open
	// and all its probe calls are already taken.
	ErrTooManyProbes = errors.New("breaker: too many probes in half-open state")
)

// State is the position of a breaker.
type State int

const (
	// Closed lets every call through and counts outcomes.
	Closed State = iota
	// Open refuses every call until the open timeout has elapsed.
	Open
	// HalfOpen lets a limited number of probe calls through.
	HalfOpen
)

// String returns "closed", "open" or "half_open", the names used in
// metrics labels and the admin API.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Settings configures a [Circuit]. The zero value is a sensible breaker for
// an HTTP backend. Settings is only read by [New]; later changes have no
// effect.
type Settings struct {
	// Name is passed to OnStateChange, to tell breakers apart.
	Name string

	// ConsecutiveFailures trips the breaker after this many failures in a
	// row. If zero, 5 is used. A negative value disables this condition.
	ConsecutiveFailures int

	// FailureRatio trips the breaker when, over Window, at least
	// MinRequests calls reported an outcome and failures/requests is at
	// least FailureRatio. If zero, 0.5 is used. A negative value disables
	// this condition, and so in effect does a value above 1. Canceled calls
	// are not counted. Both trip conditions are checked when a failure is
	// recorded: a success never opens the breaker.
	FailureRatio float64

	// MinRequests is the number of outcomes Window must hold before
	// FailureRatio is considered, so that a few early failures do not trip
	// the breaker. If zero, 20 is used; a negative value means 1.
	MinRequests int

	// Window is the length of the rolling window for FailureRatio. It is
	// split into 10 buckets; outcomes leave the window a bucket at a time,
	// so the window spans between 9 and 10 buckets of history. If zero or
	// negative, 10s is used.
	Window time.Duration

	// OpenTimeout is how long the breaker stays open after tripping from
	// closed. If zero or negative, 10s is used.
	OpenTimeout time.Duration

	// MaxOpenTimeout caps the open timeout, which doubles each time the
	// breaker reopens from half-open without having closed in between. If
	// zero or negative, 60s is used; if below OpenTimeout, OpenTimeout is
	// used (no growth).
	MaxOpenTimeout time.Duration

	// HalfOpenRequests is the number of probe calls let through in
	// half-open; all of them must succeed to close the breaker, and the
	// first failure reopens it. A canceled probe frees its slot for another.
	// If zero, 3 is used; a negative value means 1.
	HalfOpenRequests int

	// IsFailure reports whether a call's error counts as a failure; when it
	// reports false the call counts as a success (a 4xx from a healthy
	// backend, say). It is called only with non-nil errors that are not
	// context.Canceled, and must be safe for concurrent use. If nil, every
	// such error is a failure.
	IsFailure func(err error) bool

	// OnStateChange, if not nil, is called on every transition, in order,
	// never concurrently with itself, and never while the breaker's lock is
	// held: it may call the breaker's methods. It is normally run by the
	// goroutine whose call caused the transition, before that call returns;
	// a transition caused while another goroutine is running the callback is
	// delivered by that goroutine instead, once its callback returns. It
	// must not block.
	OnStateChange func(name string, from, to State)

	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

// Counts is a snapshot of a breaker's statistics.
type Counts struct {
	// Requests and Failures are the outcomes counted in the rolling window
	// ending now. While the breaker is open or half-open they are those of
	// the closed period that tripped it (they age as the window slides); a
	// breaker that closes starts again from zero.
	Requests, Failures int64
	// ConsecutiveFailures is the current run of failures in closed state.
	ConsecutiveFailures int64
	// Probes is the number of half-open probe slots taken (in flight or
	// succeeded) and ProbeSuccesses how many of them succeeded; both are
	// zero unless the breaker is half-open.
	Probes, ProbeSuccesses int64
	// Trips is the number of times the breaker has opened since New.
	Trips uint64
	// ConsecutiveTrips is the number of times the breaker has opened since
	// it last closed; each one after the first doubles the open timeout.
	ConsecutiveTrips int
	// Rejected is the number of calls Allow has refused since New.
	Rejected uint64
	// Generation numbers the current state period; it grows by one on
	// every transition. Outcomes of calls admitted in an earlier
	// generation are ignored.
	Generation uint64
}
