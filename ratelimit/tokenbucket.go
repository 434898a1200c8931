package ratelimit

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// TokenBucket limits each key with the generic cell rate algorithm (GCRA),
// which behaves as a bucket of Burst tokens refilled at Limit per Window:
// after a quiet period Burst requests pass at once, then one per
// Window/Limit. Over any interval t at most Burst + t×Limit/Window pass.
//
// Instead of a token count and a refill time, GCRA keeps one timestamp per
// key, the theoretical arrival time (TAT) at which the bucket would be full
// again, so state is 8 bytes per key plus its 8-byte hash. The emission
// interval Window/Limit is rounded up to the nanosecond, which can only
// make the limiter stricter, by less than a nanosecond per request.
//
// A TokenBucket is safe for concurrent use. Keys are spread over up to 64
// shards, each with its own mutex, and AllowAt does not allocate for a key
// it already tracks. It starts no goroutine and needs no Close.
type TokenBucket struct {
	burst    int64
	interval int64 // ns per token
	tau      int64 // burst × interval: the bucket's capacity in time
	now      func() time.Time
	t        *table[tbState]
}

// tbState is the theoretical arrival time in unix ns. The bucket is full
// whenever it is not after now.
type tbState struct{ tat int64 }

func (s tbState) stamp() int64   { return s.tat }
func (s tbState) weight() uint64 { return 0 } // stamp already orders by use

// NewTokenBucket returns an in-memory GCRA limiter with a bucket of Burst
// tokens refilled at Limit per Window. It returns an error wrapping
// ErrInvalidSettings if s is out of range.
func NewTokenBucket(s Settings) (*TokenBucket, error) {
	s, err := s.WithDefaults()
	if err != nil {
		return nil, err
	}
	interval := (int64(s.Window) + int64(s.Limit) - 1) / int64(s.Limit)
	hi, tau := bits.Mul64(uint64(s.Burst), uint64(interval))
	if hi != 0 || tau > math.MaxInt64/4 {
		return nil, fmt.Errorf("%w: Burst %d × Window/Limit %v overflows", ErrInvalidSettings, s.Burst, time.Duration(interval))
	}
	return &TokenBucket{
		burst:    int64(s.Burst),
		interval: interval,
		tau:      int64(tau),
		now:      s.Now,
		// A key stops mattering once its TAT has passed: the bucket is full.
		t: newTable[tbState](s.MaxKeys, s.IdleTTL, 0),
	}, nil
}

// Allow implements [Limiter] at the time given by Settings.Now. It never
// returns an error; ctx is not used.
func (l *TokenBucket) Allow(_ context.Context, key string, cost int) (Decision, error) {
	return l.AllowAt(l.now(), key, cost), nil
}

// Len returns the number of keys tracked, including idle keys not yet swept.
func (l *TokenBucket) Len() int { return l.t.Len() }

// AllowAt is Allow at time now, for callers and tests that manage time
// themselves.
func (l *TokenBucket) AllowAt(now time.Time, key string, cost int) Decision {
	c := int64(1)
	if cost > 1 {
		c = int64(cost)
	}
	n := now.UnixNano()

	sh, h := l.t.lock(key)
	defer sh.mu.Unlock()
	l.t.sweep(sh, n)

	st, ok := sh.m[h]
	tat := max(st.tat, n) // a missing key has tat 0: a full bucket

	d := Decision{Limit: int(l.burst)}
	if c > l.burst {
		d.RetryAfter = time.Duration(l.tau) // never admissible; see Decision.RetryAfter
	} else if next := tat + c*l.interval; next-n <= l.tau {
		tat = next
		d.Allowed = true
		l.t.put(sh, h, tbState{tat: tat}, ok)
	} else {
		d.RetryAfter = time.Duration(next - n - l.tau)
	}
	// If the wall clock stepped back, tat-n may exceed tau; Remaining
	// then stays 0 until time catches up.
	if free := l.tau - (tat - n); free > 0 {
		d.Remaining = int(free / l.interval)
	}
	d.Reset = time.Duration(tat - n)
	return d
}
