package balancer

import (
	"fmt"
	"math"
	"net/url"
	"sync/atomic"
	"time"
)

// Flag is a reason an instance is out of rotation. Several reasons may hold
// at once; an instance is available only when none does.
type Flag uint32

const (
	// Unhealthy is set by active health checks.
	Unhealthy Flag = 1 << iota
	// Ejected is set by passive (outlier) detection on live traffic.
	Ejected
	// BreakerOpen is set while the instance's circuit breaker refuses calls.
	BreakerOpen
	// Draining is set on an instance that is leaving the pool: in-flight
	// requests finish, new ones go elsewhere.
	Draining
)

// String names the set flags, for /health/detailed and logs.
func (f Flag) String() string {
	if f == 0 {
		return "up"
	}
	s := ""
	for _, n := range [...]struct {
		f    Flag
		name string
	}{{Unhealthy, "unhealthy"}, {Ejected, "ejected"}, {BreakerOpen, "breaker_open"}, {Draining, "draining"}} {
		if f&n.f != 0 {
			if s != "" {
				s += ","
			}
			s += n.name
		}
	}
	return s
}

// Instance is one backend of a service: an address plus the live statistics
// that the proxy updates and balancing policies read. The statistics live
// here, not in a policy, so that every policy can read them and a change of
// policy or membership keeps them.
//
// All methods are safe for concurrent use and lock-free.
type Instance struct {
	// URL is the base URL requests are sent to (scheme and host; a path is
	// ignored). It must not be modified after the instance is first used.
	URL *url.URL
	// Weight is the instance's relative share for weighted policies.
	// Values below 1 are taken as 1. It must not be modified after the
	// instance is first used.
	Weight int

	flags    atomic.Uint32
	inflight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64

	// Peak-EWMA latency (nanoseconds as float64 bits), an EWMA of the
	// failure rate (0..1, float64 bits) and the time of the last End (unix
	// nanos; 0 before the first).
	ewma     atomic.Uint64
	errRate  atomic.Uint64
	lastObs  atomic.Int64
	joinedAt atomic.Int64 // unix nanos; start of slow start
}

// NewInstance parses rawURL (an absolute http or https URL) into an instance
// with the given weight. A weight below 1 is taken as 1.
func NewInstance(rawURL string, weight int) (*Instance, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("balancer: instance URL %q: %w", rawURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("balancer: instance URL %q is not an absolute http(s) URL", rawURL)
	}
	if weight < 1 {
		weight = 1
	}
	return &Instance{URL: &url.URL{Scheme: u.Scheme, Host: u.Host}, Weight: weight}, nil
}

// MustInstance is NewInstance for URLs known to be valid; it panics on error.
func MustInstance(rawURL string, weight int) *Instance {
	in, err := NewInstance(rawURL, weight)
	if err != nil {
		panic(err)
	}
	return in
}

// String returns the instance's host:port, its name in logs and metrics.
func (in *Instance) String() string { return in.URL.Host }

// Available reports whether the instance may receive new requests.
func (in *Instance) Available() bool { return in.flags.Load() == 0 }

// Flags returns the reasons the instance is out of rotation (0 when none).
func (in *Instance) Flags() Flag { return Flag(in.flags.Load()) }

// SetFlag sets (on true) or clears (on false) one reason for being out of
// rotation. It reports whether the instance's availability changed.
func (in *Instance) SetFlag(f Flag, on bool) (changed bool) {
	for {
		old := in.flags.Load()
		nw := old &^ uint32(f)
		if on {
			nw = old | uint32(f)
		}
		if old == nw {
			return false
		}
		if in.flags.CompareAndSwap(old, nw) {
			return (old == 0) != (nw == 0)
		}
	}
}

// InFlight returns the number of requests currently being served.
func (in *Instance) InFlight() int64 { return in.inflight.Load() }

// Requests returns the number of completed requests.
func (in *Instance) Requests() uint64 { return in.requests.Load() }

// Failures returns the number of completed requests that failed.
func (in *Instance) Failures() uint64 { return in.failures.Load() }

// Latency returns the peak-EWMA response time as of the last observation:
// it jumps up at once on a slow response and moves towards faster ones by
// a fraction of the gap per response (see [Instance.End]), so a slow
// instance is avoided quickly and a recovered one wins traffic back.
// It is zero before the first observation. Policies read [Instance.LatencyAt],
// which also ages the estimate while the instance is idle.
func (in *Instance) Latency() time.Duration {
	return time.Duration(math.Float64frombits(in.ewma.Load()))
}

// LatencyAt returns [Instance.Latency] aged for the time the instance has
// been idle (nothing in flight) since its last observation: the estimate
// decays towards zero with a 10s time constant. An instance that policies
// stopped sending to therefore looks fast again after a while and gets a
// probe; if it is still slow, the peak rule puts it back at once. While
// requests are in flight nothing decays, so a hung instance never looks fast.
func (in *Instance) LatencyAt(now time.Time) time.Duration {
	c := clock{t: now.UnixNano()}
	return time.Duration(in.latencyAt(&c))
}

// ErrorRate returns the failure rate as of the last observation, from 0 to
// 1: an exponentially weighted average over roughly the last 20 responses,
// aged towards zero with a 10s time constant between responses.
func (in *Instance) ErrorRate() float64 { return math.Float64frombits(in.errRate.Load()) }

