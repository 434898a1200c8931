// Package gateway is the core of the API gateway: an [http.Handler] that
// routes requests to named services and proxies them to one of each
// service's instances with [httputil.ReverseProxy].
//
// A [Gateway] is built from plain Go values ([Config], [Service], [Route]);
// the YAML schema of the binary lives in package gateway/config and maps
// onto the same values, so an embedder writes in Go what an operator writes
// in YAML. Load balancing, circuit breaking, rate limiting and
// authentication plug in through the small interfaces of the leaf packages
// (balancer, breaker, ratelimit, authn).
//
// Every gateway-made error is an RFC 9457 application/problem+json body
// carrying the request id, and every request gets an X-Request-ID that is
// passed to the backend and back to the client.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/balancer/health"
	"github.com/pyairtable/api-gateway/discovery"
	"github.com/pyairtable/api-gateway/gateway/connguard"
	"github.com/pyairtable/api-gateway/gateway/h1"
	"github.com/pyairtable/api-gateway/gateway/metrics"
	"github.com/pyairtable/api-gateway/gateway/tracecontext"
	"github.com/pyairtable/api-gateway/gateway/transform"
	"github.com/pyairtable/api-gateway/ratelimit"
)

// Middleware wraps a handler. Chain(a, b)(h) runs a first.
type Middleware = func(http.Handler) http.Handler

// Chain composes middleware so that the first argument is outermost.
func Chain(ms ...Middleware) Middleware {
	return func(h http.Handler) http.Handler {
		for i := len(ms) - 1; i >= 0; i-- {
			h = ms[i](h)
		}
		return h
	}
}

