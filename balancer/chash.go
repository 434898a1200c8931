package balancer

import (
	"cmp"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// ConsistentHash sends requests with the same key to the same instance,
// using consistent hashing with bounded loads (Mirrokni, Thorup and
// Zadimoghaddam, 2016): when an instance has c times its share of the
// requests in flight, the key's next instance clockwise on the ring takes
// the request instead, so a hot key cannot overload one backend.
//
// Each instance has Replicas × Weight points on a 64-bit ring, placed by a
// hash of its address, so every gateway replica builds the same ring and a
// key maps to the same instance everywhere. Removing an instance, or taking
// it out of rotation, moves only the keys that were on it.
//
// The ring is built for the pool of the first pick and rebuilt when the
// pool's membership changes, detected by comparing the pool with the ring's
// pointer by pointer on each pick (exact, with no Update call to forget,
// at about a nanosecond per instance). One ConsistentHash should therefore
// serve one service.
//
// The zero value is ready to use and keys on the client IP; it is safe for
// concurrent use. Fields must not be changed after the first Pick.
type ConsistentHash struct {
	// Header names the request header holding the key, such as a user or
	// tenant id. If empty, or the request lacks it, the client IP is used.
	Header string
	// KeyFunc, if not nil, returns the key and overrides Header. The client
	// IP from RemoteAddr is used when it returns "".
	KeyFunc func(*http.Request) string
	// LoadFactor is c: an instance takes a new request only while its
	// in-flight count is below c × its weighted share of all requests in
	// flight. If zero or below 1, 1.25 is used. Larger values keep keys on
	// their instance more often; smaller ones spread load more evenly.
	LoadFactor float64
	// Replicas is the number of ring points per unit of weight. If zero,
	// 128 is used; more points spread keys more evenly and cost memory.
	Replicas int

	mu   sync.Mutex // serialises rebuilding the ring
	ring atomic.Pointer[hashRing]
}

const (
	defaultLoadFactor = 1.25
	defaultReplicas   = 128
)

// hashRing is an immutable ring for one pool.
type hashRing struct {
	pool    []*Instance
	weight  []float64 // weight of pool[i]
	points  []uint64  // sorted ring positions
	owners  []int32   // owners[k] is the index in pool of points[k]
	header  string    // canonical form of ConsistentHash.Header
	loadCap float64
}

// Pick implements [Balancer].
func (b *ConsistentHash) Pick(r *http.Request, pool []*Instance) (*Instance, error) {
	if len(pool) == 0 {
		return nil, ErrNoInstance
	}
	g := b.ringFor(pool)
	return g.pick(hashString(b.key(r, g.header)))
}

// key returns the request's hash key.
func (b *ConsistentHash) key(r *http.Request, header string) string {
	if r == nil {
		return ""
	}
	if b.KeyFunc != nil {
		if k := b.KeyFunc(r); k != "" {
			return k
		}
	} else if header != "" {
		if v := r.Header[header]; len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// pick walks the ring clockwise from h to the first available instance
// that is below its load bound.
func (g *hashRing) pick(h uint64) (*Instance, error) {
	n := len(g.points)
	start, _ := slices.BinarySearch(g.points, h)
	var (
		totals         bool    // whether the sums below are computed
		inflight, wsum float64 // over available instances
		best           *Instance
		bestLoad       = math.Inf(1)
		last           = int32(-1)
	)
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		o := g.owners[i]
		if o == last {
			continue
		}
		last = o
		in := g.pool[o]
		if !in.Available() {
			if !totals {
				totals = true
				inflight, wsum = g.sums()
				if wsum == 0 {
					return nil, ErrNoInstance
				}
			}
			continue
		}
		f := in.InFlight()
		if f <= 0 {
			return in, nil // every bound is at least 1
		}
		if !totals {
			totals = true
			inflight, wsum = g.sums()
		}
		// The bound counts the new request: ceil(c × (m+1) × w/W).
		if float64(f) < math.Ceil(g.loadCap*(inflight+1)*g.weight[o]/wsum) {
			return in, nil
		}
		if l := float64(f) / g.weight[o]; l < bestLoad {
			best, bestLoad = in, l
		}
	}
	if best == nil {
		return nil, ErrNoInstance
	}
	// Only reachable when loads change under the walk.
	return best, nil
}

// sums returns the in-flight count and weight of the available instances.
func (g *hashRing) sums() (inflight, weight float64) {
	for i, in := range g.pool {
		if in.Available() {
			inflight += float64(max(in.InFlight(), 0))
			weight += g.weight[i]
		}
	}
	return inflight, weight
}

// ringFor returns the ring for pool, building it if the membership changed.
func (b *ConsistentHash) ringFor(pool []*Instance) *hashRing {
	if g := b.ring.Load(); g != nil && samePool(g.pool, pool) {
		return g
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if g := b.ring.Load(); g != nil && samePool(g.pool, pool) {
		return g
	}
	g := b.build(pool)
	b.ring.Store(g)
	return g
}

func (b *ConsistentHash) build(pool []*Instance) *hashRing {
	reps := b.Replicas
	if reps <= 0 {
		reps = defaultReplicas
	}
	c := b.LoadFactor
	if c < 1 {
		c = defaultLoadFactor
	}
	g := &hashRing{
		pool:    append([]*Instance(nil), pool...),
		weight:  make([]float64, len(pool)),
		loadCap: c,
	}
	if b.Header != "" {
		g.header = textproto.CanonicalMIMEHeaderKey(b.Header)
	}
	total := 0
	for i, in := range pool {
		w := weightOf(in)
		g.weight[i] = float64(w)
		total += int(w) * reps
	}
	type point struct {
		h     uint64
		owner int32
	}
	pts := make([]point, 0, total)
	for i, in := range pool {
		base := fnv1a(fnvOffset, in.String())
		for r := range int(weightOf(in)) * reps {
			pts = append(pts, point{mix64(fnv1aUint(base, uint64(r))), int32(i)})
		}
	}
	// Ties between equal points are broken by address, so every replica
	// orders them alike whatever the pool order.
	slices.SortFunc(pts, func(x, y point) int {
		if c := cmp.Compare(x.h, y.h); c != 0 {
			return c
		}
		return strings.Compare(pool[x.owner].String(), pool[y.owner].String())
	})
	g.points = make([]uint64, len(pts))
	g.owners = make([]int32, len(pts))
	for k, p := range pts {
		g.points[k], g.owners[k] = p.h, p.owner
	}
	return g
}

// FNV-1a, written out so that hashing a string does not allocate; the
// ring must be identical on every gateway, so a per-process seeded hash
// such as hash/maphash will not do.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv1a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func fnv1aUint(h, v uint64) uint64 {
	for range 8 {
		h ^= v & 0xff
		h *= fnvPrime
		v >>= 8
	}
	return h
}

// mix64 is MurmurHash3's finaliser. FNV alone leaves similar inputs (the
// replicas of one address, sequential user ids) close together on the
// ring; the finaliser spreads them.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

func hashString(s string) uint64 { return mix64(fnv1a(fnvOffset, s)) }
