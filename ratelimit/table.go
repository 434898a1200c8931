package ratelimit

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"time"
)

// state is the per-key value stored by a limiter. stamp, plus the table's
// lag, tells when the state stops mattering (its allowance is fully
// restored); it also ranks keys for eviction, oldest first, with ties
// going to the key with the lower weight (the least allowance used).
type state interface {
	stamp() int64
	weight() uint64
}

const (
	maxShards = 64
	// minPerShard keeps shards from getting so small that one hot shard
	// evicts keys while others have room.
	minPerShard = 8
	// evictSample is how many keys a full shard looks at to choose the
	// oldest to evict: exact LRU would need a list (two pointers per key),
	// and sampling a few gets close at a fixed cost.
	evictSample = 8
	// minSweepEvery bounds how often a shard may scan its map for idle
	// keys, whatever IdleTTL is.
	minSweepEvery = int64(time.Second)
)

// table maps keys to states in shards, each with its own lock and map.
// Keys are stored as their 64-bit maphash under a per-table random seed,
// not as strings: the map then holds no pointers (the garbage collector
// never scans it), a key costs 8 bytes whatever its length, and the table
// never retains a caller's string. Two keys collide (and share a limit)
// with probability about n²/2^65 for n tracked keys, 3×10^-8 at a million,
// and the random seed keeps clients from crafting collisions.
type table[S state] struct {
	seed   maphash.Seed
	shift  uint  // hash >> shift picks the shard
	lag    int64 // ns from stamp until the state stops mattering
	idle   int64 // IdleTTL in ns
	every  int64 // ns between sweeps of one shard
	shards []shard[S]
}

type shard[S state] struct {
	mu        sync.Mutex
	m         map[uint64]S
	max       int   // key cap of this shard
	nextSweep int64 // unix ns; no sweep before
	// Padding puts each shard in its own 128 bytes (CPUs fetch cache lines
	// in pairs) so that goroutines working on different shards do not
	// contend for the same line.
	_ [128 - 32]byte
}

func newTable[S state](maxKeys int, idleTTL time.Duration, lag int64) *table[S] {
	n := maxShards
	for n > 1 && maxKeys/n < minPerShard {
		n /= 2
	}
	t := &table[S]{
		seed:   maphash.MakeSeed(),
		shift:  uint(64 - bits.TrailingZeros(uint(n))),
		lag:    lag,
		idle:   int64(idleTTL),
		every:  max(int64(idleTTL)/2, minSweepEvery),
		shards: make([]shard[S], n),
	}
	for i := range t.shards {
		sh := &t.shards[i]
		// Spread the remainder so the caps add up to exactly maxKeys.
		sh.max = maxKeys / n
		if i < maxKeys%n {
			sh.max++
		}
		sh.m = make(map[uint64]S)
	}
	return t
}

// lock hashes key and returns its locked shard. The caller must unlock it.
func (t *table[S]) lock(key string) (*shard[S], uint64) {
	h := maphash.String(t.seed, key)
	sh := &t.shards[t.index(h)]
	sh.mu.Lock()
	return sh, h
}

// index picks a shard from the top bits of h; the map inside hashes h
// again, so the bits used here do not skew its buckets. The mask is
// redundant but lets the compiler drop the bounds check.
func (t *table[S]) index(h uint64) uint64 {
	return h >> t.shift & uint64(len(t.shards)-1)
}

// sweep drops idle keys if the shard is due; the write path calls it so the
// table needs no background goroutine. Its cost, a scan of one shard, is
// paid once per interval per shard.
func (t *table[S]) sweep(sh *shard[S], now int64) {
	if now < sh.nextSweep {
		return
	}
	sh.nextSweep = now + t.every
	for h, s := range sh.m {
		if now-s.stamp()-t.lag >= t.idle {
			delete(sh.m, h)
		}
	}
}

// put stores s for h in sh, evicting one of the oldest keys first if h is
// new and the shard is full.
func (t *table[S]) put(sh *shard[S], h uint64, s S, exists bool) {
	if !exists && len(sh.m) >= sh.max {
		var (
			victim uint64
			oldest int64
			light  uint64
			i      int
		)
		// Map iteration starts at a random position, which makes this a
		// random sample of the shard.
		for k, v := range sh.m {
			st, w := v.stamp(), v.weight()
			if i == 0 || st < oldest || st == oldest && w < light {
				victim, oldest, light = k, st, w
			}
			if i++; i == evictSample {
				break
			}
		}
		delete(sh.m, victim)
	}
	sh.m[h] = s
}

// Len returns the number of keys held, including idle keys not yet swept.
func (t *table[S]) Len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