// Config describes a gateway. The zero value of every field is useful; a
// gateway needs at least one service and one route to proxy anything.
type Config struct {
	// Services are the named backend pools routes point at.
	Services []Service
	// Routes map requests to services. Order does not matter: the most
	// specific route wins (exact path > longer prefix > shorter prefix;
	// a route naming the method > one for any method; a route naming the
	// host > one for any host).
	Routes []Route
	// Middleware wraps every routed request, outermost first. System
	// endpoints (/health, /ready, ...) are not wrapped.
	Middleware []Middleware
	// BodyLimit caps request bodies in bytes (413 beyond it). If zero,
	// 4 MiB. Negative means no limit.
	BodyLimit int64
	// TrustedProxies may set X-Forwarded-For for the clients behind them.
	TrustedProxies Proxies
	// Auth authenticates requests on routes that are not Public. If nil,
	// such routes answer 401 to everyone: deny by default.
	Auth authn.Authenticator
	// CORS configures cross-origin calls from browsers; off when no
	// origin is allowed.
	CORS CORSSettings
	// SecurityHeaders are set on every response.
	SecurityHeaders SecurityHeaders
	// RateLimits apply to every routed request, in order; a request over
	// any of them gets 429. System endpoints are never limited.
	RateLimits []RateLimitPolicy
	// RateLimitHeaders chooses the headers that tell clients where they
	// stand; the default sends both forms on every limited response.
	RateLimitHeaders RateLimitHeaders
	// Metrics, when set, records requests, upstream attempts, breakers,
	// health, limits and auth failures.
	Metrics *metrics.Metrics
	// MetricsHandler, when set, is also served at /metrics on the main
	// port (the binary serves it on the admin port too).
	MetricsHandler http.Handler
	// AccessLog, when set, receives one record per request (path without
	// query, status, duration, ids — never credentials). A logger from
	// NewAccessLog is written by the gateway's own encoder, without
	// allocating; any other logger gets the record as slog attributes.
	AccessLog *slog.Logger
	// AccessLogSample is the share of successful (< 400) requests logged;
	// errors are always logged. If zero, 1 (all).
	AccessLogSample float64
	// TraceExporter, when set, receives one span per request: the hook
	// for an OpenTelemetry exporter. It must not block.
	TraceExporter tracecontext.Exporter
	// WebSocket governs proxied upgrades and the built-in hub.
	WebSocket WebSocketSettings
	// Limits bound what clients may send (URL length, header count,
	// connections per address, underscore headers, served hosts).
	Limits Limits
	// Transport tunes the one upstream transport shared by all services.
	Transport TransportSettings
	// Server holds listener settings used by Serve.
	Server ServerSettings
	// Logger receives operational logs. If nil, slog.Default().
	Logger *slog.Logger
	// Version is reported by /health/detailed.
	Version string
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// Service is a named pool of backend instances.
type Service struct {
	// Name is how routes refer to the service.
	Name string
	// Instances are the backends. A service needs at least one.
	Instances []*balancer.Instance
	// Balancer picks an instance per request. If nil, round robin.
	Balancer balancer.Balancer
	// Timeout bounds a request from routing to the backend's response
	// headers and body (504 beyond it). Streams (text/event-stream,
	// protocol upgrades) are exempt once their headers arrive. If zero,
	// 30s. Negative means no timeout.
	Timeout time.Duration
	// TryTimeout bounds each attempt's wait for response headers; an
	// attempt past it is abandoned (and retried when safe). Zero: none.
	TryTimeout time.Duration
	// RetryCount is how many times a request may be re-sent to another
	// instance: always when the first could not be reached (nothing was
	// sent), and after a timeout or a retryable status only for requests
	// safe to repeat (GET, HEAD, OPTIONS, PUT, DELETE, or an
	// Idempotency-Key). If zero, 1. Negative means never.
	RetryCount int
	// Retry tunes retries: budget, backoff, statuses, replay size.
	Retry RetryPolicy
	// CircuitBreaker configures the per-instance (and optional
	// per-service) breakers; on by default.
	CircuitBreaker BreakerPolicy
	// HealthCheck, when its Path is set, actively checks every instance.
	HealthCheck health.ActiveSettings
	// Outlier configures passive ejection of failing instances; on by
	// default.
	Outlier OutlierPolicy
	// Discovery, when set, supplies the instances instead of (or after)
	// Instances; membership then changes while the gateway runs.
	Discovery discovery.Source
	// MaxConnsPerInstance bounds the requests in flight to each instance
	// (over HTTP/1.1, the connections in use); more wait in arrival order
	// until one finishes, their timeout passes (504) or their client
	// leaves. With a fast backend a few busy connections serve many
	// clients at less CPU per request than a connection each; with a
	// slow one an instance serves at most this many divided by its
	// latency per second. A stream holds its slot until it ends;
	// WebSocket tunnels are not counted. Zero: no bound but
	// TransportSettings.MaxConnsPerHost.
	MaxConnsPerInstance int
	// QueueTimeout bounds a request's wait for one of those slots;
	// beyond it the request is answered 503 with Retry-After, so a
	// stalled backend sheds load instead of holding every client for
	// the whole Timeout. Zero: a request may wait until its Timeout.
	QueueTimeout time.Duration
}

// Route maps requests to a service. Exactly one of Path and Prefix is set.
type Route struct {
	// Name identifies the route in logs and metrics. If empty, it is
	// derived from the methods, host and path or prefix.
	Name string
	// Path matches one path exactly (a trailing slash is ignored).
	Path string
	// Prefix matches a path and everything below it on segment
	// boundaries: "/api/v1/users" matches "/api/v1/users/me" but not
	// "/api/v1/usersX".
	Prefix string
	// Methods restricts the route to these methods (GET implies HEAD).
	// Empty means any method.
	Methods []string
	// Host restricts the route to one Host header (port ignored).
	Host string
	// Service names the target service.
	Service string
	// StripPrefix removes Prefix from the forwarded path.
	StripPrefix bool
	// Public routes need no authentication.
	Public bool
	// Roles, when set, are required (any of).
	Roles []string
	// Permissions, when set, are required (all of).
	Permissions []string
	// RateLimits apply to this route in addition to Config.RateLimits.
	RateLimits []RateLimitPolicy
	// WebSocket lets the route carry WebSocket upgrades to its backend;
	// on other routes the Upgrade header is removed.
	WebSocket bool
	// Transform rewrites requests and responses (headers, path, query);
	// see package gateway/transform.
	Transform *transform.Transform
	// Split, when set, spreads the route's requests over several services
	// by weight (Service is then optional); SplitSticky keeps a client on
	// one side.
	Split       []SplitTarget
	SplitSticky SplitSticky
	// Mirror sends copies of sampled requests to another service.
	Mirror *Mirror
	// Fallback answers when the service has no available instance.
	Fallback *Fallback
	// AllowEncodedSlashes accepts %2F and %5C in paths (for APIs whose
	// identifiers contain them); refused with 400 otherwise.
	AllowEncodedSlashes bool
	// AllowOverrideHeaders forwards X-HTTP-Method-Override, X-Original-URL
	// and similar routing-override headers; removed otherwise.
	AllowOverrideHeaders bool
	// TenantSegment, when positive, is the 1-based index of the path
	// segment naming the tenant ("/api/v1/tenants/{t}/..." is 4); a
	// principal of another tenant is refused with 403.
	TenantSegment int
	// Middleware wraps this route's requests inside Config.Middleware.
	Middleware []Middleware
}

// displayName is the route's name, or a name derived from its match.
func (r *Route) displayName() string {
	if r.Name != "" {
		return r.Name
	}
	var b strings.Builder
	if len(r.Methods) > 0 {
		b.WriteString(strings.Join(r.Methods, ","))
		b.WriteByte(' ')
	}
	b.WriteString(r.Host)
	if r.Path != "" {
		b.WriteString(r.Path)
	} else {
		b.WriteString(r.Prefix)
		b.WriteString("/*")
	}
	return b.String()
}

// TransportSettings tunes the upstream http.Transport. Buffers are paid per
// upstream connection, so they trade memory against syscalls.
type TransportSettings struct {
	// MaxIdleConns bounds idle upstream connections in total. If zero, 1000.
	MaxIdleConns int
	// MaxIdleConnsPerHost bounds idle connections per instance. If zero, 100.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost bounds connections per instance; requests beyond
	// it wait for a connection (within their timeout) rather than open
	// more. It protects backends from connection storms and bounds the
	// gateway's memory. Open response streams (SSE) count against it;
	// upgraded WebSocket tunnels do not. The direct connections (see
	// DisableDirect) are bounded by it too, separately: with both kinds
	// of request at their bound, an instance sees twice this many. If
	// zero, 1024, Envoy's default connection limit; negative means no
	// limit.
	MaxConnsPerHost int
	// IdleConnTimeout closes idle upstream connections. If zero, 90s.
	IdleConnTimeout time.Duration
	// DialTimeout bounds connecting to an instance. If zero, 3s.
	DialTimeout time.Duration
	// ReadBufferSize and WriteBufferSize size each connection's buffers.
	// If zero, 4 KiB each.
	ReadBufferSize, WriteBufferSize int
	// CopyBufferSize sizes the pooled buffers that copy response bodies.
	// If zero, 32 KiB.
	CopyBufferSize int
	// DisableDirect sends every request through net/http's Transport.
	// Otherwise GET, HEAD and OPTIONS requests without bodies to
	// plain-HTTP instances go over the gateway's own HTTP/1.1 connections
	// (package h1), which write the request and read the response on the
	// request's goroutine; net/http's connections each run two goroutines
	// that every request is handed to and back from, about 15% of a
	// proxied request's CPU measured. Bodies, upgrades and TLS always use
	// the Transport. The connection bounds above apply to each of the two
	// separately.
	DisableDirect bool
}

// upstreamTransport is what carries requests to instances: net/http's
// Transport, or gateway/h1's in front of it, whose CloseIdleConnections
// closes those of both.
type upstreamTransport interface {
	http.RoundTripper
	CloseIdleConnections()
}

// Gateway is an http.Handler that proxies requests to services. It is safe
// for concurrent use; Update swaps its routing table atomically.
type Gateway struct {
	tbl        atomic.Pointer[table]
	transport  *http.Transport
	upstreamRT upstreamTransport // transport, or the direct one in front of it
	bufs       *bufferPool
	logger     *slog.Logger
	now        func() time.Time
	started    time.Time
	version    string
	server     ServerSettings
	generation atomic.Int64

	// onAuthFailure is told the reason of every refused credential.
	onAuthFailure func(reason string)
	// onRateLimit is told every rate-limit decision.
	onRateLimit func(policy string, allowed bool, err error)

	metrics        *metrics.Metrics
	metricsHandler http.Handler
	ws             WebSocketSettings
	wsByIP         connCounter
	wsByUser       connCounter
	broadcast      http.Handler
	accessLog      *slog.Logger
	fastLog        *accessLogHandler // accessLog's handler, when NewAccessLog made it
	sample         float64
	exporter       tracecontext.Exporter

	updated  chan struct{} // signalled by Update so Run restarts background work
	reload   atomic.Pointer[ReloadStatus]
	ready    atomic.Bool
	draining atomic.Bool
	inflight atomic.Int64
}

// table is one immutable generation of configuration.
type table struct {
	router    *router
	services  map[string]*service
	names     []string // service names, sorted
	bodyLimit int64
	proxies   Proxies
	auth      authn.Authenticator
	edge      *edge
	mirrors   []*mirrorer
	limits    Limits
	hosts     map[string]bool // allowed hosts; nil means any

	rateHeaders RateLimitHeaders
}

// New builds a gateway from cfg. It reports every problem it finds at once.
// The gateway starts not ready; Serve (or SetReady) makes it ready.
func New(cfg Config) (*Gateway, error) {
	g := &Gateway{
		logger:  cfg.Logger,
		now:     cfg.Now,
		version: cfg.Version,
		server:  cfg.Server.withDefaults(),
		updated: make(chan struct{}, 1),

		metrics:        cfg.Metrics,
		metricsHandler: cfg.MetricsHandler,
		accessLog:      cfg.AccessLog,
		sample:         cfg.AccessLogSample,
		exporter:       cfg.TraceExporter,
	}
	if g.accessLog != nil {
		g.fastLog, _ = g.accessLog.Handler().(*accessLogHandler)
	}
	if g.sample <= 0 {
		g.sample = 1
	}
	g.ws = cfg.WebSocket.withDefaults()
	if g.ws.Hub != nil {
		// Authentication and roles are checked by the gateway in front.
		g.broadcast = g.ws.Hub.BroadcastHandler(func(*http.Request) bool { return true })
	}
	g.metricsHooks(cfg.Metrics)
	if g.logger == nil {
		g.logger = slog.Default()
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.started = g.now()
	ts := cfg.Transport.withDefaults()
	g.transport = newTransport(ts)
	g.upstreamRT = g.transport
	if !ts.DisableDirect {
		g.upstreamRT = &h1.Transport{
			Fallback:            g.transport,
			DialContext:         g.transport.DialContext,
			MaxIdleConns:        ts.MaxIdleConns,
			MaxIdleConnsPerHost: ts.MaxIdleConnsPerHost,
			MaxConnsPerHost:     ts.MaxConnsPerHost,
			IdleConnTimeout:     ts.IdleConnTimeout,
			ReadBufferSize:      ts.ReadBufferSize,
			WriteBufferSize:     ts.WriteBufferSize,
		}
	}
	g.bufs = newBufferPool(ts.CopyBufferSize, 1024)
	t, err := g.build(cfg)
	if err != nil {
		return nil, err
	}
	g.tbl.Store(t)
	g.generation.Store(1)
	return g, nil
}

// Update replaces the gateway's services and routes with those of cfg,
// atomically: requests already in flight finish on the configuration they
// started with. Instances that remain (same URL in the same service) keep
// their live statistics and health. Listener and transport settings are not
// changed by Update.
func (g *Gateway) Update(cfg Config) error {
	t, err := g.build(cfg)
	if err != nil {
		return err
	}
	old := g.tbl.Swap(t)
	g.generation.Add(1)
	// Drain instances that left only now, so no request routed by the new
	// table can find them and requests of the old one can finish.
	for _, svc := range t.services {
		for _, in := range svc.removed {
			in.SetFlag(balancer.Draining, true)
		}
		svc.removed = nil
	}
	if old != nil {
		for _, m := range old.mirrors {
			go m.close() // let copies already queued go out
		}
		for name, svc := range old.services {
			if t.services[name] == nil {
				for _, in := range svc.pool() {
					in.SetFlag(balancer.Draining, true) // the whole service left
				}
			}
		}
	}
	select {
	case g.updated <- struct{}{}:
	default:
	}
	return nil
}

// Run does the gateway's background work — discovery, active health
// checks, passive-ejection timers — until ctx ends, following updates.
// Serve calls it; embedders that mount the gateway in their own server
// call it themselves. It returns nil when ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	if h := g.ws.Hub; h != nil {
		done := make(chan struct{})
		go func() { defer close(done); h.Run(ctx) }()
		defer func() { <-done }()
	}
	for {
		t := g.tbl.Load()
		tctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, name := range t.names {
			t.services[name].run(tctx, &wg)
		}
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			return nil
		case <-g.updated:
			cancel()
			wg.Wait()
		}
	}
}

