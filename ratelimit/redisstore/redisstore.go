// Package redisstore runs the ratelimit algorithms on a shared Redis, so
// that all gateway replicas enforce one combined limit per key.
//
// Each decision is a single round trip: a Lua script, sent once and then
// invoked by its SHA (EVALSHA, resent on NOSCRIPT after a server restart),
// reads and updates the key's state atomically. The script takes the time
// from the server (TIME), not from the gateway, so replicas whose clocks
// disagree still share one timeline. Keys expire on their own once their
// state no longer matters (at most two windows for a sliding window, a
// full refill for a token bucket).
//
// When Redis fails (unreachable, too slow for CommandTimeout), a [Limiter]
// answers by its [FailureMode] and returns the error alongside. After a
// failure it stops asking Redis for CircuitCooldown, so that a dead Redis
// does not add a timeout to every request; then a single request probes
// Redis, and the first success resumes normal operation.
//
// Importing package ratelimit alone does not pull in a Redis client; only
// this package does.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pyairtable/api-gateway/ratelimit"
)

// FailureMode says what a Limiter answers when Redis cannot decide.
type FailureMode int

const (
	// FailOpen allows requests while Redis is unavailable: an outage of
	// the limiter's store does not become an outage of the service.
	FailOpen FailureMode = iota
	// FailClosed denies requests while Redis is unavailable, for limits
	// that protect something more fragile than availability.
	FailClosed
)

// String returns "fail-open" or "fail-closed".
func (m FailureMode) String() string {
	switch m {
	case FailOpen:
		return "fail-open"
	case FailClosed:
		return "fail-closed"
	}
	return fmt.Sprintf("FailureMode(%d)", int(m))
}

var (
	// ErrUnavailable is wrapped by the errors Allow returns when Redis
	// could not make the decision.
	ErrUnavailable = errors.New("redisstore: redis unavailable")
	// ErrShortCircuit is returned, wrapping ErrUnavailable, while Allow is
	// not asking Redis because of a recent failure.
	ErrShortCircuit = fmt.Errorf("%w: skipped during cooldown after a failure", ErrUnavailable)
)

// Defaults used for zero Settings fields.
const (
	DefaultPrefix          = "ratelimit:"
	DefaultCommandTimeout  = 50 * time.Millisecond
	DefaultCircuitCooldown = time.Second
	DefaultDialTimeout     = 500 * time.Millisecond
)

// Settings configures a Redis-backed limiter.
type Settings struct {
	// Limit, Window and Burst mean what they mean for the in-memory
	// limiters. Window must be at least 1ms and is used at microsecond
	// resolution; 2×(2×Limit+1)×Window in µs (Burst×Window/Limit for a
	// token bucket) must stay below 2^53. MaxKeys and IdleTTL are not used:
	// Redis keys expire by themselves. Now is used for the circuit
	// cooldown only; decisions use the server's clock.
	ratelimit.Settings
	// Prefix is prepended to every key. If empty, "ratelimit:" is used.
	// Limiters share state exactly when they share a prefix, so give each
	// algorithm and settings its own (the two algorithms store different
	// Redis types; a key of the wrong type fails its decisions).
	Prefix string
	// FailureMode is the answer while Redis is unavailable. The zero value
	// is FailOpen.
	FailureMode FailureMode
	// CommandTimeout bounds each decision's round trip. If zero, 50ms is
	// used. It takes effect through the context, so the client must have
	// ContextTimeoutEnabled (NewClient sets it).
	CommandTimeout time.Duration
	// CircuitCooldown is how long Allow answers by FailureMode without
	// asking Redis after a failure. If zero, 1s is used.
	CircuitCooldown time.Duration
	// OnError, if not nil, is called with every error Allow returns, for
	// metrics. It must be fast and safe for concurrent use.
	OnError func(err error)
}

