package balancer

import (
	"net/http"
	"time"
)

// Random picks an available instance at random, with probability in
// proportion to its effective weight (Weight scaled by slow start); with
// equal weights it is uniform. Picks share no state but the largest weight,
// learned once, so it scales with concurrency, and independent gateways
// using it do not synchronise into bursts as round robins can.
//
// A pick takes O(1) expected time whatever the pool size: it proposes an
// instance uniformly and accepts it with probability weight / largest
// weight, falling back to one scan of the pool after a few rejections.
//
// The zero value is ready to use; it is safe for concurrent use. Fields must
// not be changed after the first Pick. One Random should serve one service:
// it learns the largest weight of the pools it sees.
type Random struct {
	// SlowStart is how long a newly joined instance takes to ramp from 10%
	// to 100% of its weight. If zero, [DefaultSlowStart] is used; a
	// negative value disables it.
	SlowStart time.Duration
	// Now returns the current time for slow start. If nil, time.Now is used.
	Now func() time.Time

	weighted weightedDraw
}

// Pick implements [Balancer].
func (b *Random) Pick(_ *http.Request, pool []*Instance) (*Instance, error) {
	c := clock{now: b.Now}
	in, _ := b.weighted.draw(pool, &c, slowStartOf(b.SlowStart), nil)
	if in == nil {
		return nil, ErrNoInstance
	}
	return in, nil
}