// Generation counts successful builds: 1 after New, +1 per Update.
func (g *Gateway) Generation() int64 { return g.generation.Load() }

func (g *Gateway) build(cfg Config) (*table, error) {
	var errs []error
	var unauthenticated []string
	t := &table{
		router:    newRouter(),
		services:  map[string]*service{},
		bodyLimit: cfg.BodyLimit,
		proxies:   cfg.TrustedProxies,

		rateHeaders: cfg.RateLimitHeaders,
	}
	if t.bodyLimit == 0 {
		t.bodyLimit = 4 << 20
	}
	t.auth = cfg.Auth
	t.limits = cfg.Limits.withDefaults()
	if len(t.limits.AllowedHosts) > 0 {
		t.hosts = map[string]bool{}
		for _, h := range t.limits.AllowedHosts {
			t.hosts[hostKey(h)] = true
		}
	}
	if ed, err := compileEdge(cfg.CORS, cfg.SecurityHeaders); err != nil {
		errs = append(errs, err)
	} else {
		t.edge = ed
	}
	var old *table
	if o := g.tbl.Load(); o != nil {
		old = o
	}
	for i := range cfg.Services {
		s := &cfg.Services[i]
		switch {
		case s.Name == "":
			errs = append(errs, fmt.Errorf("services[%d]: name is empty", i))
			continue
		case t.services[s.Name] != nil:
			errs = append(errs, fmt.Errorf("service %q: defined twice", s.Name))
			continue
		case len(s.Instances) == 0 && s.Discovery == nil:
			errs = append(errs, fmt.Errorf("service %q: has no instances", s.Name))
			continue
		}
		var oldSvc *service
		if old != nil {
			oldSvc = old.services[s.Name]
		}
		svc, err := g.newService(s, oldSvc)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", s.Name, err))
			continue
		}
		t.services[s.Name] = svc
		t.names = append(t.names, s.Name)
	}
	sort.Strings(t.names)
	for i := range cfg.Routes {
		r := cfg.Routes[i]
		name := r.displayName()
		r.Name = name
		if (r.Path == "") == (r.Prefix == "") {
			errs = append(errs, fmt.Errorf("route %q: exactly one of path and prefix must be set", name))
			continue
		}
		if p := r.Path + r.Prefix; p[0] != '/' {
			errs = append(errs, fmt.Errorf("route %q: %q does not start with /", name, p))
			continue
		} else if c, changed := cleanPath(p); changed && c != p+"/" {
			errs = append(errs, fmt.Errorf("route %q: %q is not a clean path (did you mean %q?)", name, p, c))
			continue
		}
		if r.Service == "" && len(r.Split) > 0 {
			r.Service = r.Split[0].Service
		}
		svc := t.services[r.Service]
		if svc == nil {
			errs = append(errs, fmt.Errorf("route %q: unknown service %q", name, r.Service))
			continue
		}
		e := &routeEntry{route: r, svc: svc, policy: authn.Policy{Public: r.Public, Roles: r.Roles, Permissions: r.Permissions}}
		if err := g.compileTraffic(t, e); err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", name, err))
			continue
		}
		if r.Public && (len(r.Roles) > 0 || len(r.Permissions) > 0) {
			errs = append(errs, fmt.Errorf("route %q: a public route cannot require roles or permissions", name))
		}
		if !r.Public && cfg.Auth == nil {
			unauthenticated = append(unauthenticated, name)
		}
		for _, m := range r.Methods {
			m = strings.ToUpper(strings.TrimSpace(m))
			if !validMethod(m) {
				errs = append(errs, fmt.Errorf("route %q: invalid method %q", name, m))
			}
			if !slices.Contains(e.methods, m) {
				e.methods = append(e.methods, m)
			}
		}
		e.handler = g.proxyHandler(e)
		e.handler = g.trafficHandler(e, e.handler)
		if len(r.Middleware) > 0 {
			e.handler = Chain(r.Middleware...)(e.handler)
		}
		limits := compileLimits(append(slices.Clone(cfg.RateLimits), r.RateLimits...))
		e.handler = g.limitHandler(limits, true, e.handler)
		e.handler = g.wsHandler(e, e.handler)
		e.handler = g.authHandler(e, cfg.Auth, e.handler)
		e.handler = g.limitHandler(limits, false, e.handler)
		if len(cfg.Middleware) > 0 {
			e.handler = Chain(cfg.Middleware...)(e.handler)
		}
		if other := t.router.add(e); other != "" {
			errs = append(errs, fmt.Errorf("route %q: duplicates route %q (same host, path and method)", name, other))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(unauthenticated) > 0 {
		g.logger.Warn("no authenticator configured: routes that are not public will answer 401", "routes", strings.Join(unauthenticated, ", "))
	}
	return t, nil
}

