package breaker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Circuit is the standard [Breaker]: it counts consecutive failures and a
// failure ratio over a rolling window while closed, stays open for an
// exponentially growing timeout, and closes again after a run of successful
// half-open probes. Create one with [New].
//
// All methods are safe for concurrent use. The closed path (Allow and its
// done) does not allocate and takes no lock, except once per window bucket
// to recycle it; a mutex serialises state transitions. Calls admitted just
// before a transition report into the period they were admitted in, so
// their outcomes are ignored.
//
// Each done func must be called exactly once: a second call counts the
// outcome again, and a done never called holds a half-open probe slot for
// as long as the breaker stays half-open.
type Circuit struct {
	cfg    config
	origin time.Time // start of bucket 0 of every rolling window

	// cur is the current state period. It is replaced, never modified
	// apart from its atomic counters, on every transition.
	cur      atomic.Pointer[period]
	trips    atomic.Uint64
	rejected atomic.Uint64

	mu        sync.Mutex // serialises transitions and guards the fields below
	pending   []transition
	notifying bool
}

var _ Breaker = (*Circuit)(nil)

// config is Settings with defaults applied.
type config struct {
	name          string
	consec        int64   // 0: condition disabled
	ratio         float64 // < 0: condition disabled
	minRequests   int64
	width         time.Duration // bucket width
	openTimeout   time.Duration
	maxOpen       time.Duration
	probes        int64
	isFailure     func(error) bool
	onStateChange func(name string, from, to State)
	now           func() time.Time
}

// period is one stretch of time in a single state: a generation. Calls
// admitted in a period report to it through its done func; once the period
// is no longer current their outcomes are ignored.
type period struct {
	gen    uint64
	state  State
	until  time.Time // Open: when the breaker may turn half-open
	streak int       // trips since the breaker last closed
	stats  *stats    // closed period's outcomes, carried through open and half-open
	done   func(error)

	// HalfOpen: probe slots taken (in flight or succeeded), and successes.
	used      atomic.Int64
	successes atomic.Int64
}

type transition struct{ from, to State }

