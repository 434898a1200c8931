package authn

import (
	"hash/maphash"
	"math"
	"sync"
)

// tokenCache remembers verified tokens so that a client repeating the same
// token skips parsing and signature verification.
//
// Entries are keyed by a maphash of the token with a per-cache random seed
// (so keys cannot be precomputed by an attacker), and hold the full token,
// compared on every hit: a hash collision is a miss, never another
// principal. An entry is only served within [nbf, exp) — without leeway, so
// a cached token is never accepted later than its exp — and only while its
// key generation is current, so a JWKS change drops every entry verified
// with the old keys. The cache is sharded to spread lock contention and is
// bounded: a full shard evicts the soonest-expiring of a few sampled
// entries (Go map iteration starts at a random point), which drops expired
// entries first without keeping an LRU list.
type tokenCache struct {
	seed   maphash.Seed
	mask   uint64
	perCap int
	shards []cacheShard
}

type cacheShard struct {
	mu sync.Mutex
	m  map[uint64]cacheEntry
	_  [48]byte // keep neighbouring shards' mutexes off one cache line
}

type cacheEntry struct {
	token    string
	p        *Principal
	nbf, exp int64 // unix nanoseconds
	gen      uint64
}

// evictSample is how many entries a full shard looks at before evicting.
const evictSample = 5

func newTokenCache(size int) *tokenCache {
	n := 1
	for n < 16 && n*64 <= size {
		n *= 2
	}
	c := &tokenCache{
		seed:   maphash.MakeSeed(),
		mask:   uint64(n - 1),
		perCap: size / n,
		shards: make([]cacheShard, n),
	}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]cacheEntry)
	}
	return c
}

// get returns the principal cached for token at time now (unix ns), or nil.
func (c *tokenCache) get(token string, now int64, gen uint64) *Principal {
	h := maphash.String(c.seed, token)
	s := &c.shards[h&c.mask]
	s.mu.Lock()
	e, ok := s.m[h]
	if ok && now >= e.exp {
		delete(s.m, h)
		ok = false
	}
	s.mu.Unlock()
	if !ok || e.gen != gen || now < e.nbf || e.token != token {
		return nil
	}
	return e.p
}

// put caches p for token, valid in [nbf, exp) unix ns.
func (c *tokenCache) put(token string, p *Principal, nbf, exp int64, gen uint64) {
	h := maphash.String(c.seed, token)
	s := &c.shards[h&c.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[h]; !ok && len(s.m) >= c.perCap {
		var (
			victim    uint64
			victimExp int64 = math.MaxInt64
			seen      int
		)
		for k, e := range s.m {
			if e.exp <= victimExp {
				victim, victimExp = k, e.exp
			}
			if seen++; seen == evictSample {
				break
			}
		}
		delete(s.m, victim)
	}
	s.m[h] = cacheEntry{token: token, p: p, nbf: nbf, exp: exp, gen: gen}
}

// len returns the number of entries, expired ones included.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
