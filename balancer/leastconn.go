package balancer

import (
	"math/rand/v2"
	"net/http"
)

// p2cThreshold is the pool size above which LeastConnections compares two
// random instances instead of scanning them all.
const p2cThreshold = 10

// LeastConnections sends each request to the available instance with the
// fewest requests in flight, breaking ties at random so that idle instances
// share the load. It ignores weights; [HealthScore] weighs them.
//
// Pools of up to 10 instances are scanned in full. Larger pools use the
// power of two choices (the less loaded of two random instances): O(1) per
// pick, and it avoids the herd behaviour of a full scan, where every
// concurrent pick sees the same minimum and piles onto it.
//
// The zero value is ready to use; it is safe for concurrent use and holds no
// state (randomness comes from math/rand/v2's per-thread source).
type LeastConnections struct{}

// Pick implements [Balancer].
func (b *LeastConnections) Pick(_ *http.Request, pool []*Instance) (*Instance, error) {
	if len(pool) > p2cThreshold {
		x, y := pickTwo(pool)
		switch {
		case x == nil:
			return nil, ErrNoInstance
		case y != nil && y.InFlight() < x.InFlight():
			return y, nil
		}
		return x, nil // x is a random one of the two, which breaks ties
	}
	var best *Instance
	var least int64
	ties := 0
	for _, in := range pool {
		if !in.Available() {
			continue
		}
		f := in.InFlight()
		switch {
		case best == nil || f < least:
			best, least, ties = in, f, 1
		case f == least:
			// Reservoir sampling: each of the k tied instances ends up
			// chosen with probability 1/k, without a second pass.
			ties++
			if rand.IntN(ties) == 0 {
				best = in
			}
		}
	}
	if best == nil {
		return nil, ErrNoInstance
	}
	return best, nil
}
