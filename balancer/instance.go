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
	// Weight is the instance's relative share for weighted policies. It is
	// at least 1.
	Weight int

	flags    atomic.Uint32
	inflight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64

	// Peak-EWMA latency (nanoseconds as float64 bits) and its last update
	// time, and an EWMA of the failure rate (0..1, float64 bits).
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

// Latency returns the peak-EWMA response time: it jumps up at once on a slow
// response and decays towards faster ones, so a slow instance is avoided
// quickly and a recovered one wins traffic back within a few decay periods.
// It is zero before the first observation.
func (in *Instance) Latency() time.Duration {
	return time.Duration(math.Float64frombits(in.ewma.Load()))
}

// ErrorRate returns a decaying average of the failure rate, from 0 to 1.
func (in *Instance) ErrorRate() float64 { return math.Float64frombits(in.errRate.Load()) }

// Begin records the start of a request to the instance. Every Begin must be
// followed by exactly one End.
func (in *Instance) Begin() { in.inflight.Add(1) }

// decay is the time constant of the latency and error-rate averages.
const decay = 10 * time.Second

// End records the end of a request that began with Begin: rtt is how long
// it took and failed whether it counts as a failure (connect error, timeout,
// 5xx). now is the completion time.
func (in *Instance) End(rtt time.Duration, failed bool, now time.Time) {
	in.inflight.Add(-1)
	in.requests.Add(1)
	if failed {
		in.failures.Add(1)
	}
	t := now.UnixNano()
	prev := in.lastObs.Swap(t)
	w := 1.0
	if prev != 0 && t > prev {
		// Weight of the old average, by elapsed time: e^(-Δt/τ).
		w = math.Exp(-float64(t-prev) / float64(decay))
	} else if prev != 0 {
		w = 1
	}
	obs := float64(rtt)
	for {
		old := in.ewma.Load()
		cur := math.Float64frombits(old)
		var nw float64
		switch {
		case old == 0 || obs > cur:
			nw = obs // peak: a slow response takes effect at once
		default:
			nw = cur*w + obs*(1-w)
			if prev == 0 || w == 1 {
				nw = cur*0.9 + obs*0.1
			}
		}
		if in.ewma.CompareAndSwap(old, math.Float64bits(nw)) {
			break
		}
	}
	f := 0.0
	if failed {
		f = 1
	}
	a := 1 - w
	if a < 0.05 {
		a = 0.05 // each observation moves the average a little at least
	}
	for {
		old := in.errRate.Load()
		cur := math.Float64frombits(old)
		nw := cur*(1-a) + f*a
		if in.errRate.CompareAndSwap(old, math.Float64bits(nw)) {
			break
		}
	}
}

// SetJoined marks the start of the instance's slow-start ramp (when it
// joined the pool or recovered).
func (in *Instance) SetJoined(t time.Time) { in.joinedAt.Store(t.UnixNano()) }

// Joined returns the start of the slow-start ramp; zero if never set.
func (in *Instance) Joined() time.Time {
	n := in.joinedAt.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
