package ratelimit

import (
	"context"
	"math/bits"
	"time"
)

// SlidingWindow limits each key to Limit cost units per Window with a
// weighted two-window counter. Windows are aligned to the Unix epoch; a
// request at fraction f of the current window counts
//
//	previous × (1 − f) + current
//
// against Limit, as if the previous window's requests had been spread
// evenly over it, with the previous window's share rounded to the nearest
// whole request. A client that spends its allowance at the end of one
// window therefore finds almost nothing left at the start of the next,
// unlike a fixed window that would let it pass twice the limit around the
// boundary. For traffic that is steady over a window the count is exact.
// Because the estimate assumes even spreading, a window's worth of requests
// bunched late in one window and a second one spread over the next can still
// pass up to twice Limit within one sliding window; use [TokenBucket] when a
// hard bound on any interval matters more than the per-window count.
//
// State is 16 bytes per key (window start and two counters, keyed by an
// 8-byte hash; see [Settings] for the memory bounds). Arithmetic is exact
// integer nanoseconds, so RetryAfter is the precise earliest time a request
// of the same cost would pass.
//
// A SlidingWindow is safe for concurrent use. Keys are spread over up to 64
// shards, each with its own mutex, and AllowAt does not allocate for a key
// it already tracks. It starts no goroutine and needs no Close.
type SlidingWindow struct {
	limit  uint64
	window uint64 // ns
	now    func() time.Time
	t      *table[swState]
}

// swState is one key's counters. Counts are uint32 because Limit is capped
// at 2^32-1 and only allowed requests are counted.
type swState struct {
	start int64 // unix ns at which cur's window began
	cur   uint32
	prev  uint32 // count of the window before start
}

func (s swState) stamp() int64   { return s.start }
func (s swState) weight() uint64 { return uint64(s.cur) + uint64(s.prev) }

// NewSlidingWindow returns an in-memory sliding-window limiter. It returns
// an error wrapping ErrInvalidSettings if s is out of range. Burst is not
// used.
func NewSlidingWindow(s Settings) (*SlidingWindow, error) {
	s, err := s.WithDefaults()
	if err != nil {
		return nil, err
	}
	w := int64(s.Window)
	return &SlidingWindow{
		limit:  uint64(s.Limit),
		window: uint64(w),
		now:    s.Now,
		// A key's counters stop mattering two windows after its current
		// window began: by then both have slid out.
		t: newTable[swState](s.MaxKeys, s.IdleTTL, 2*w),
	}, nil
}

// Allow implements [Limiter] at the time given by Settings.Now. It never
// returns an error; ctx is not used.
func (l *SlidingWindow) Allow(_ context.Context, key string, cost int) (Decision, error) {
	return l.AllowAt(l.now(), key, cost), nil
}

// Len returns the number of keys tracked, including idle keys not yet swept.
func (l *SlidingWindow) Len() int { return l.t.Len() }

// AllowAt is Allow at time now, for callers and tests that manage time
// themselves.
func (l *SlidingWindow) AllowAt(now time.Time, key string, cost int) Decision {
	c := uint64(1)
	if cost > 1 {
		c = uint64(cost)
	}
	W := l.window
	n := now.UnixNano()
	start := n - floorMod(n, int64(W))

	sh, h := l.t.lock(key)
	defer sh.mu.Unlock()
	l.t.sweep(sh, n)

	st, ok := sh.m[h]
	var prev, cur uint64
	switch {
	case !ok:
	case st.start == start:
		prev, cur = uint64(st.prev), uint64(st.cur)
	case st.start == start-int64(W):
		prev = uint64(st.cur)
	case st.start > start:
		// The wall clock stepped back into an earlier window. Judge the
		// request at the start of the newest window seen, which counts all
		// of the previous window: never more lenient than the truth.
		start, n = st.start, st.start
		prev, cur = uint64(st.prev), uint64(st.cur)
	}
	e := uint64(n - start) // elapsed in the window, [0, W)
	rest := W - e          // left in the window, (0, W]
	L := l.limit

	d := Decision{Limit: int(L)}
	// Allowed when prev×rest/W + cur + c < L + ½, that is when
	// 2×prev×rest < (2×(L−cur−c)+1)×W, in 128 bits so that no Window or
	// Limit can overflow. Counting the previous window to the nearest whole
	// request (rather than its exact fraction, or rounded down) keeps a
	// steady client at exactly Limit per window at any Limit: the exact
	// fraction leaves part of a request unused at the end of every window
	// (half the rate at Limit 1), rounding down lets a Limit-1 client pass
	// twice around a boundary.
	if c <= L && cur+c <= L && !mulLE(2*(L-cur-c)+1, W, 2*prev, rest) {
		cur += c
		d.Allowed = true
		l.t.put(sh, h, swState{start: start, cur: uint32(cur), prev: uint32(prev)}, ok)
	} else {
		d.RetryAfter = time.Duration(l.retryAfter(prev, cur, c, rest))
	}
	// The previous window's share, rounded half up: ⌊(2×prev×rest + W) / 2W⌋.
	hi, lo := bits.Mul64(2*prev, rest)
	lo, carry := bits.Add64(lo, W, 0)
	q, _ := bits.Div64(hi+carry, lo, 2*W)
	if used := cur + q; used < L {
		d.Remaining = int(L - used)
	}
	switch {
	case cur > 0:
		d.Reset = time.Duration(rest + W)
	case prev > 0:
		d.Reset = time.Duration(rest)
	}
	return d
}

// retryAfter returns the wait in ns until a request of cost c passes, for a
// request just denied with counters prev and cur and rest ns left in the
// window.
func (l *SlidingWindow) retryAfter(prev, cur, c, rest uint64) uint64 {
	W, L := l.window, l.limit
	if c > L {
		return W // never admissible; see Decision.RetryAfter
	}
	if cur+c <= L {
		// Wait within this window until prev's weight has shrunk enough:
		// the first elapsed time e' with 2×prev×(W−e') < (2×(L−cur−c)+1)×W.
		// The request was denied, so the ceiling below is at most rest.
		return rest - ceilDiv(2*(L-cur-c)+1, W, 2*prev) + 1
	}
	// Wait for the next window, where cur becomes the weighted previous
	// count: the first g with 2×cur×(W−g) < (2×(L−c)+1)×W. As cur > L−c,
	// the ceiling below is below W, so g >= 1.
	return rest + W - ceilDiv(2*(L-c)+1, W, 2*cur) + 1
}

// ceilDiv returns ⌈a×b/d⌉ for a×b <= d×2^64 − 1 (so the quotient fits).
func ceilDiv(a, b, d uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	q, r := bits.Div64(hi, lo, d)
	if r != 0 {
		q++
	}
	return q
}

// mulLE reports whether a×b <= c×d without overflow.
func mulLE(a, b, c, d uint64) bool {
	h1, l1 := bits.Mul64(a, b)
	h2, l2 := bits.Mul64(c, d)
	return h1 < h2 || h1 == h2 && l1 <= l2
}

// floorMod is n mod m rounded towards negative infinity, for times before
// 1970 that an injected clock may produce.
func floorMod(n, m int64) int64 {
	r := n % m
	if r < 0 {
		r += m
	}
	return r
}
