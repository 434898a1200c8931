package health

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
)

// PassiveSettings configures an [Outlier].
type PassiveSettings struct {
	// ConsecutiveFailures is how many failures in a row (connect errors,
	// timeouts, 5xx, as the proxy reports them) eject an instance. If zero,
	// 5 is used.
	ConsecutiveFailures int
	// BaseEjection is how long a first ejection lasts; the n-th lasts
	// n × BaseEjection. Each BaseEjection an instance then spends in
	// rotation forgives one past ejection. If zero, 30s is used.
	BaseEjection time.Duration
	// MaxEjection caps an ejection's length. If zero, 300s is used.
	MaxEjection time.Duration
	// MaxEjectedPercent is the largest share of the pool that may be
	// ejected at once, counting the instance about to be ejected: with 50,
	// at most 1 of 3 instances and 2 of 4. A lone instance is never
	// ejected unless it is 100. If zero, 50 is used.
	MaxEjectedPercent int
	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time
	// OnEject, if set, is called after an instance was ejected for d. It
	// runs on the goroutine that reported the failure and must not block.
	OnEject func(in *balancer.Instance, d time.Duration)
}

// Outlier is passive outlier detection on the live traffic of one pool: it
// sets [balancer.Ejected] on instances that fail repeatedly and clears it
// when their ejection time is over.
//
// Observe is on the proxy's hot path: a success is one lock-free map lookup
// and no allocation. Failures take a mutex only when they reach the
// threshold. All methods are safe for concurrent use.
type Outlier struct {
	threshold int32
	base, max time.Duration
	maxPct    int
	now       func() time.Time
	onEject   func(*balancer.Instance, time.Duration)

	states sync.Map // *balancer.Instance → *outlierState, created on first failure

	mu sync.Mutex // serialises ejection decisions, so the share cap holds
}

type outlierState struct {
	consecutive atomic.Int32

	// Guarded by Outlier.mu.
	ejections int       // current multiplier
	until     time.Time // end of the current ejection
	calmSince time.Time // last un-ejection or forgiveness
}

// NewOutlier returns a detector configured by s. It starts nothing: call
// Tick from a ticker, or Run.
func NewOutlier(s PassiveSettings) *Outlier {
	o := &Outlier{
		threshold: int32(s.ConsecutiveFailures),
		base:      s.BaseEjection,
		max:       s.MaxEjection,
		maxPct:    s.MaxEjectedPercent,
		now:       s.Now,
		onEject:   s.OnEject,
	}
	if o.threshold <= 0 {
		o.threshold = 5
	}
	if o.base <= 0 {
		o.base = 30 * time.Second
	}
	if o.max <= 0 {
		o.max = 300 * time.Second
	}
	o.max = max(o.max, o.base)
	if o.maxPct <= 0 {
		o.maxPct = 50
	}
	o.maxPct = min(o.maxPct, 100)
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// Observe records the outcome of one request to in, a member of pool.
// failed is true for connect errors, timeouts and 5xx responses.
func (o *Outlier) Observe(in *balancer.Instance, pool []*balancer.Instance, failed bool) {
	if !failed {
		if v, ok := o.states.Load(in); ok {
			st := v.(*outlierState)
			// Skipping the store when already zero keeps the cache line
			// shared between cores on the common path.
			if st.consecutive.Load() != 0 {
				st.consecutive.Store(0)
			}
		}
		return
	}
	v, ok := o.states.Load(in)
	if !ok {
		v, _ = o.states.LoadOrStore(in, &outlierState{})
	}
	st := v.(*outlierState)
	if st.consecutive.Add(1) < o.threshold || in.Flags()&balancer.Ejected != 0 {
		return
	}
	o.eject(in, st, pool)
}

func (o *Outlier) eject(in *balancer.Instance, st *outlierState, pool []*balancer.Instance) {
	o.mu.Lock()
	if in.Flags()&balancer.Ejected != 0 || st.consecutive.Load() < o.threshold {
		o.mu.Unlock() // another failure got here first, or a success reset
		return
	}
	ejected, member := 0, false
	for _, p := range pool {
		if p.Flags()&balancer.Ejected != 0 {
			ejected++
		}
		member = member || p == in
	}
	size := len(pool)
	if !member {
		size++
	}
	if (ejected+1)*100 > o.maxPct*size {
		// The cap is reached: keep serving; the next failure asks again.
		o.mu.Unlock()
		return
	}
	st.ejections++
	d := o.max
	if n := time.Duration(st.ejections); n <= o.max/o.base {
		d = min(o.base*n, o.max)
	}
	st.until = o.now().Add(d)
	st.consecutive.Store(0)
	in.SetFlag(balancer.Ejected, true)
	o.mu.Unlock()
	if o.onEject != nil {
		o.onEject(in, d)
	}
}

// Tick returns to rotation the instances of pool whose ejection is over at
// now, restarting their slow start, forgives past ejections of instances
// that stayed in rotation, and forgets instances no longer in pool. The
// gateway calls it from a ticker (or uses Run).
func (o *Outlier) Tick(now time.Time, pool []*balancer.Instance) {
	o.mu.Lock()
	defer o.mu.Unlock()
	members := make(map[*balancer.Instance]struct{}, len(pool))
	for _, in := range pool {
		members[in] = struct{}{}
		ejected := in.Flags()&balancer.Ejected != 0
		v, ok := o.states.Load(in)
		if !ok {
			if ejected {
				// Ejected before it left the pool and was forgotten; it
				// is back now.
				in.SetFlag(balancer.Ejected, false)
				in.SetJoined(now)
			}
			continue
		}
		st := v.(*outlierState)
		switch {
		case ejected && !now.Before(st.until):
			st.consecutive.Store(0)
			st.calmSince = now
			in.SetFlag(balancer.Ejected, false)
			in.SetJoined(now)
		case !ejected && st.ejections > 0 && now.Sub(st.calmSince) >= o.base:
			st.ejections--
			st.calmSince = now
		}
	}
	o.states.Range(func(k, _ any) bool {
		if _, ok := members[k.(*balancer.Instance)]; !ok {
			o.states.Delete(k)
		}
		return true
	})
}

// Run calls Tick every second (or every BaseEjection if shorter) with the
// current pool until ctx is done, then returns ctx.Err().
func (o *Outlier) Run(ctx context.Context, pool func() []*balancer.Instance) error {
	t := time.NewTicker(min(time.Second, o.base))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			o.Tick(o.now(), pool())
		}
	}
}

// Ejections returns the instance's current ejection multiplier: how many
// times it was ejected, less those forgiven. The next ejection lasts this
// plus one times BaseEjection, capped at MaxEjection.
func (o *Outlier) Ejections(in *balancer.Instance) int {
	v, ok := o.states.Load(in)
	if !ok {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return v.(*outlierState).ejections
}