// ErrorRateAt returns [Instance.ErrorRate] aged, like [Instance.LatencyAt],
// for the time the instance has been idle, so failures are forgiven and an
// avoided instance is tried again.
func (in *Instance) ErrorRateAt(now time.Time) float64 {
	c := clock{t: now.UnixNano()}
	return in.errorRateAt(&c)
}

// latencyAt is LatencyAt in nanoseconds, reading the clock only when the
// instance is idle and has been observed.
func (in *Instance) latencyAt(c *clock) float64 {
	return in.idleDecay(math.Float64frombits(in.ewma.Load()), c)
}

func (in *Instance) errorRateAt(c *clock) float64 {
	return in.idleDecay(math.Float64frombits(in.errRate.Load()), c)
}

// idleDecay ages v by the idle time since the last observation.
func (in *Instance) idleDecay(v float64, c *clock) float64 {
	if v == 0 || in.inflight.Load() > 0 {
		return v
	}
	last := in.lastObs.Load()
	if last == 0 {
		return v
	}
	if dt := c.nanos() - last; dt > 0 {
		v *= math.Exp(-float64(dt) / float64(decay))
	}
	return v
}

// observed reports whether End has been called at least once.
func (in *Instance) observed() bool { return in.lastObs.Load() != 0 }

// WeightAt returns the instance's effective weight at now: Weight (at least
// 1) scaled by its slow-start ramp, which grows linearly from 10% at
// [Instance.Joined] to 100% slowStart later. Outside the ramp, or when
// slowStart <= 0 or Joined is zero, it is the full weight.
func (in *Instance) WeightAt(now time.Time, slowStart time.Duration) float64 {
	c := clock{t: now.UnixNano()}
	return float64(weightOf(in)) * in.ramp(&c, slowStart)
}

// ramp returns the slow-start factor in [minRamp, 1], reading the clock only
// for an instance that has a join time.
func (in *Instance) ramp(c *clock, slowStart time.Duration) float64 {
	j := in.joinedAt.Load()
	if j == 0 || slowStart <= 0 {
		return 1
	}
	el := c.nanos() - j
	switch {
	case el >= int64(slowStart):
		return 1
	case el <= 0:
		return minRamp
	}
	return minRamp + (1-minRamp)*float64(el)/float64(slowStart)
}

// minRamp is the share of its weight an instance gets when slow start begins.
const minRamp = 0.1

// Begin records the start of a request to the instance. Every Begin must be
// followed by exactly one End.
func (in *Instance) Begin() { in.inflight.Add(1) }

const (
	// decay is the time constant of the latency and error-rate averages.
	decay = 10 * time.Second
	// minAlpha is the least weight one response carries in the averages.
	// Time alone would give a response 1ms after the previous one a weight
	// of 1e-4, so under heavy traffic the averages would take a whole decay
	// period of responses to move; with the floor they follow roughly the
	// last 1/minAlpha = 20 responses, and under light traffic time governs.
	minAlpha = 0.05
)

// End records the end of a request that began with Begin: rtt is how long
// it took and failed whether it counts as a failure (connect error, timeout,
// 5xx). now is the completion time.
//
// Latency is a peak EWMA: a response slower than the estimate replaces it;
// a faster one moves it by α = max(1-e^(-Δt/10s), 0.05) of the gap, where
// Δt is the time since the previous response. A failed response never
// lowers the estimate: a backend that refuses connections answers fast, and
// must not look attractive for it. The error rate moves by 0.05 of the gap
// per response, after ageing by e^(-Δt/10s).
//
// Concurrent Ends each apply their own update atomically; the time stamp and
// the two averages are separate words, so simultaneous Ends may see each
// other's Δt, which only shifts the weights slightly.
func (in *Instance) End(rtt time.Duration, failed bool, now time.Time) {
	in.inflight.Add(-1)
	in.requests.Add(1)
	if failed {
		in.failures.Add(1)
	}
	t := now.UnixNano()
	if t == 0 {
		t = 1 // 0 means "never observed"
	}
	prev := in.lastObs.Swap(t)
	first := prev == 0
	age := 1.0 // e^(-Δt/τ): how much of the old averages survives the gap
	if dt := t - prev; !first && dt > 0 {
		age = math.Exp(-float64(dt) / float64(decay))
	}
	alpha := max(1-age, minAlpha)
	obs := float64(max(rtt, 0))
	for {
		old := in.ewma.Load()
		cur := math.Float64frombits(old)
		var nw float64
		switch {
		case first || obs >= cur:
			nw = obs // peak: a slow response takes effect at once
		case failed:
			nw = cur
		default:
			nw = cur + alpha*(obs-cur)
		}
		if nw == cur || in.ewma.CompareAndSwap(old, math.Float64bits(nw)) {
			break
		}
	}
	f := 0.0
	if failed {
		f = 1
	}
	for {
		old := in.errRate.Load()
		cur := math.Float64frombits(old) * age
		nw := cur + minAlpha*(f-cur)
		if in.errRate.CompareAndSwap(old, math.Float64bits(nw)) {
			break
		}
	}
}

// SetJoined marks the start of the instance's slow-start ramp (when it
// joined the pool or recovered). The zero time clears it: full weight.
func (in *Instance) SetJoined(t time.Time) {
	if t.IsZero() {
		in.joinedAt.Store(0)
		return
	}
	in.joinedAt.Store(t.UnixNano())
}

// Joined returns the start of the slow-start ramp; zero if never set.
func (in *Instance) Joined() time.Time {
	n := in.joinedAt.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