// Limiter is a ratelimit.Limiter whose state lives in Redis. It is safe for
// concurrent use and starts no goroutine. It does not own the client:
// closing the client is the caller's job.
type Limiter struct {
	client redis.UniversalClient
	script *redis.Script
	prefix string
	// args are the script's first two arguments (limit and window µs, or
	// burst and interval µs), boxed once rather than on every call.
	args     [2]any
	capacity int // Decision.Limit
	mode     FailureMode
	timeout  time.Duration
	cooldown time.Duration
	onError  func(error)
	now      func() time.Time

	// openUntil is 0 while Redis is in use; otherwise the unix ns until
	// which Allow short-circuits.
	openUntil atomic.Int64
	failures  atomic.Uint64
}

// maxExact is the bound below which Lua's doubles hold integers exactly.
const maxExact = 1 << 53

// NewSlidingWindow returns a limiter running ratelimit's weighted
// two-window counter in Redis. It returns an error wrapping
// ratelimit.ErrInvalidSettings if s is out of range.
func NewSlidingWindow(client redis.UniversalClient, s Settings) (*Limiter, error) {
	l, rs, err := newLimiter(client, s)
	if err != nil {
		return nil, err
	}
	w := rs.Window.Microseconds()
	limit := int64(rs.Limit)
	if w > maxExact/2/(2*limit+1) {
		return nil, fmt.Errorf("%w: Limit %d per Window %v is beyond Lua's exact arithmetic", ratelimit.ErrInvalidSettings, rs.Limit, rs.Window)
	}
	l.script = slidingWindowScript
	l.args = [2]any{limit, w}
	l.capacity = rs.Limit
	return l, nil
}

// NewTokenBucket returns a limiter running ratelimit's GCRA token bucket in
// Redis. The emission interval Window/Limit is rounded up to the
// microsecond and must be at least 1µs. It returns an error wrapping
// ratelimit.ErrInvalidSettings if s is out of range.
func NewTokenBucket(client redis.UniversalClient, s Settings) (*Limiter, error) {
	l, rs, err := newLimiter(client, s)
	if err != nil {
		return nil, err
	}
	perToken := int64(rs.Window) / int64(rs.Limit)
	if perToken < int64(time.Microsecond) {
		return nil, fmt.Errorf("%w: Limit %d per Window %v is more than one per microsecond", ratelimit.ErrInvalidSettings, rs.Limit, rs.Window)
	}
	interval := (int64(rs.Window) + int64(rs.Limit)*1000 - 1) / (int64(rs.Limit) * 1000)
	burst := int64(rs.Burst)
	if interval > maxExact/2/burst {
		return nil, fmt.Errorf("%w: Burst %d × Window/Limit %v is beyond Lua's exact arithmetic", ratelimit.ErrInvalidSettings, rs.Burst, rs.Window/time.Duration(rs.Limit))
	}
	l.script = tokenBucketScript
	l.args = [2]any{burst, interval}
	l.capacity = rs.Burst
	return l, nil
}

