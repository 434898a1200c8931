// Package ratelimit decides whether a request identified by a key (a client
// IP, an API key, a route) may proceed.
//
// A [Limiter] is one small interface returning a [Decision] that carries
// what HTTP rate-limit headers need (limit, remaining, reset, retry-after).
// This package ships two in-memory limiters, safe for concurrent use and
// allocation-free on the decision path:
//
//   - [SlidingWindow] counts requests per fixed window and weighs the
//     previous window by how much of it still overlaps the sliding window,
//     so a client cannot double its rate by bursting on both sides of a
//     window boundary.
//   - [TokenBucket] is the generic cell rate algorithm (GCRA): a bucket of
//     Burst tokens refilled at Limit per Window, stored as a single
//     timestamp per key.
//
// Both keep state per key in a sharded table bounded by [Settings].MaxKeys
// and [Settings].IdleTTL, so a flood of distinct keys (random source IPs)
// cannot exhaust memory. Each gateway replica counts on its own; package
// redisstore provides the same algorithms on a shared Redis for a limit that
// holds across replicas.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Limiter decides whether a request identified by key may proceed.
type Limiter interface {
	// Allow takes cost units (cost <= 0 means 1) from key's allowance. It
	// must be safe for concurrent use. A non-nil error means the decision
	// could not be made (for example, the store is unreachable); the
	// returned Decision then says what the implementation's failure policy
	// chose.
	Allow(ctx context.Context, key string, cost int) (Decision, error)
}

// Decision is the outcome of one call to Allow, with what a client needs to
// pace itself (the RateLimit-* and Retry-After headers).
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Limit is the allowance: requests per window for a sliding window,
	// the bucket size (Burst) for a token bucket.
	Limit int
	// Remaining is what is left of the allowance after this decision, >= 0.
	Remaining int
	// Reset is how long until, without further requests, the whole
	// allowance is back: for a token bucket, until the bucket is full; for
	// a sliding window, until the windows holding counted requests have
	// slid out.
	Reset time.Duration
	// RetryAfter is, when denied, how long until a request of the same
	// cost would be allowed; it is 0 when allowed. A cost above Limit can
	// never be allowed; its RetryAfter is then the longest wait of any
	// admissible request, so clients back off instead of retrying at once.
	RetryAfter time.Duration
}

// Err returns nil when d allows the request and ErrLimited otherwise,
// for callers that prefer the error form.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	return ErrLimited
}

var (
	// ErrLimited reports a denied request, for callers that want an error
	// form of a Decision (see [Decision.Err]).
	ErrLimited = errors.New("ratelimit: limit exceeded")
	// ErrInvalidSettings is wrapped by constructors rejecting Settings.
	ErrInvalidSettings = errors.New("ratelimit: invalid settings")
)

// Default values used for zero Settings fields.
const (
	DefaultWindow  = time.Second
	DefaultMaxKeys = 100_000
	DefaultIdleTTL = 10 * time.Minute
)

// Settings configures a limiter. Only Limit is required; the zero value of
// every other field selects a documented default.
type Settings struct {
	// Limit is the number of requests (cost units) allowed per Window.
	// Required: it must be between 1 and 2^32-1.
	Limit int
	// Window is the period Limit applies to. If zero, 1s is used.
	Window time.Duration
	// Burst is, for a token bucket only, the bucket size: how many
	// requests may pass at once after a quiet period. If zero, Limit is
	// used.
	Burst int

	// MaxKeys is the most keys an in-memory limiter tracks. When full, a
	// new key evicts one of the oldest, an approximation of least recently
	// used. If zero, 100000 is used.
	MaxKeys int
	// IdleTTL is how long an in-memory limiter remembers an idle key. Idle
	// time counts from when the key's allowance is fully restored, so
	// forgetting a key never changes a decision: it returns with the full
	// allowance it would have had anyway. Idle keys are swept by the
	// requests that touch their shard, about every IdleTTL/2 (at least 1s)
	// per shard. If zero, 10m is used.
	IdleTTL time.Duration

	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

// WithDefaults returns s with zero fields replaced by their defaults. It
// returns an error wrapping ErrInvalidSettings if a field is out of range.
// Constructors call it; it is exported for stores in other packages and for
// configuration code that wants to show the effective values.
func (s Settings) WithDefaults() (Settings, error) {
	switch {
	case s.Limit <= 0 || uint64(s.Limit) > math.MaxUint32:
		return s, fmt.Errorf("%w: Limit is %d, want 1 to 2^32-1", ErrInvalidSettings, s.Limit)
	case s.Window < 0:
		return s, fmt.Errorf("%w: Window is %v, want >= 0", ErrInvalidSettings, s.Window)
	case s.Burst < 0 || uint64(s.Burst) > math.MaxUint32:
		return s, fmt.Errorf("%w: Burst is %d, want 0 to 2^32-1", ErrInvalidSettings, s.Burst)
	case s.MaxKeys < 0:
		return s, fmt.Errorf("%w: MaxKeys is %d, want >= 0", ErrInvalidSettings, s.MaxKeys)
	case s.IdleTTL < 0:
		return s, fmt.Errorf("%w: IdleTTL is %v, want >= 0", ErrInvalidSettings, s.IdleTTL)
	}
	if s.Window == 0 {
		s.Window = DefaultWindow
	}
	if s.Burst == 0 {
		s.Burst = s.Limit
	}
	if s.MaxKeys == 0 {
		s.MaxKeys = DefaultMaxKeys
	}
	if s.IdleTTL == 0 {
		s.IdleTTL = DefaultIdleTTL
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	return s, nil
}
