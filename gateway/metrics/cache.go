package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// overflowValue replaces label values once a metric reached its series cap.
const overflowValue = "_overflow"

// cache maps a small comparable key (label values, with enumerated labels as
// small integers) to the resolved child metrics for it.
//
// WithLabelValues hashes every value, takes the vector's lock and may
// allocate; the cache turns that into one lock-free sync.Map load on the hot
// path. The mutex serialises only misses and deletions, so that creating a
// child and caching it is atomic with respect to forget: otherwise a child
// deleted from the vector could stay cached and swallow every later
// observation.
//
// At most limit keys get their own children. Beyond that a key is folded to
// its overflow key and, up to limit more times, remembered as an alias so
// that repeated values stay lock-free too.
type cache[K comparable, V any] struct {
	m      sync.Map // K -> *entry[V]
	mu     sync.Mutex
	series int // keys with their own children, under mu
	alias  int // keys folded into an overflow entry, under mu

	limit    int
	create   func(K) V
	fold     func(K) K          // key used once limit is reached
	overflow prometheus.Counter // counts folded keys
}

type entry[V any] struct {
	v    V
	kind entryKind
}

type entryKind uint8

const (
	ownSeries      entryKind = iota // counted against limit
	overflowSeries                  // the fold target, allowed past limit
	aliasOf                         // a folded key pointing at an overflow entry
)

func newCache[K comparable, V any](limit int, overflow prometheus.Counter, create func(K) V, fold func(K) K) *cache[K, V] {
	return &cache[K, V]{limit: limit, create: create, fold: fold, overflow: overflow}
}

// get returns the children for k, creating them on first use.
func (c *cache[K, V]) get(k K) V {
	if e, ok := c.m.Load(k); ok {
		return e.(*entry[V]).v
	}
	return c.miss(k)
}

func (c *cache[K, V]) miss(k K) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m.Load(k); ok {
		return e.(*entry[V]).v
	}
	if c.series < c.limit {
		v := c.create(k)
		c.m.Store(k, &entry[V]{v: v, kind: ownSeries})
		c.series++
		return v
	}
	c.overflow.Inc()
	fk := c.fold(k)
	var v V
	if e, ok := c.m.Load(fk); ok {
		v = e.(*entry[V]).v
	} else {
		// The overflow key is the one key allowed past the limit, so the
		// cap holds at limit+1 per enumerated-label combination.
		v = c.create(fk)
		c.m.Store(fk, &entry[V]{v: v, kind: overflowSeries})
	}
	if c.alias < c.limit {
		c.m.Store(k, &entry[V]{v: v, kind: aliasOf})
		c.alias++
	}
	return v
}

// forget drops every cached key for which match is true, after calling
// deleteSeries (which removes the same series from the vectors) under the
// same lock as miss. When an overflow entry goes, every alias goes with it,
// since aliases would otherwise keep feeding the deleted child.
func (c *cache[K, V]) forget(match func(K) bool, deleteSeries func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	deleteSeries()
	droppedOverflow := false
	c.m.Range(func(key, value any) bool {
		if k := key.(K); match(k) {
			droppedOverflow = c.drop(k, value.(*entry[V])) == overflowSeries || droppedOverflow
		}
		return true
	})
	if droppedOverflow {
		c.m.Range(func(key, value any) bool {
			if e := value.(*entry[V]); e.kind == aliasOf {
				c.drop(key.(K), e)
			}
			return true
		})
	}
}

func (c *cache[K, V]) drop(k K, e *entry[V]) entryKind {
	c.m.Delete(k)
	switch e.kind {
	case ownSeries:
		c.series--
	case aliasOf:
		c.alias--
	}
	return e.kind
}
