package breaker

import (
	"sync"
	"sync/atomic"
	"time"
)

// numBuckets is the number of buckets a rolling window is split into.
const numBuckets = 10

// stats holds the outcomes of one closed period: a rolling window of
// bucketed counts and the current run of failures. A fresh stats is
// allocated every time the breaker closes, so late outcomes of an earlier
// period land in an object nobody reads any more instead of needing a reset
// that would race with them.
type stats struct {
	consec atomic.Int64

	// mu serialises bucket rotation only; counting is atomic.
	mu      sync.Mutex
	buckets [numBuckets]bucket
}

// bucket counts the outcomes of one bucket-long slice of time, identified
// by its absolute index round. The zero value is bucket 0 with no outcomes,
// which is a valid (empty) bucket.
type bucket struct {
	round atomic.Int64
	reqs  atomic.Int64
	fails atomic.Int64
}

// bucketIndex returns the index of the bucket holding time now: the number
// of whole widths between origin and now, rounded down.
func bucketIndex(now, origin time.Time, width time.Duration) int64 {
	d := now.Sub(origin)
	i := int64(d / width)
	if d < 0 && d%width != 0 {
		i--
	}
	return i
}

func slot(idx int64) int {
	s := idx % numBuckets
	if s < 0 {
		s += numBuckets
	}
	return int(s)
}

// record counts one outcome in bucket idx.
//
// Under concurrency an outcome may be lost or land in the wrong bucket only
// if its goroutine stalls for a whole window between reading the clock and
// counting; the breaker's decisions tolerate that.
func (s *stats) record(idx int64, failed bool) {
	b := &s.buckets[slot(idx)]
	if r := b.round.Load(); r != idx {
		if r > idx {
			return // older than the bucket's content: already outside the window
		}
		s.rotate(b, idx)
	}
	b.reqs.Add(1)
	if failed {
		b.fails.Add(1)
	}
}

// rotate empties b for bucket idx. The round is published only after the
// counts are zeroed, so a goroutine that sees round == idx counts into the
// emptied bucket.
func (s *stats) rotate(b *bucket, idx int64) {
	s.mu.Lock()
	if b.round.Load() < idx {
		b.reqs.Store(0)
		b.fails.Store(0)
		b.round.Store(idx)
	}
	s.mu.Unlock()
}

// sum returns the outcomes in the window whose newest bucket is idx.
func (s *stats) sum(idx int64) (reqs, fails int64) {
	for i := range s.buckets {
		b := &s.buckets[i]
		if r := b.round.Load(); r <= idx && r > idx-numBuckets {
			reqs += b.reqs.Load()
			fails += b.fails.Load()
		}
	}
	return reqs, fails
}
