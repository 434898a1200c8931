package balancer

import (
	"net/http"
	"time"
)

// Latency sends requests to the instance expected to answer soonest.
//
// It compares two random available instances (power of two choices) by
// latency × (in-flight + 1), with latency the instance's peak-EWMA estimate
// aged while idle ([Instance.LatencyAt]). Two choices rather than the
// global minimum because a minimum is a herd: every concurrent pick sees the
// same fastest instance until its in-flight count catches up. The in-flight
// factor spreads load before the latency shows it, and the ageing gives a
// recovered instance a probe, after which its fresh observations win
// traffic back. An instance with no observation yet is taken to be as fast
// as the one it is compared with, so the comparison falls back to in-flight
// counts and ties go to the new instance: it is explored without a burst.
// Weights are ignored; [HealthScore] weighs them.
//
// The zero value is ready to use; it is safe for concurrent use. Fields must
// not be changed after the first Pick.
type Latency struct {
	// Now returns the current time for ageing. If nil, time.Now is used.
	Now func() time.Time
}

// Pick implements [Balancer].
func (b *Latency) Pick(_ *http.Request, pool []*Instance) (*Instance, error) {
	x, y := pickTwo(pool)
	if x == nil {
		return nil, ErrNoInstance
	}
	if y == nil {
		return x, nil
	}
	c := clock{now: b.Now}
	return prefer(scoreOf(x, &c, 1), scoreOf(y, &c, 1)), nil
}

// DefaultErrorPenalty is HealthScore's error penalty when its ErrorPenalty
// field is zero.
const DefaultErrorPenalty = 10

// HealthScore is the policy for services with several instances: it weighs
// speed, load, recent failures and weight at once.
//
// It draws two available instances at random in proportion to their
// effective weights (Weight scaled by slow start, [Instance.WeightAt]) and
// takes the one of lower cost
//
//	latency × (1 + in-flight / effective weight) × (1 + ErrorPenalty × error rate)
//
// with latency and error rate aged while idle ([Instance.LatencyAt],
// [Instance.ErrorRateAt]); unobserved instances are treated as in [Latency].
//
// Under load the in-flight term dominates and settles where in-flight
// counts are in proportion to weights, so instances of equal speed get
// traffic in proportion to weight. Two choices drawn uniformly would cap
// any instance at 2/n of the traffic, below what skewed weights ask for
// (10, 1, 1 asks 83% of one instance, where the cap is 67%); drawing them
// by weight lifts the cap. The second instance is drawn from the others, so
// a failing instance is never forced on a request by being drawn twice.
// When traffic is light, instances are idle at each pick and the faster one
// wins, so shares follow speed more than weight (the more common
// latency × (in-flight + 1) / weight would instead let a heavier instance
// win while up to weight-ratio times slower). For an exact split at any
// load, such as a canary, use [WeightedRoundRobin] or [Random].
//
// The zero value is ready to use; it is safe for concurrent use. Fields must
// not be changed after the first Pick. One HealthScore should serve one
// service: it learns the largest weight of the pools it sees.
type HealthScore struct {
	// SlowStart is how long a newly joined instance takes to ramp from 10%
	// to 100% of its weight. If zero, [DefaultSlowStart] is used; a
	// negative value disables it.
	SlowStart time.Duration
	// ErrorPenalty is how much a 100% error rate multiplies the cost, less
	// one: with 10, an instance failing half its requests costs 6 times as
	// much, and one failing 10% twice as much. If zero,
	// [DefaultErrorPenalty] is used; a negative value ignores errors.
	ErrorPenalty float64
	// Now returns the current time for ageing and slow start. If nil,
	// time.Now is used.
	Now func() time.Time

	weighted weightedDraw
}

// Pick implements [Balancer].
func (b *HealthScore) Pick(_ *http.Request, pool []*Instance) (*Instance, error) {
	slow := slowStartOf(b.SlowStart)
	c := clock{now: b.Now}
	x, wx := b.weighted.draw(pool, &c, slow, nil)
	if x == nil {
		return nil, ErrNoInstance
	}
	y, wy := b.weighted.draw(pool, &c, slow, x)
	if y == nil {
		return x, nil
	}
	k := b.ErrorPenalty
	switch {
	case k == 0:
		k = DefaultErrorPenalty
	case k < 0:
		k = 0
	}
	return prefer(b.score(x, &c, wx, k), b.score(y, &c, wy, k)), nil
}

func (b *HealthScore) score(in *Instance, c *clock, w, k float64) score {
	s := scoreOf(in, c, 1)
	s.load = 1 + (s.load-1)/w
	if k > 0 {
		s.factor += k * in.errorRateAt(c)
	}
	return s
}

// score is what Latency and HealthScore compare.
type score struct {
	in     *Instance
	lat    float64 // aged latency in ns, at least minLatency; 0 if unknown
	load   float64 // load multiplier: in-flight + 1 for Latency
	factor float64 // policy-specific multiplier
}

// minLatency keeps an estimate that aged towards zero from erasing the
// load and error factors it is multiplied with.
const minLatency = 1 // ns

func scoreOf(in *Instance, c *clock, factor float64) score {
	s := score{in: in, load: float64(max(in.InFlight(), 0) + 1), factor: factor}
	if in.observed() {
		s.lat = max(in.latencyAt(c), minLatency)
	}
	return s
}

// prefer returns the instance of lower cost. x is the random first choice,
// so returning it on a tie breaks ties at random.
func prefer(x, y score) *Instance {
	lx, ly := x.lat, y.lat
	switch {
	case lx == 0 && ly == 0:
		lx, ly = 1, 1
	case lx == 0:
		lx = ly
	case ly == 0:
		ly = lx
	}
	cx, cy := lx*x.load*x.factor, ly*y.load*y.factor
	if cy < cx || (cy == cx && y.lat == 0 && x.lat != 0) {
		return y.in
	}
	return x.in
}
