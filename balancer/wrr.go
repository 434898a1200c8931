package balancer

import (
	"net/http"
	"sync"
	"time"
)

// WeightedRoundRobin hands requests to available instances in proportion to
// their weights, smoothly as nginx does: weights 5, 1, 1 give the sequence
// a a b a c a a rather than a burst of five requests to a. Each pick adds
// every instance's effective weight to its current weight and takes the
// instance with the largest current weight, which then gives back the total.
//
// The zero value is ready to use; it is safe for concurrent use (a short
// mutex guards the current weights). Fields must not be changed after the
// first Pick. One WeightedRoundRobin should serve one service: the current
// weights follow the pool it is given, and are carried over for the
// instances that remain when the pool changes.
type WeightedRoundRobin struct {
	// SlowStart is how long a newly joined instance (see
	// [Instance.SetJoined]) takes to ramp from 10% to 100% of its weight.
	// If zero, [DefaultSlowStart] is used; a negative value disables it.
	SlowStart time.Duration
	// Now returns the current time for slow start. If nil, time.Now is used.
	Now func() time.Time

	mu    sync.Mutex
	peers []wrrPeer // aligned with the last pool seen
}

type wrrPeer struct {
	in  *Instance
	cur int64
}

// wrrScale turns the slow-start factor into integer weights fine enough
// for a smooth ramp while keeping the arithmetic exact.
const wrrScale = 1000

// Pick implements [Balancer].
func (b *WeightedRoundRobin) Pick(_ *http.Request, pool []*Instance) (*Instance, error) {
	if len(pool) == 0 {
		return nil, ErrNoInstance
	}
	slow := slowStartOf(b.SlowStart)
	c := clock{now: b.Now}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.same(pool) {
		b.rebuild(pool)
	}
	var total int64
	best := -1
	for i := range b.peers {
		p := &b.peers[i]
		if !p.in.Available() {
			continue
		}
		w := weightOf(p.in) * wrrScale
		if f := p.in.ramp(&c, slow); f < 1 {
			w = max(int64(float64(w)*f), 1)
		}
		p.cur += w
		total += w
		if best < 0 || p.cur > b.peers[best].cur {
			best = i
		}
	}
	if best < 0 {
		return nil, ErrNoInstance
	}
	b.peers[best].cur -= total
	return b.peers[best].in, nil
}

// same reports whether pool holds the instances of the last pick in the
// same order. Comparing every pointer is exact and, at one load per
// instance, cheap next to the weight loop that follows.
func (b *WeightedRoundRobin) same(pool []*Instance) bool {
	if len(pool) != len(b.peers) {
		return false
	}
	for i, in := range pool {
		if b.peers[i].in != in {
			return false
		}
	}
	return true
}

// rebuild aligns the peers with pool, keeping the current weight of the
// instances that stay, so a membership change does not restart the cycle.
func (b *WeightedRoundRobin) rebuild(pool []*Instance) {
	old := make(map[*Instance]int64, len(b.peers))
	for _, p := range b.peers {
		old[p.in] = p.cur
	}
	peers := make([]wrrPeer, len(pool))
	for i, in := range pool {
		peers[i] = wrrPeer{in: in, cur: old[in]}
	}
	b.peers = peers
}
