package balancer

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// clock reads the time at most once per Pick, and only if a policy needs
// it: most picks in steady state never do.
type clock struct {
	now func() time.Time // nil means time.Now
	t   int64            // unix nanos; 0 until read
}

func (c *clock) nanos() int64 {
	if c.t == 0 {
		if c.now != nil {
			c.t = c.now().UnixNano()
		} else {
			c.t = time.Now().UnixNano()
		}
	}
	return c.t
}

// weightOf returns in.Weight, at least 1.
func weightOf(in *Instance) int64 {
	if in.Weight < 1 {
		return 1
	}
	return int64(in.Weight)
}

// DefaultSlowStart is the slow-start period of the weighted policies when
// their SlowStart field is zero.
const DefaultSlowStart = 30 * time.Second

// slowStartOf normalises a SlowStart field: zero is the default and a
// negative value turns slow start off.
func slowStartOf(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultSlowStart
	case d < 0:
		return 0
	}
	return d
}

// pickTwo returns two distinct available instances of pool, in random
// order, for a power-of-two-choices comparison. b is nil when only one
// instance is available and a is nil when none is.
//
// A few random draws find two available instances almost always; when many
// are out of rotation it falls back to one counting scan and then picks two
// distinct ranks, so it never loops unboundedly and never allocates.
func pickTwo(pool []*Instance) (a, b *Instance) {
	n := len(pool)
	switch n {
	case 0:
		return nil, nil
	case 1:
		if pool[0].Available() {
			return pool[0], nil
		}
		return nil, nil
	}
	for range 3 {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		if pool[i].Available() && pool[j].Available() {
			return pool[i], pool[j]
		}
	}
	m := 0
	for _, in := range pool {
		if in.Available() {
			m++
		}
	}
	if m == 0 {
		return nil, nil
	}
	x, y := rand.IntN(m), -1
	if m > 1 {
		y = rand.IntN(m - 1)
		if y >= x {
			y++
		}
	}
	k := 0
	for _, in := range pool {
		if !in.Available() {
			continue
		}
		switch k {
		case x:
			a = in
		case y:
			b = in
		}
		k++
	}
	// Flags may change between the two scans; keep whatever was found.
	if a == nil {
		a, b = b, nil
	}
	return a, b
}

// weightedDraw draws available instances with probability in proportion to
// their effective weight (Weight scaled by slow start) in O(1) expected
// time, without allocating: it proposes an instance uniformly and accepts
// it with probability effective weight / largest Weight, which is exact
// once the heaviest instance has been seen. After a few rejections (many
// instances out of rotation, skewed weights, a heaviest instance that left
// the pool, or nothing learned yet) it draws by scanning the pool once,
// which also relearns the largest Weight.
//
// It is safe for concurrent use; the zero value is ready to use.
type weightedDraw struct {
	max atomic.Int64 // largest Weight seen; 0 until the first scan
}

// draw returns an available instance of pool other than not, and its
// effective weight; nil if there is none.
func (d *weightedDraw) draw(pool []*Instance, c *clock, slow time.Duration, not *Instance) (*Instance, float64) {
	n := len(pool)
	if n == 0 {
		return nil, 0
	}
	if wmax := d.max.Load(); wmax > 0 {
		for range 8 {
			in := pool[rand.IntN(n)]
			if in == not || !in.Available() {
				continue
			}
			sw := weightOf(in)
			if sw > wmax {
				d.raise(sw)
				wmax = sw
			}
			w := float64(sw) * in.ramp(c, slow)
			if w >= float64(wmax) || rand.Float64()*float64(wmax) < w {
				return in, w
			}
		}
	}
	return d.scan(pool, c, slow, not)
}

// scan draws exactly, in two passes over pool.
func (d *weightedDraw) scan(pool []*Instance, c *clock, slow time.Duration, not *Instance) (*Instance, float64) {
	total := 0.0
	var top int64
	for _, in := range pool {
		if in.Available() {
			top = max(top, weightOf(in))
			if in != not {
				total += float64(weightOf(in)) * in.ramp(c, slow)
			}
		}
	}
	if top > 0 {
		d.max.Store(top)
	}
	if total == 0 {
		return nil, 0
	}
	r := rand.Float64() * total
	var last *Instance
	var lastW float64
	for _, in := range pool {
		if in == not || !in.Available() {
			continue
		}
		w := float64(weightOf(in)) * in.ramp(c, slow)
		if r -= w; r < 0 {
			return in, w
		}
		last, lastW = in, w
	}
	return last, lastW // rounding, or availability changed under the scan
}

// raise lifts the largest weight to w unless a larger one is known.
func (d *weightedDraw) raise(w int64) {
	for {
		old := d.max.Load()
		if old >= w || d.max.CompareAndSwap(old, w) {
			return
		}
	}
}
