package config

import (
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/ratelimit"
)

// Limiters keeps rate limiters across reloads, so a client's counters
// survive a configuration change that leaves its policy as it was. The
// zero value is ready to use; it is safe for concurrent use.
type Limiters struct {
	mu sync.Mutex
	m  map[string]ratelimit.Limiter
}

func (l *Limiters) get(key string, make func() (ratelimit.Limiter, error)) (ratelimit.Limiter, error) {
	if l == nil {
		return make()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.m[key]; ok {
		return v, nil
	}
	v, err := make()
	if err != nil {
		return nil, err
	}
	if l.m == nil {
		l.m = map[string]ratelimit.Limiter{}
	}
	l.m[key] = v
	return v, nil
}

// Reloader applies a changed configuration file to a running gateway. A
// new configuration is parsed, validated and built completely before
// anything changes; then the gateway's routing table is swapped at once,
// so a request sees either the old configuration or the new one, never a
// mix. An invalid file changes nothing but the reported last error.
type Reloader struct {
	// Path is the configuration file.
	Path string
	// Gateway is updated on success.
	Gateway *gateway.Gateway
	// Options are passed to Config.Gateway on every build.
	Options Options
	// Logger reports results. If nil, slog.Default().
	Logger *slog.Logger
	// OnResult, if set, is told every attempt's outcome (for metrics).
	OnResult func(err error)
	// Apply, if set, is called with the new configuration after a
	// successful swap (to adjust the log level, say).
	Apply func(c *Config)

	mu            sync.Mutex
	current       *Config
	restartNeeded []string
}

// NewReloader returns a reloader for a gateway built from current.
func NewReloader(path string, current *Config, g *gateway.Gateway, opts Options) *Reloader {
	return &Reloader{Path: path, Gateway: g, Options: opts, current: current}
}

// Current returns the configuration in force.
func (r *Reloader) Current() *Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// Reload reads the file and applies it. Settings that cannot change while
// running (listen addresses, timeouts of the listener, the upstream
// transport) keep their old values and are reported as needing a restart.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	logger := r.Logger
	if logger == nil {
		logger = slog.Default()
	}
	start := time.Now()
	err := r.reload(logger)
	status := gateway.ReloadStatus{Time: start, OK: err == nil}
	if err != nil {
		status.Error = err.Error()
		logger.Error("configuration reload refused; still serving the last good configuration", "file", r.Path, "problems", err.Error())
	}
	if r.Gateway != nil {
		if err == nil {
			status.RestartNeeded = r.restartNeeded
		}
		r.Gateway.SetReloadStatus(status)
	}
	if r.OnResult != nil {
		r.OnResult(err)
	}
	return err
}

func (r *Reloader) reload(logger *slog.Logger) error {
	next, err := Load(r.Path)
	if err != nil {
		return err
	}
	gc, err := next.Gateway(r.Options)
	if err != nil {
		return err
	}
	if err := r.Gateway.Update(gc); err != nil {
		return err
	}
	r.restartNeeded = restartNeeded(r.current, next)
	if len(r.restartNeeded) > 0 {
		logger.Warn("configuration reloaded; some settings need a restart to take effect", "keys", fmt.Sprint(r.restartNeeded))
	} else {
		logger.Info("configuration reloaded", "file", r.Path, "generation", r.Gateway.Generation())
	}
	r.current = next
	if r.Apply != nil {
		r.Apply(next)
	}
	return nil
}

// restartNeeded lists the keys whose new values only a restart applies.
func restartNeeded(old, next *Config) []string {
	if old == nil {
		return nil
	}
	var keys []string
	diff := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			keys = append(keys, key)
		}
	}
	o, n := old.Server, next.Server
	diff("server.host", o.Host, n.Host)
	diff("server.port", o.Port, n.Port)
	diff("server.concurrency", o.Concurrency, n.Concurrency)
	diff("server.read_header_timeout", o.ReadHeaderTimeout, n.ReadHeaderTimeout)
	diff("server.read_timeout", o.ReadTimeout, n.ReadTimeout)
	diff("server.idle_timeout", o.IdleTimeout, n.IdleTimeout)
	diff("server.write_timeout", o.WriteTimeout, n.WriteTimeout)
	diff("server.shutdown_delay", o.ShutdownDelay, n.ShutdownDelay)
	diff("server.shutdown_timeout", o.ShutdownTimeout, n.ShutdownTimeout)
	diff("server.max_header_bytes", o.MaxHeaderBytes, n.MaxHeaderBytes)
	diff("server.net_http_only", o.NetHTTPOnly, n.NetHTTPOnly)
	diff("server.transport", o.Transport, n.Transport)
	diff("admin", old.Admin, next.Admin)
	diff("log.format", old.Log.Format, next.Log.Format)
	diff("security.rate_limit.redis_url", old.Security.RateLimit.RedisURL, next.Security.RateLimit.RedisURL)
	return keys
}
