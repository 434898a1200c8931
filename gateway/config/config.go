// Package config is the YAML face of the gateway: the schema of the
// api-gateway binary's configuration file, its defaults and environment
// overrides, validation that reports every problem with file:line and key
// path, and the mapping onto the plain Go values of package gateway.
//
// Custom gateways can load the same YAML with [Load] and then add their own
// pieces to the [gateway.Config] that [Config.Gateway] returns.
package config

import (
	"bytes"
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/pyairtable/api-gateway/discovery"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/hub"
	"github.com/pyairtable/api-gateway/gateway/metrics"
	"github.com/pyairtable/api-gateway/gateway/transform"
)

// Config is the whole configuration file. Field tags are the YAML keys.
type Config struct {
	Server    Server             `yaml:"server"`
	Admin     Admin              `yaml:"admin"`
	Log       Log                `yaml:"log"`
	Metrics   Metrics            `yaml:"metrics"`
	WebSocket WebSocket          `yaml:"websocket"`
	Auth      Auth               `yaml:"auth"`
	Security  Security           `yaml:"security"`
	Services  map[string]Service `yaml:"services"`
	Routes    []Route            `yaml:"routes"`
	// HotReload watches the file and applies changes while running.
	// SIGHUP and POST /admin/reload work either way.
	HotReload bool `yaml:"hot_reload"`

	// File is where the configuration was read from ("" for embedded).
	File string `yaml:"-"`
	// lines maps key paths to source lines, for validation messages.
	lines map[string]int
}

// Server configures the main listener.
type Server struct {
	Host              string    `yaml:"host"`
	Port              int       `yaml:"port"`
	Environment       string    `yaml:"environment"`
	Concurrency       int       `yaml:"concurrency"`
	ReadHeaderTimeout Duration  `yaml:"read_header_timeout"`
	ReadTimeout       Duration  `yaml:"read_timeout"`
	WriteTimeout      Duration  `yaml:"write_timeout"`
	IdleTimeout       Duration  `yaml:"idle_timeout"`
	ShutdownDelay     Duration  `yaml:"shutdown_delay"`
	ShutdownTimeout   Duration  `yaml:"shutdown_timeout"`
	BodyLimit         ByteSize  `yaml:"body_limit"`
	MaxHeaderBytes    ByteSize  `yaml:"max_header_bytes"`
	NetHTTPOnly       bool      `yaml:"net_http_only"`
	TrustedProxies    []string  `yaml:"trusted_proxies"`
	Transport         Transport `yaml:"transport"`
	Limits            Limits    `yaml:"limits"`
}

// Limits bound what clients may send.
type Limits struct {
	MaxURLLength           int      `yaml:"max_url_length"`
	MaxHeaderCount         int      `yaml:"max_header_count"`
	AllowUnderscoreHeaders bool     `yaml:"allow_underscore_headers"`
	MaxConnsPerIP          int      `yaml:"max_conns_per_ip"`
	AllowedHosts           []string `yaml:"allowed_hosts"`
}

// Transport tunes the upstream connections.
type Transport struct {
	MaxIdleConns        int      `yaml:"max_idle_conns"`
	MaxIdleConnsPerHost int      `yaml:"max_idle_conns_per_host"`
	MaxConnsPerHost     int      `yaml:"max_conns_per_host"`
	IdleConnTimeout     Duration `yaml:"idle_conn_timeout"`
	DialTimeout         Duration `yaml:"dial_timeout"`
	ReadBufferSize      ByteSize `yaml:"read_buffer_size"`
	WriteBufferSize     ByteSize `yaml:"write_buffer_size"`
	// Direct: see gateway.TransportSettings.DisableDirect. Default true.
	Direct *bool `yaml:"direct"`
}

// Admin configures the operator listener (metrics, pprof, reload).
type Admin struct {
	Host  string `yaml:"host"`
	Port  int    `yaml:"port"`
	Pprof bool   `yaml:"pprof"`
	// APIKey protects the admin API (registry, reload); env ADMIN_API_KEY.
	// Without it those endpoints refuse every call.
	APIKey string `yaml:"api_key"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// Access logs one line per request. Default true.
	Access *bool `yaml:"access"`
	// Sample is the share of successful requests logged (errors always
	// are). Default 1.
	Sample float64 `yaml:"sample"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Enabled turns metrics on. Default true.
	Enabled *bool `yaml:"enabled"`
	// ExposeOnMain also serves /metrics on the main port. Default true.
	ExposeOnMain *bool `yaml:"expose_on_main"`
}

