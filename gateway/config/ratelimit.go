package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/ratelimit"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

// RouteRateLimit is a route's own limit.
type RouteRateLimit struct {
	Limit     int      `yaml:"limit"`
	Window    Duration `yaml:"window"`
	Burst     int      `yaml:"burst"`
	Algorithm string   `yaml:"algorithm"`
	// Key is ip (default), user, api_key or global.
	Key string `yaml:"key"`
}

var (
	rateAlgorithms = []string{"sliding_window", "token_bucket"}
	rateKeys       = map[string]gateway.RateKey{"ip": gateway.KeyIP, "user": gateway.KeyUser, "api_key": gateway.KeyAPIKey, "global": gateway.KeyGlobal}
	failureModes   = []string{"open", "closed"}

	rateHeaderChoices = map[string]gateway.RateLimitHeaders{"": gateway.RateLimitHeadersBoth, "both": gateway.RateLimitHeadersBoth,
		"ietf": gateway.RateLimitHeadersIETF, "legacy": gateway.RateLimitHeadersLegacy, "on_denial": gateway.RateLimitHeadersOnDenial}
)

func (c *Config) validateRateLimits(v *validator) {
	rl := c.Security.RateLimit
	if rl.Algorithm != "" && !slices.Contains(rateAlgorithms, rl.Algorithm) {
		v.add("security.rate_limit.algorithm", "%q is not one of %s", rl.Algorithm, strings.Join(rateAlgorithms, ", "))
	}
	if rl.FailureMode != "" && !slices.Contains(failureModes, rl.FailureMode) {
		v.add("security.rate_limit.failure_mode", "%q is not open or closed", rl.FailureMode)
	}
	if _, ok := rateHeaderChoices[rl.Headers]; !ok {
		v.add("security.rate_limit.headers", "%q is not one of both, ietf, legacy, on_denial", rl.Headers)
	}
	if rl.PerUserLimit < 0 {
		v.add("security.rate_limit.per_user_limit", "%d is negative", rl.PerUserLimit)
	}
	if rl.Burst < 0 {
		v.add("security.rate_limit.burst", "%d is negative", rl.Burst)
	}
	for i, r := range c.Routes {
		l := r.RateLimit
		if l == nil {
			continue
		}
		key := fmt.Sprintf("routes[%d].rate_limit", i)
		if l.Limit <= 0 {
			v.add(key+".limit", "must be positive")
		}
		if _, ok := rateKeys[l.Key]; l.Key != "" && !ok {
			v.add(key+".key", "%q is not one of ip, user, api_key, global", l.Key)
		}
		if l.Algorithm != "" && !slices.Contains(rateAlgorithms, l.Algorithm) {
			v.add(key+".algorithm", "%q is not one of %s", l.Algorithm, strings.Join(rateAlgorithms, ", "))
		}
	}
}

// limiter builds one limiter: in memory, or in Redis when a client is
// given so that every replica shares the allowance.
func (c *Config) limiter(cache *Limiters, name, algorithm string, limit, burst int, window time.Duration, client redis.UniversalClient, onErr func(error)) (ratelimit.Limiter, error) {
	key := fmt.Sprintf("%s|%s|%d|%d|%s|%t|%s", name, algorithm, limit, burst, window, client != nil, c.Security.RateLimit.FailureMode)
	return cache.get(key, func() (ratelimit.Limiter, error) {
		return c.newLimiter(name, algorithm, limit, burst, window, client, onErr)
	})
}

func (c *Config) newLimiter(name, algorithm string, limit, burst int, window time.Duration, client redis.UniversalClient, onErr func(error)) (ratelimit.Limiter, error) {
	s := ratelimit.Settings{Limit: limit, Window: window, Burst: burst}
	if client != nil {
		rs := redisstore.Settings{Settings: s, Prefix: "gw:rl:" + algorithm + ":" + name + ":", OnError: onErr}
		if c.Security.RateLimit.FailureMode == "closed" {
			rs.FailureMode = redisstore.FailClosed
		}
		if algorithm == "token_bucket" {
			return redisstore.NewTokenBucket(client, rs)
		}
		return redisstore.NewSlidingWindow(client, rs)
	}
	if algorithm == "token_bucket" {
		return ratelimit.NewTokenBucket(s)
	}
	return ratelimit.NewSlidingWindow(s)
}

// rateLimits builds the global policies and each route's own.
func (c *Config) rateLimits(client redis.UniversalClient, onErr func(error), cache *Limiters) (global []gateway.RateLimitPolicy, perRoute [][]gateway.RateLimitPolicy, err error) {
	rl := c.Security.RateLimit
	perRoute = make([][]gateway.RateLimitPolicy, len(c.Routes))
	if !rl.Enabled {
		return nil, perRoute, nil
	}
	algo := cmp.Or(rl.Algorithm, "sliding_window")
	window := rl.Window.D()
	add := func(name string, limit int, key gateway.RateKey) error {
		if limit <= 0 {
			return nil
		}
		l, err := c.limiter(cache, name, algo, limit, rl.Burst, window, client, onErr)
		if err != nil {
			return fmt.Errorf("security.rate_limit %s: %w", name, err)
		}
		global = append(global, gateway.RateLimitPolicy{Name: name, Limiter: l, Key: key, Limit: limit, Window: window})
		return nil
	}
	if err := add("global", rl.GlobalLimit, gateway.KeyGlobal); err != nil {
		return nil, nil, err
	}
	if err := add("per_ip", rl.PerIPLimit, gateway.KeyIP); err != nil {
		return nil, nil, err
	}
	if err := add("per_user", rl.PerUserLimit, gateway.KeyUser); err != nil {
		return nil, nil, err
	}
	for i, r := range c.Routes {
		l := r.RateLimit
		if l == nil {
			continue
		}
		name := "route:" + cmp.Or(r.Name, fmt.Sprint(i))
		w := l.Window.D()
		if w == 0 {
			w = window
		}
		lim, err := c.limiter(cache, name, cmp.Or(l.Algorithm, algo), l.Limit, l.Burst, w, client, onErr)
		if err != nil {
			return nil, nil, fmt.Errorf("routes[%d].rate_limit: %w", i, err)
		}
		perRoute[i] = []gateway.RateLimitPolicy{{Name: name, Limiter: lim, Key: rateKeys[cmp.Or(l.Key, "ip")], Limit: l.Limit, Window: w}}
	}
	return global, perRoute, nil
}