// New returns a closed Circuit configured by s; see [Settings] for the
// defaults. It starts no goroutine.
func New(s Settings) *Circuit {
	cfg := config{
		name:          s.Name,
		consec:        int64(s.ConsecutiveFailures),
		ratio:         s.FailureRatio,
		minRequests:   int64(s.MinRequests),
		openTimeout:   s.OpenTimeout,
		maxOpen:       s.MaxOpenTimeout,
		probes:        int64(s.HalfOpenRequests),
		isFailure:     s.IsFailure,
		onStateChange: s.OnStateChange,
		now:           s.Now,
	}
	switch {
	case cfg.consec == 0:
		cfg.consec = 5
	case cfg.consec < 0:
		cfg.consec = 0
	}
	if cfg.ratio == 0 {
		cfg.ratio = 0.5
	}
	switch {
	case cfg.minRequests == 0:
		cfg.minRequests = 20
	case cfg.minRequests < 0:
		cfg.minRequests = 1
	}
	window := s.Window
	if window <= 0 {
		window = 10 * time.Second
	}
	cfg.width = max(window/numBuckets, 1)
	if cfg.openTimeout <= 0 {
		cfg.openTimeout = 10 * time.Second
	}
	if cfg.maxOpen <= 0 {
		cfg.maxOpen = 60 * time.Second
	}
	cfg.maxOpen = max(cfg.maxOpen, cfg.openTimeout)
	switch {
	case cfg.probes == 0:
		cfg.probes = 3
	case cfg.probes < 0:
		cfg.probes = 1
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	c := &Circuit{cfg: cfg, origin: cfg.now()}
	c.cur.Store(c.newClosed(0))
	return c
}

// Allow implements [Breaker].
func (c *Circuit) Allow() (func(error), error) {
	_, done, err := c.allow()
	return done, err
}

// allow is Allow that also returns the period that admitted the call.
func (c *Circuit) allow() (*period, func(error), error) {
	p := c.cur.Load()
	for {
		switch p.state {
		case Closed:
			return p, p.done, nil
		case Open:
			now := c.cfg.now()
			if now.Before(p.until) {
				c.rejected.Add(1)
				return nil, nil, ErrOpen
			}
			p = c.toHalfOpen(p)
		default:
			if !p.take(c.cfg.probes) {
				c.rejected.Add(1)
				return nil, nil, ErrTooManyProbes
			}
			if q := c.cur.Load(); q != p {
				// The period ended while we took its slot; ask the new one.
				p.used.Add(-1)
				p = q
				continue
			}
			return p, p.done, nil
		}
	}
}

// take claims a probe slot if one is free.
func (p *period) take(limit int64) bool {
	for {
		u := p.used.Load()
		if u >= limit {
			return false
		}
		if p.used.CompareAndSwap(u, u+1) {
			return true
		}
	}
}

// State returns the breaker's state. An open breaker whose timeout has
// elapsed turns half-open here.
func (c *Circuit) State() State { return c.load().state }

// Ready reports whether Allow would admit a call now, without taking a probe
// slot: a load balancer calls it to skip instances whose breaker refuses.
// An open breaker whose timeout has elapsed turns half-open here.
func (c *Circuit) Ready() bool {
	p := c.load()
	switch p.state {
	case Closed:
		return true
	case HalfOpen:
		return p.used.Load() < c.cfg.probes
	}
	return false
}

// RetryAfter returns how long an open breaker will keep refusing calls,
// for a Retry-After header; it is zero unless the breaker is open.
func (c *Circuit) RetryAfter() time.Duration {
	p := c.cur.Load()
	if p.state != Open {
		return 0
	}
	return max(p.until.Sub(c.cfg.now()), 0)
}

// Counts returns a snapshot of the breaker's statistics. An open breaker
// whose timeout has elapsed turns half-open here.
func (c *Circuit) Counts() Counts {
	p := c.load()
	reqs, fails := p.stats.sum(bucketIndex(c.cfg.now(), c.origin, c.cfg.width))
	return Counts{
		Requests:            reqs,
		Failures:            fails,
		ConsecutiveFailures: p.stats.consec.Load(),
		Probes:              p.used.Load(),
		ProbeSuccesses:      p.successes.Load(),
		Trips:               c.trips.Load(),
		ConsecutiveTrips:    p.streak,
		Rejected:            c.rejected.Load(),
		Generation:          p.gen,
	}
}

// load returns the current period after applying the lazy open →
// half-open transition.
func (c *Circuit) load() *period {
	p := c.cur.Load()
	if p.state == Open && !c.cfg.now().Before(p.until) {
		p = c.toHalfOpen(p)
	}
	return p
}

func (c *Circuit) newClosed(gen uint64) *period {
	p := &period{gen: gen, state: Closed, stats: new(stats)}
	// One done func per period, not per call, keeps the closed path free
	// of allocations.
	p.done = func(err error) { c.doneClosed(p, err) }
	return p
}

// doneClosed records the outcome of a call admitted in closed period p.
func (c *Circuit) doneClosed(p *period, err error) {
	if err != nil && errors.Is(err, context.Canceled) {
		return
	}
	if c.cur.Load() != p {
		return
	}
	failed := err != nil && (c.cfg.isFailure == nil || c.cfg.isFailure(err))
	now := c.cfg.now()
	idx := bucketIndex(now, c.origin, c.cfg.width)
	s := p.stats
	s.record(idx, failed)
	if !failed {
		// Skipping the store when already zero keeps the cache line shared
		// among cores on an all-success workload.
		if s.consec.Load() != 0 {
			s.consec.Store(0)
		}
		return
	}
	// Trip conditions are evaluated on failures only: a success never
	// opens the breaker, and the success path stays short.
	n := s.consec.Add(1)
	if c.cfg.consec > 0 && n >= c.cfg.consec {
		c.toOpen(p, now)
		return
	}
	if c.cfg.ratio >= 0 {
		reqs, fails := s.sum(idx)
		if reqs >= c.cfg.minRequests && float64(fails)/float64(reqs) >= c.cfg.ratio {
			c.toOpen(p, now)
		}
	}
}

// doneHalfOpen records the outcome of a probe admitted in half-open period p.
func (c *Circuit) doneHalfOpen(p *period, err error) {
	if c.cur.Load() != p {
		return
	}
	if err != nil && errors.Is(err, context.Canceled) {
		// The probe told us nothing; free its slot for another one, or
		// the breaker would stay half-open for good.
		p.used.Add(-1)
		return
	}
	if err != nil && (c.cfg.isFailure == nil || c.cfg.isFailure(err)) {
		c.toOpen(p, c.cfg.now())
		return
	}
	if p.successes.Add(1) >= c.cfg.probes {
		c.replace(p, c.newClosed(p.gen+1))
	}
}

// openTimeout returns the open timeout after streak trips in a row:
// OpenTimeout doubled streak-1 times, capped at MaxOpenTimeout.
func (c *Circuit) openTimeout(streak int) time.Duration {
	d := c.cfg.openTimeout
	for i := 1; i < streak && d < c.cfg.maxOpen; i++ {
		if d > c.cfg.maxOpen/2 {
			return c.cfg.maxOpen
		}
		d *= 2
	}
	return min(d, c.cfg.maxOpen)
}

// toOpen trips the breaker from closed or half-open period p at time now.
func (c *Circuit) toOpen(p *period, now time.Time) {
	streak := p.streak + 1
	q := &period{
		gen:    p.gen + 1,
		state:  Open,
		until:  now.Add(c.openTimeout(streak)),
		streak: streak,
		stats:  p.stats,
	}
	if c.replace(p, q) {
		c.trips.Add(1)
	}
}

// toHalfOpen moves open period p to half-open and returns the current
// period, whichever it is by then.
func (c *Circuit) toHalfOpen(p *period) *period {
	if q := c.cur.Load(); q != p {
		return q // another goroutine got there first
	}
	q := &period{gen: p.gen + 1, state: HalfOpen, streak: p.streak, stats: p.stats}
	q.done = func(err error) { c.doneHalfOpen(q, err) }
	c.replace(p, q)
	return c.cur.Load()
}

// replace makes q the current period if p still is, and reports whether it
// did. The state change is announced after the lock is released.
func (c *Circuit) replace(p, q *period) bool {
	c.mu.Lock()
	if c.cur.Load() != p {
		c.mu.Unlock()
		return false
	}
	c.cur.Store(q)
	if c.cfg.onStateChange != nil {
		c.pending = append(c.pending, transition{p.state, q.state})
	}
	c.mu.Unlock()
	if c.cfg.onStateChange != nil {
		c.notify()
	}
	return true
}

// notify delivers pending transitions in order. Only one goroutine delivers
// at a time, so callbacks never overlap and never run out of order; the
// others leave their transitions to it.
func (c *Circuit) notify() {
	c.mu.Lock()
	if c.notifying {
		c.mu.Unlock()
		return
	}
	c.notifying = true
	finished := false
	defer func() {
		if !finished { // the callback panicked: let a later transition deliver
			c.mu.Lock()
			c.notifying = false
			c.mu.Unlock()
		}
	}()
	for len(c.pending) > 0 {
		batch := c.pending
		c.pending = nil
		c.mu.Unlock()
		for _, t := range batch {
			c.cfg.onStateChange(c.cfg.name, t.from, t.to)
		}
		c.mu.Lock()
	}
	c.notifying = false
	finished = true
	c.mu.Unlock()
}