// MetricsEnabled reports whether metrics are on.
func (c *Config) MetricsEnabled() bool { return c.Metrics.Enabled == nil || *c.Metrics.Enabled }

// MetricsOnMain reports whether /metrics is served on the main port too.
func (c *Config) MetricsOnMain() bool {
	return c.MetricsEnabled() && (c.Metrics.ExposeOnMain == nil || *c.Metrics.ExposeOnMain)
}

// AccessLog reports whether requests are logged.
func (c *Config) AccessLog() bool { return c.Log.Access == nil || *c.Log.Access }

// Auth configures authentication.
type Auth struct {
	JWTSecret     string      `yaml:"jwt_secret"`
	JWTExpiry     Duration    `yaml:"jwt_expiry"`
	JWTAlgorithms []string    `yaml:"jwt_algorithms"`
	PublicKeys    []PublicKey `yaml:"public_keys"`
	JWKSURL       string      `yaml:"jwks_url"`
	JWKSRefresh   Duration    `yaml:"jwks_refresh"`
	Issuers       []Issuer    `yaml:"issuers"`
	Audience      []string    `yaml:"audience"`
	Leeway        Duration    `yaml:"leeway"`
	MaxTokenBytes int         `yaml:"max_token_bytes"`
	Claims        Claims      `yaml:"claims"`
	CacheSize     int         `yaml:"cache_size"`
	APIKeys       []APIKey    `yaml:"api_keys"`
	APIKeyHeader  string      `yaml:"api_key_header"`
}

// Security groups edge protections.
type Security struct {
	RateLimit RateLimit `yaml:"rate_limit"`
	CORS      CORS      `yaml:"cors"`
	Headers   Headers   `yaml:"headers"`
}

// RateLimit configures request rate limits.
type RateLimit struct {
	Enabled      bool     `yaml:"enabled"`
	GlobalLimit  int      `yaml:"global_limit"`
	PerIPLimit   int      `yaml:"per_ip_limit"`
	PerUserLimit int      `yaml:"per_user_limit"`
	Window       Duration `yaml:"window"`
	Algorithm    string   `yaml:"algorithm"`
	Burst        int      `yaml:"burst"`
	RedisURL     string   `yaml:"redis_url"`
	FailureMode  string   `yaml:"failure_mode"`
	// Headers is both (default), ietf, legacy or on_denial.
	Headers string `yaml:"headers"`
}

// Service is a named pool of backends: one url, or several instances.
type Service struct {
	URL              string           `yaml:"url,omitempty"`
	Instances        []Instance       `yaml:"instances,omitempty"`
	Discovery        *Discovery       `yaml:"discovery,omitempty"`
	Timeout          Duration         `yaml:"timeout"`
	TryTimeout       Duration         `yaml:"try_timeout"`
	RetryCount       *int             `yaml:"retry_count"`
	Retry            Retry            `yaml:"retry"`
	LoadBalancer     LoadBalancer     `yaml:"load_balancer"`
	HealthCheck      HealthCheck      `yaml:"health_check"`
	OutlierDetection OutlierDetection `yaml:"outlier_detection"`
	CircuitBreaker   CircuitBreaker   `yaml:"circuit_breaker"`
	// MaxConnsPerInstance bounds requests in flight per instance; more
	// wait in the gateway (0: no bound but server.transport's).
	MaxConnsPerInstance int `yaml:"max_conns_per_instance"`
	// QueueTimeout bounds the wait for a slot (503 beyond it); 0: the
	// service timeout (504).
	QueueTimeout Duration `yaml:"queue_timeout"`
}

// Instance is one backend of a service.
type Instance struct {
	URL    string `yaml:"url"`
	Weight int    `yaml:"weight"`
}