func newLimiter(client redis.UniversalClient, s Settings) (*Limiter, ratelimit.Settings, error) {
	if client == nil {
		return nil, ratelimit.Settings{}, fmt.Errorf("%w: nil Redis client", ratelimit.ErrInvalidSettings)
	}
	rs, err := s.Settings.WithDefaults()
	if err != nil {
		return nil, rs, err
	}
	switch {
	case rs.Window < time.Millisecond:
		return nil, rs, fmt.Errorf("%w: Window is %v, want >= 1ms for Redis", ratelimit.ErrInvalidSettings, rs.Window)
	case s.FailureMode != FailOpen && s.FailureMode != FailClosed:
		return nil, rs, fmt.Errorf("%w: unknown %v", ratelimit.ErrInvalidSettings, s.FailureMode)
	case s.CommandTimeout < 0 || s.CircuitCooldown < 0:
		return nil, rs, fmt.Errorf("%w: negative CommandTimeout or CircuitCooldown", ratelimit.ErrInvalidSettings)
	}
	l := &Limiter{
		client:   client,
		prefix:   s.Prefix,
		mode:     s.FailureMode,
		timeout:  s.CommandTimeout,
		cooldown: s.CircuitCooldown,
		onError:  s.OnError,
		now:      rs.Now,
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if l.timeout == 0 {
		l.timeout = DefaultCommandTimeout
	}
	if l.cooldown == 0 {
		l.cooldown = DefaultCircuitCooldown
	}
	return l, rs, nil
}

// Allow implements ratelimit.Limiter. If Redis cannot decide, it returns
// the decision of the FailureMode together with an error wrapping
// ErrUnavailable (ErrShortCircuit during the cooldown), or the context's
// error if ctx ended first. A fail-open decision allows the request with a
// full allowance; a fail-closed one denies it with RetryAfter set to the
// cooldown.
func (l *Limiter) Allow(ctx context.Context, key string, cost int) (ratelimit.Decision, error) {
	c := int64(1)
	if cost > 1 {
		c = int64(cost)
	}
	if !l.admit() {
		return l.fail(ErrShortCircuit)
	}
	rctx, cancel := context.WithTimeout(ctx, l.timeout)
	v, err := l.script.Run(rctx, l.client, []string{l.prefix + key}, l.args[0], l.args[1], c).Int64Slice()
	cancel()
	if err == nil && len(v) != 4 {
		err = fmt.Errorf("script returned %d values, want 4", len(v))
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The caller gave up: not Redis's failure. Answer by the
			// failure mode, but neither trip the circuit nor count it.
			return l.fallback(), ctxErr
		}
		// An error reply came back fast from a reachable server (say,
		// a key of the wrong type): only timeouts and broken
		// connections are worth short-circuiting.
		if _, reply := errors.AsType[redis.Error](err); !reply {
			l.openUntil.Store(l.now().UnixNano() + int64(l.cooldown))
		}
		return l.fail(fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
	if l.openUntil.Load() != 0 {
		l.openUntil.Store(0)
	}
	return ratelimit.Decision{
		Allowed:    v[0] == 1,
		Limit:      l.capacity,
		Remaining:  int(v[1]),
		Reset:      time.Duration(v[2]) * time.Microsecond,
		RetryAfter: time.Duration(v[3]) * time.Microsecond,
	}, nil
}

// admit reports whether Allow may ask Redis. After the cooldown, exactly
// one caller wins the right to probe (and pushes the deadline out by a
// cooldown for the others) so that a still-dead Redis costs one timeout per
// cooldown, not one per request.
func (l *Limiter) admit() bool {
	until := l.openUntil.Load()
	if until == 0 {
		return true
	}
	now := l.now().UnixNano()
	if now < until {
		return false
	}
	return l.openUntil.CompareAndSwap(until, now+int64(l.cooldown))
}

func (l *Limiter) fail(err error) (ratelimit.Decision, error) {
	l.failures.Add(1)
	if l.onError != nil {
		l.onError(err)
	}
	return l.fallback(), err
}

func (l *Limiter) fallback() ratelimit.Decision {
	if l.mode == FailClosed {
		return ratelimit.Decision{Limit: l.capacity, Reset: l.cooldown, RetryAfter: l.cooldown}
	}
	return ratelimit.Decision{Allowed: true, Limit: l.capacity, Remaining: l.capacity}
}

// Failures returns how many decisions Redis could not make, short-circuited
// ones included: the number of Allow calls that returned an error other
// than the caller's context ending.
func (l *Limiter) Failures() uint64 { return l.failures.Load() }

// NewClient returns a Redis client for a redis://, rediss:// or unix:// URL
// (query options as in redis.ParseURL), tuned for rate limiting: the dial
// timeout is 500ms unless the URL sets dial_timeout; context deadlines are
// honoured so that CommandTimeout works; commands and dials are not retried
// (the limiter's short circuit handles outages, and a retried script could
// count a request twice) unless the URL sets max_retries. The caller must
// Close it.
func NewClient(redisURL string) (redis.UniversalClient, error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = DefaultDialTimeout
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1
	}
	opt.DialerRetries = 1
	opt.ContextTimeoutEnabled = true
	return redis.NewClient(opt), nil
}