// wsHandler admits WebSocket upgrades on routes that allow them: origin
// check and connection caps, after authentication.
func (g *Gateway) wsHandler(e *routeEntry, next http.Handler) http.Handler {
	if !e.route.WebSocket {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebSocketUpgrade(r) {
			next.ServeHTTP(w, r)
			return
		}
		st := stateFrom(r.Context())
		release, ok := g.wsGuard(w, r, st)
		if !ok {
			return
		}
		st.wsRelease = release
		defer func() {
			if !st.tunnel {
				release() // no tunnel was opened (the backend refused)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func authnPolicy(roles []string) authn.Policy { return authn.Policy{Roles: roles} }

// authHandler authenticates and authorizes a route's requests before they
// go further.
func (g *Gateway) authHandler(e *routeEntry, auth authn.Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.authorize(e, auth, r, stateFrom(r.Context())); err != nil {
			g.writeAuthError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// requestState is the gateway's per-request state. It is the request's
// context (one allocation carries both), found again with stateFrom.
type requestState struct {
	context.Context
	id        string
	route     *routeEntry
	clientIP  netip.Addr
	start     time.Time
	cancel    context.CancelCauseFunc
	timer     *time.Timer
	instance  *balancer.Instance
	attempts  int
	streaming bool
	viaProxy  bool // the peer is a trusted proxy
	tls       bool // the client connected with TLS (directly or via a trusted proxy)
	principal *authn.Principal
	edge      *edge
	table     *table       // the configuration the request is routed by
	tracked   trackedBody  // the response body's accounting
	vals      [9][1]string // header values: see val
	idBuf     [36]byte     // a generated request id; st.id aliases it
	svc       *service     // the service chosen by a split or fallback, if not the route's
	body      bodyWatch    // the client's body, watched for read failures
	wsRelease func()       // frees the WebSocket connection slots of an upgrade
	tunnel    bool         // the upgrade succeeded: the tunnel now owns wsRelease

	ipKey        string // client address as a rate-limit key, made once
	rate         *compiledLimit
	rateDecision ratelimit.Decision
	rateVals     [4]string
	numBuf       [20]byte // a large Remaining in decimal; rateVals[1] may alias it
	numUsed      bool     // numBuf is frozen into a string

	trace    tracecontext.Context
	traceVal [1]string
	traceBuf [55]byte // the traceparent value; traceVal aliases it
	rw       responseWriter
	gw       *Gateway
}

type stateKey struct{}

// Value implements context.Context.
func (s *requestState) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return s
	}
	return s.Context.Value(key)
}

func stateFrom(ctx context.Context) *requestState {
	if s, ok := ctx.(*requestState); ok {
		return s
	}
	s, _ := ctx.Value(stateKey{}).(*requestState)
	return s
}

// timeout fires when a service's timeout elapses.
func (s *requestState) timeout() { s.cancel(errUpstreamTimeout) }

// endStream exempts a stream from the service timeout once it has started.
func (s *requestState) endStream() {
	s.streaming = true
	if s.timer != nil {
		s.timer.Stop()
	}
}

// ClientIP returns the client address the gateway determined for the
// request whose context is ctx (see Proxies.ClientIP).
func ClientIP(ctx context.Context) netip.Addr {
	if st := stateFrom(ctx); st != nil {
		return st.clientIP
	}
	return netip.Addr{}
}

// RouteName returns the name of the route serving the request whose context
// is ctx, or "".
func RouteName(ctx context.Context) string {
	if st := stateFrom(ctx); st != nil && st.route != nil {
		return st.route.route.Name
	}
	return ""
}

// CurrentRoute returns the route serving the request whose context is ctx.
func CurrentRoute(ctx context.Context) (Route, bool) {
	if st := stateFrom(ctx); st != nil && st.route != nil {
		return st.route.route, true
	}
	return Route{}, false
}

var headerRequestID = http.CanonicalHeaderKey("X-Request-ID")

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Every request takes its framing verdict first, system endpoints
	// included: the verdicts are queued per connection in arrival order.
	conn, _ := connguard.FromContext(r.Context())
	framingErr := conn.Check()
	t := g.tbl.Load()
	// The peer address is parsed once, and only when needed: system
	// endpoints answer without it unless proxies are configured.
	var peer netip.Addr
	viaProxy := false
	if !t.proxies.Empty() {
		peer = peerAddr(r.RemoteAddr)
		viaProxy = t.proxies.Contains(peer)
	}
	tls := r.TLS != nil || (viaProxy && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"))
	t.edge.applySecurity(w.Header(), tls)
	if framingErr == nil && g.serveSystem(w, r) {
		return
	}
	g.inflight.Add(1)
	defer g.inflight.Add(-1)

	st := &requestState{Context: r.Context(), start: g.now(), gw: g}
	st.rw = responseWriter{ResponseWriter: w, writeTimeout: g.server.WriteTimeout, conn: conn}
	w = &st.rw
	if id := r.Header.Get(headerRequestID); validRequestID(id) {
		st.id = id
	} else {
		newRequestID(&st.idBuf)
		st.id = frozen(st.idBuf[:])
	}
	h := w.Header()
	h[headerRequestID] = st.val(4, st.id)
	st.startTrace(r, h)
	if !peer.IsValid() {
		peer = peerAddr(r.RemoteAddr)
	}
	st.clientIP = t.proxies.clientIP(peer, r)
	if st.clientIP == peer && peer.Is4() {
		st.ipKey = v4Host(r.RemoteAddr) // "" if not in the plain form
	}
	st.viaProxy, st.tls, st.edge, st.table = viaProxy, tls, t.edge, t
	r = r.WithContext(st)
	defer g.finish(st, r)
	if framingErr != nil {
		// Nothing after an ambiguous request on this connection can be
		// trusted to be framed as the client meant: answer and close.
		w.Header().Set("Connection", "close")
		WriteProblem(w, r, ProblemBadFraming)
		return
	}
	if p, ok := t.screen(r); !ok {
		if p.Status == http.StatusRequestHeaderFieldsTooLarge || p.Status == http.StatusRequestURITooLong {
			w.Header().Set("Connection", "close")
		}
		WriteProblem(w, r, p)
		return
	}
	if t.edge.handleCORS(w, r) {
		return // a preflight, answered here
	}
	p, changed := cleanPath(r.URL.Path)
	if g.serveHub(w, r, t, p) {
		return
	}
	e, kind := t.router.lookup(r.Method, r.Host, p)
	if kind == matchOK {
		if why := pathProblem(rawPath(r), r.URL.Path, e.route.AllowEncodedSlashes); why != "" {
			pr := ProblemBadPath
			pr.Detail = why
			WriteProblem(w, r, pr)
			return
		}
		if !t.sameRouteAnyCase(r.Method, r.Host, p, e) {
			pr := ProblemBadPath
			pr.Detail = "the path's letter case would reach a different route"
			WriteProblem(w, r, pr)
			return
		}
	}
	switch kind {
	case matchNone:
		WriteProblem(w, r, ProblemNoRoute)
		return
	case matchMethod:
		w.Header().Set("Allow", t.router.allowed(r.Host, p))
		WriteProblem(w, r, ProblemMethodNotAllowed)
		return
	}
	st.route = e
	if g.metrics != nil {
		g.metrics.InFlight(e.route.Name, 1)
	}
	if changed {
		// Forward exactly the path that was routed.
		r.URL.Path, r.URL.RawPath = p, ""
	}
	if t.bodyLimit > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > t.bodyLimit {
			pr := ProblemBodyTooLarge
			pr.Detail = fmt.Sprintf("the request body exceeds the limit of %d bytes", t.bodyLimit)
			w.Header().Set("Connection", "close")
			WriteProblem(w, r, pr)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, t.bodyLimit)
		if r.ContentLength < 0 {
			// A chunked body of unknown size is read (up to the limit)
			// before the backend is contacted, as nginx buffers request
			// bodies: an oversized one is refused without reaching it.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				if p, ok := clientBodyProblem(err); ok {
					w.Header().Set("Connection", "close")
					WriteProblem(w, r, p)
					return
				}
				pr := ProblemBodyTooLarge
				pr.Detail = fmt.Sprintf("the request body exceeds the limit of %d bytes", t.bodyLimit)
				w.Header().Set("Connection", "close")
				WriteProblem(w, r, pr)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.TransferEncoding = nil
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		st.body.ReadCloser = r.Body
		r.Body = &st.body
	}
	if to := e.svc.timeout; to > 0 {
		st.Context, st.cancel = context.WithCancelCause(st.Context)
		st.timer = time.AfterFunc(to, st.timeout)
		defer func() {
			st.timer.Stop()
			st.cancel(context.Canceled)
		}()
	}
	e.handler.ServeHTTP(w, r)
}

// proxyHandler is the innermost handler of a route: a ReverseProxy whose
// transport balances over the route's service.
func (g *Gateway) proxyHandler(e *routeEntry) http.Handler {
	strip := ""
	if e.route.StripPrefix {
		strip = normalizePrefix(e.route.Prefix)
	}
	tr := e.route.Transform
	modify := modifyResponse
	if tr != nil && !tr.Empty() {
		modify = func(resp *http.Response) error {
			tr.ApplyResponse(resp.Header, resp.Request, vars{})
			return modifyResponse(resp)
		}
	} else {
		tr = nil
	}
	return &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { rewrite(pr, strip, tr) },
		Transport:      &routeTransport{e: e},
		BufferPool:     g.bufs,
		ErrorHandler:   g.proxyError,
		ModifyResponse: modify,
		ErrorLog:       slog.NewLogLogger(g.logger.Handler(), slog.LevelWarn),
	}
}

// proxyError maps an upstream failure to a problem response.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	p, ok := problemFor(r, err)
	if !ok {
		return // the client went away; nobody to answer
	}
	st := stateFrom(r.Context())
	attrs := []any{"request_id", RequestID(r.Context()), "status", p.Status, "error", err.Error()}
	if st != nil && st.route != nil {
		attrs = append(attrs, "route", st.route.route.Name, "service", st.route.svc.name)
	}
	if st != nil && st.instance != nil {
		attrs = append(attrs, "instance", st.instance.String())
	}
	g.logger.Warn("upstream error", attrs...)
	WriteProblem(w, r, p)
}