// Route maps requests to a service.
type Route struct {
	Name          string          `yaml:"name"`
	Path          string          `yaml:"path"`
	Prefix        string          `yaml:"prefix"`
	Methods       []string        `yaml:"methods"`
	Host          string          `yaml:"host"`
	Service       string          `yaml:"service"`
	StripPrefix   bool            `yaml:"strip_prefix"`
	Public        bool            `yaml:"public"`
	Roles         []string        `yaml:"roles"`
	Permissions   []string        `yaml:"permissions"`
	TenantSegment int             `yaml:"tenant_segment"`
	RateLimit     *RouteRateLimit `yaml:"rate_limit,omitempty"`
	WebSocket     bool            `yaml:"websocket"`
	Transform     *transform.Spec `yaml:"transform,omitempty"`
	Split         []SplitTarget   `yaml:"split,omitempty"`
	SplitSticky   string          `yaml:"split_sticky,omitempty"`
	Mirror        *Mirror         `yaml:"mirror,omitempty"`
	Fallback      *Fallback       `yaml:"fallback,omitempty"`
	// AllowEncodedSlashes accepts %2F and %5C in this route's paths.
	AllowEncodedSlashes bool `yaml:"allow_encoded_slashes"`
	// AllowOverrideHeaders forwards X-HTTP-Method-Override and similar.
	AllowOverrideHeaders bool `yaml:"allow_override_headers"`
}

//go:embed default.yaml
var defaultYAML []byte

// Default returns the embedded default configuration: the 14 services of
// the platform on 127.0.0.1 with their /api/v1 routes.
func Default() []byte { return bytes.Clone(defaultYAML) }

// DefaultPath is where the binary looks for a configuration file when none
// is named.
const DefaultPath = "configs/config.yaml"

// Environment overrides, applied after the file is read.
var envKeys = []struct{ env, key string }{
	{"JWT_SECRET", "auth.jwt_secret"},
	{"REDIS_URL", "security.rate_limit.redis_url"},
	{"ENVIRONMENT", "server.environment"},
	{"LOG_LEVEL", "log.level"},
	{"PORT", "server.port"},
	{"ADMIN_API_KEY", "admin.api_key"},
	{"ADMIN_PORT", "admin.port"},
}

// EnvOverrides lists the environment variables that override keys, as
// "VAR → key" pairs, for documentation and `check -print`.
func EnvOverrides() [][2]string {
	out := make([][2]string, len(envKeys))
	for i, e := range envKeys {
		out[i] = [2]string{e.env, e.key}
	}
	return out
}

// Load reads the file at path (the embedded default when path is ""),
// applies environment overrides from the process environment, fills in
// defaults and validates. On failure the error is an *Error listing every
// problem.
func Load(path string) (*Config, error) {
	name, data := "(embedded default)", Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		name, data = path, b
	}
	return Parse(name, data, os.LookupEnv)
}

// Parse is Load for configuration bytes: name labels problems (usually the
// file name), env looks up environment overrides (nil for none).
func Parse(name string, data []byte, env func(string) (string, bool)) (*Config, error) {
	c := &Config{File: name}
	d := &decoder{file: filepath.Base(name), lines: map[string]int{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{Problems: []Problem{{File: d.file, Line: yamlErrLine(err), Msg: yamlErrMsg(err)}}}
	}
	if len(root.Content) > 0 {
		d.decode(&root, reflectValue(c), "")
	}
	c.lines = d.lines
	if env != nil {
		c.applyEnv(d, env)
	}
	c.applyDefaults()
	// Report decoding and validation problems together, so one run of
	// `check` shows everything; a key that failed to decode is not
	// validated again.
	ps := d.problems
	bad := map[string]bool{}
	for _, p := range ps {
		bad[p.Key] = true
	}
	for _, p := range c.validate(d.file) {
		if !bad[p.Key] {
			ps = append(ps, p)
		}
	}
	if len(ps) > 0 {
		order := func(p Problem) int {
			if p.Line <= 0 {
				return 1 << 30 // environment problems last
			}
			return p.Line
		}
		sort.SliceStable(ps, func(i, j int) bool { return order(ps[i]) < order(ps[j]) })
		return nil, &Error{Problems: ps}
	}
	return c, nil
}

func (c *Config) applyEnv(d *decoder, env func(string) (string, bool)) {
	for _, e := range envKeys {
		v, ok := env(e.env)
		if !ok || v == "" {
			continue
		}
		switch e.env {
		case "JWT_SECRET":
			c.Auth.JWTSecret = v
		case "REDIS_URL":
			c.Security.RateLimit.RedisURL = v
		case "ENVIRONMENT":
			c.Server.Environment = v
		case "LOG_LEVEL":
			c.Log.Level = v
		case "ADMIN_API_KEY":
			c.Admin.APIKey = v
		case "PORT", "ADMIN_PORT":
			p, err := strconv.Atoi(v)
			if err != nil {
				d.problems = append(d.problems, Problem{File: "environment", Key: e.env + " (" + e.key + ")", Msg: strconv.Quote(v) + " is not a port number"})
				continue
			}
			if e.env == "PORT" {
				c.Server.Port = p
			} else {
				c.Admin.Port = p
			}
		}
		c.lines[e.key] = -1 // set from the environment
	}
}

// applyDefaults fills in every key the file (or environment) did not set.
// A key written explicitly keeps its value, even zero: "0s" disables a
// timeout, and a zero port is reported as an error instead of silently
// becoming the default.
func (c *Config) applyDefaults() {
	unset := func(key string) bool { _, ok := c.lines[key]; return !ok }
	str := func(key string, p *string, v string) {
		if unset(key) && *p == "" {
			*p = v
		}
	}
	num := func(key string, p *int, v int) {
		if unset(key) {
			*p = v
		}
	}
	dur := func(key string, p *Duration, v time.Duration) {
		if unset(key) {
			*p = Duration(v)
		}
	}
	size := func(key string, p *ByteSize, v int64) {
		if unset(key) {
			*p = ByteSize(v)
		}
	}
	s := &c.Server
	str("server.host", &s.Host, "0.0.0.0")
	num("server.port", &s.Port, 8080)
	str("server.environment", &s.Environment, "development")
	num("server.concurrency", &s.Concurrency, 262144)
	num("server.limits.max_url_length", &s.Limits.MaxURLLength, 8192)
	num("server.limits.max_header_count", &s.Limits.MaxHeaderCount, 100)
	num("server.limits.max_conns_per_ip", &s.Limits.MaxConnsPerIP, 4096)
	dur("server.read_header_timeout", &s.ReadHeaderTimeout, 10*time.Second)
	dur("server.read_timeout", &s.ReadTimeout, 30*time.Second)
	dur("server.write_timeout", &s.WriteTimeout, 30*time.Second)
	dur("server.idle_timeout", &s.IdleTimeout, 120*time.Second)
	dur("server.shutdown_delay", &s.ShutdownDelay, 5*time.Second)
	dur("server.shutdown_timeout", &s.ShutdownTimeout, 30*time.Second)
	size("server.body_limit", &s.BodyLimit, 4<<20)
	size("server.max_header_bytes", &s.MaxHeaderBytes, 1<<20)
	t := &s.Transport
	num("server.transport.max_idle_conns", &t.MaxIdleConns, 1000)
	num("server.transport.max_idle_conns_per_host", &t.MaxIdleConnsPerHost, 100)
	num("server.transport.max_conns_per_host", &t.MaxConnsPerHost, 1024)
	dur("server.transport.idle_conn_timeout", &t.IdleConnTimeout, 90*time.Second)
	dur("server.transport.dial_timeout", &t.DialTimeout, 3*time.Second)
	size("server.transport.read_buffer_size", &t.ReadBufferSize, 4<<10)
	size("server.transport.write_buffer_size", &t.WriteBufferSize, 4<<10)
	str("admin.host", &c.Admin.Host, "127.0.0.1")
	num("admin.port", &c.Admin.Port, 9090)
	str("log.level", &c.Log.Level, "info")
	str("log.format", &c.Log.Format, "json")
	dur("auth.jwt_expiry", &c.Auth.JWTExpiry, 24*time.Hour)
	dur("security.rate_limit.window", &c.Security.RateLimit.Window, time.Second)
	str("security.rate_limit.headers", &c.Security.RateLimit.Headers, "both")
	for name, svc := range c.Services {
		key := "services." + name
		dur(key+".timeout", &svc.Timeout, 30*time.Second)
		if svc.RetryCount == nil {
			one := 1
			svc.RetryCount = &one
		}
		if svc.URL != "" && len(svc.Instances) == 0 {
			svc.Instances = []Instance{{URL: svc.URL, Weight: 1}}
			svc.URL = ""
		}
		for i := range svc.Instances {
			if svc.Instances[i].Weight == 0 {
				svc.Instances[i].Weight = 1
			}
		}
		c.Services[name] = svc
	}
}

// ServiceNames returns the service names, sorted.
func (c *Config) ServiceNames() []string {
	names := make([]string, 0, len(c.Services))
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Production reports whether the configuration is for production, where
// insecure settings are refused.
func (c *Config) Production() bool { return c.Server.Environment == "production" }

// Addr returns the main listener's address.
func (c *Config) Addr() string { return net.JoinHostPort(c.Server.Host, strconv.Itoa(c.Server.Port)) }

// AdminAddr returns the admin listener's address.
func (c *Config) AdminAddr() string {
	return net.JoinHostPort(c.Admin.Host, strconv.Itoa(c.Admin.Port))
}

// Options are run-time pieces the YAML refers to but does not create.
type Options struct {
	// Registry backs services with `discovery: {type: registry}`; the
	// binary serves it on the admin port.
	Registry *discovery.Registry
	// Redis, when set, holds rate-limit state shared by every replica
	// (security.rate_limit.redis_url). The caller owns and closes it.
	Redis redis.UniversalClient
	// OnRateLimitStoreError is told every failure of the shared store.
	OnRateLimitStoreError func(error)
	// Limiters, when set, keeps rate limiters (and their counters) across
	// builds; reloads pass the same one.
	Limiters *Limiters
	// Metrics and MetricsHandler, when set, are given to the gateway
	// (the handler on the main port only if metrics.expose_on_main).
	Metrics        *metrics.Metrics
	MetricsHandler http.Handler
	// AccessLog receives request records when log.access is on.
	AccessLog *slog.Logger
	// Hub is the WebSocket hub (see Config.NewHub); it outlives reloads.
	Hub *hub.Hub
}

// clientIPKey is the consistent-hash key of ip affinity: the client
// address the gateway determined (trusted proxies honoured).
func clientIPKey(r *http.Request) string {
	if a := gateway.ClientIP(r.Context()); a.IsValid() {
		return a.String()
	}
	return ""
}

// Gateway maps the configuration onto a gateway.Config. The result is a
// starting point: callers may add middleware, services and routes.
func (c *Config) Gateway(opts ...Options) (gateway.Config, error) {
	var opt Options
	if len(opts) > 0 {
		opt = opts[0]
	}

	proxies, err := gateway.NewProxies(c.Server.TrustedProxies...)
	if err != nil {
		return gateway.Config{}, err
	}
	s := c.Server
	// After defaults, a zero duration was written as "0s": it disables.
	off := func(d Duration) time.Duration {
		if d == 0 {
			return -1
		}
		return d.D()
	}
	gc := gateway.Config{
		BodyLimit:      int64(s.BodyLimit),
		TrustedProxies: proxies,
		Transport: gateway.TransportSettings{
			MaxIdleConns:        s.Transport.MaxIdleConns,
			MaxIdleConnsPerHost: s.Transport.MaxIdleConnsPerHost,
			MaxConnsPerHost:     cmp.Or(s.Transport.MaxConnsPerHost, -1), // 0 in YAML: no limit
			IdleConnTimeout:     s.Transport.IdleConnTimeout.D(),
			DialTimeout:         s.Transport.DialTimeout.D(),
			ReadBufferSize:      int(s.Transport.ReadBufferSize),
			WriteBufferSize:     int(s.Transport.WriteBufferSize),
			DisableDirect:       s.Transport.Direct != nil && !*s.Transport.Direct,
		},
		Server: gateway.ServerSettings{
			ReadHeaderTimeout: off(s.ReadHeaderTimeout),
			ReadTimeout:       off(s.ReadTimeout),
			WriteTimeout:      off(s.WriteTimeout),
			IdleTimeout:       off(s.IdleTimeout),
			MaxHeaderBytes:    int(s.MaxHeaderBytes),
			Concurrency:       s.Concurrency,
			ShutdownDelay:     off(s.ShutdownDelay),
			ShutdownTimeout:   s.ShutdownTimeout.D(),
			NetHTTPOnly:       s.NetHTTPOnly,
		},
	}
	var errs []error
	auth, err := c.authenticator()
	if err != nil {
		errs = append(errs, fmt.Errorf("auth: %w", err))
	}
	gc.Auth = auth
	gc.CORS, gc.SecurityHeaders = c.edgeSettings()
	gc.WebSocket = c.webSocketSettings(opt.Hub)
	l := c.Server.Limits
	if l.MaxConnsPerIP == 0 {
		l.MaxConnsPerIP = -1 // written as 0: no cap
	}
	gc.Limits = gateway.Limits{MaxURLLength: l.MaxURLLength, MaxHeaderCount: l.MaxHeaderCount,
		AllowUnderscoreHeaders: l.AllowUnderscoreHeaders, MaxConnsPerIP: l.MaxConnsPerIP, AllowedHosts: l.AllowedHosts}
	gc.Metrics = opt.Metrics
	if c.MetricsOnMain() {
		gc.MetricsHandler = opt.MetricsHandler
	}
	if c.AccessLog() {
		gc.AccessLog = opt.AccessLog
		gc.AccessLogSample = c.Log.Sample
	}
	global, perRoute, err := c.rateLimits(opt.Redis, opt.OnRateLimitStoreError, opt.Limiters)
	if err != nil {
		errs = append(errs, err)
	}
	gc.RateLimits = global
	gc.RateLimitHeaders = rateHeaderChoices[c.Security.RateLimit.Headers]
	for _, name := range c.ServiceNames() {
		gs, err := c.service(name, c.Services[name], clientIPKey, opt.Registry)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", name, err))
			continue
		}
		gc.Services = append(gc.Services, gs)
	}
	for i, r := range c.Routes {
		var limits []gateway.RateLimitPolicy
		if i < len(perRoute) {
			limits = perRoute[i]
		}
		var gr gateway.Route
		if err := r.traffic(&gr); err != nil {
			errs = append(errs, fmt.Errorf("routes[%d]: %w", i, err))
		}
		gr = gateway.Route{
			Transform: gr.Transform, Split: gr.Split, SplitSticky: gr.SplitSticky, Mirror: gr.Mirror, Fallback: gr.Fallback,
			RateLimits: limits,
			WebSocket:  r.WebSocket,
			Name:       r.Name, Path: r.Path, Prefix: r.Prefix, Methods: slices.Clone(r.Methods),
			Host: r.Host, Service: r.Service, StripPrefix: r.StripPrefix,
			Public: r.Public, Roles: slices.Clone(r.Roles), Permissions: slices.Clone(r.Permissions),
			TenantSegment:        r.TenantSegment,
			AllowEncodedSlashes:  r.AllowEncodedSlashes,
			AllowOverrideHeaders: r.AllowOverrideHeaders,
		}
		gc.Routes = append(gc.Routes, gr)
	}
	return gc, errors.Join(errs...)
}

// Marshal writes the effective configuration (every default filled in) as
// YAML, secrets redacted.
func (c *Config) Marshal() ([]byte, error) {
	cp := *c
	if cp.Auth.JWTSecret != "" {
		cp.Auth.JWTSecret = "(redacted)"
	}
	if cp.Admin.APIKey != "" {
		cp.Admin.APIKey = "(redacted)"
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&cp); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func yamlErrLine(err error) int {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return 0
	}
	var line int
	if _, e := fmt.Sscanf(err.Error(), "yaml: line %d:", &line); e == nil {
		return line
	}
	return 0
}

func yamlErrMsg(err error) string {
	msg := err.Error()
	var line int
	var rest string
	if n, _ := fmt.Sscanf(msg, "yaml: line %d: ", &line); n == 1 {
		if i := len(fmt.Sprintf("yaml: line %d: ", line)); i <= len(msg) {
			rest = msg[i:]
			return "invalid YAML: " + rest
		}
	}
	return "invalid YAML: " + msg
}
