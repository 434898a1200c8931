package metrics

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Errors returned by [New] and [NewWithSettings].
var (
	// ErrNilRegisterer means no Registerer was given; the gateway never
	// falls back to the global one.
	ErrNilRegisterer = errors.New("metrics: nil Registerer")
	// ErrInvalidBuckets means histogram buckets were empty or not strictly
	// increasing finite numbers.
	ErrInvalidBuckets = errors.New("metrics: invalid histogram buckets")
)

const namespace = "gateway"

// Defaults, documented on Settings and in the package doc.
var (
	defaultDurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	defaultSizeBuckets     = []float64{100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8}
)

const defaultMaxSeries = 10000

// Settings tunes [NewWithSettings]. The zero value gives the defaults.
type Settings struct {
	// Version is the version label of gateway_build_info. If empty, the main
	// module version from the binary's build information is used, or
	// "unknown" when there is none.
	Version string
	// DurationBuckets are the upper bounds, in seconds, of the request and
	// upstream attempt duration histograms. If nil, .001 .0025 .005 .01
	// .025 .05 .1 .25 .5 1 2.5 5 10 is used.
	DurationBuckets []float64
	// SizeBuckets are the upper bounds, in bytes, of the request and
	// response size histograms. If nil, 100 B to 100 MB by powers of ten is
	// used.
	SizeBuckets []float64
	// MaxSeries caps the label combinations each metric records. Further
	// combinations share the label value "_overflow" and are counted in
	// gateway_metrics_label_overflow_total. It guards against a caller
	// passing unbounded values (ids, paths); configuration-sized label sets
	// stay far below it. If zero, 10000 is used.
	MaxSeries int
}

// Metrics records the gateway's metrics.
//
// All methods are safe for concurrent use. A nil *Metrics is valid: every
// recording method is then a no-op.
type Metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector // registered by New, for rollback

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	inFlight        *prometheus.GaugeVec
	requestSize     *prometheus.HistogramVec
	responseSize    *prometheus.HistogramVec

	attempts        *prometheus.CounterVec
	attemptDuration *prometheus.HistogramVec
	retries         *prometheus.CounterVec
	queued          *prometheus.CounterVec
	queueWait       *prometheus.HistogramVec

	breakerState       *prometheus.GaugeVec
	breakerTransitions *prometheus.CounterVec
	instanceHealthy    *prometheus.GaugeVec
	ejections          *prometheus.CounterVec
	picks              *prometheus.CounterVec

	rateLimit       *prometheus.CounterVec
	rateLimitErrors *prometheus.CounterVec
	authFailures    *prometheus.CounterVec

	wsConnections   prometheus.Gauge
	wsSubscriptions prometheus.Gauge
	wsMessagesIn    prometheus.Counter
	wsMessagesOut   prometheus.Counter
	wsDrops         prometheus.Counter

	reloadSuccess       prometheus.Counter
	reloadFailure       prometheus.Counter
	lastReloadTimestamp prometheus.Gauge
	lastReloadOK        prometheus.Gauge

	mirror    *prometheus.CounterVec
	buildInfo *prometheus.GaugeVec
	overflow  *prometheus.CounterVec

	// Label-resolved children, so the hot paths skip WithLabelValues.
	requestSeries   *cache[requestKey, *requestChildren]
	inFlightSeries  *cache[string, prometheus.Gauge]
	attemptSeries   *cache[attemptKey, *attemptChildren]
	retrySeries     *cache[pair, prometheus.Counter]
	queuedSeries    *cache[pair, prometheus.Counter]
	queueWaitSeries *cache[string, prometheus.Observer]
	pickSeries      *cache[pair, prometheus.Counter]
	rateLimitSeries *cache[string, *[2]prometheus.Counter]
	storeErrSeries  *cache[string, prometheus.Counter]
	authSeries      *cache[string, prometheus.Counter]
	mirrorSeries    *cache[mirrorKey, prometheus.Counter]
}

type requestKey struct {
	route, service string
	method, code   uint8
}

type requestChildren struct {
	count    prometheus.Counter
	duration prometheus.Observer
	reqSize  prometheus.Observer
	respSize prometheus.Observer
}

type attemptKey struct {
	service, instance string
	code              uint8
}

type attemptChildren struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

type pair struct{ a, b string }

type mirrorKey struct {
	service string
	outcome uint8
}

// New returns Metrics with default [Settings], registered on reg together
// with the Go runtime and process collectors.
func New(reg prometheus.Registerer) (*Metrics, error) {
	return NewWithSettings(reg, Settings{})
}

// NewWithSettings returns Metrics registered on reg, together with the Go
// runtime and process collectors (already-registered ones are kept). If any
// registration fails, whatever it registered is unregistered again and the
// error is returned, so reg is left as it was.
func NewWithSettings(reg prometheus.Registerer, s Settings) (*Metrics, error) {
	if reg == nil {
		return nil, ErrNilRegisterer
	}
	durations, ok := buckets(s.DurationBuckets, defaultDurationBuckets)
	if !ok {
		return nil, fmt.Errorf("%w: DurationBuckets %v", ErrInvalidBuckets, s.DurationBuckets)
	}
	sizes, ok := buckets(s.SizeBuckets, defaultSizeBuckets)
	if !ok {
		return nil, fmt.Errorf("%w: SizeBuckets %v", ErrInvalidBuckets, s.SizeBuckets)
	}
	limit := s.MaxSeries
	if limit <= 0 {
		limit = defaultMaxSeries
	}
	version := s.Version
	if version == "" {
		version = buildVersion()
	}

	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	}
	gaugeVec := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	}
	histogramVec := func(name, help string, b []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: b}, labels)
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	}

	m := &Metrics{
		reg: reg,

		requests: counterVec("requests_total",
			"Requests handled, by route, service, method and status class.", "route", "service", "method", "code"),
		requestDuration: histogramVec("request_duration_seconds",
			"Time from request start to the end of the response.", durations, "route", "service", "method", "code"),
		inFlight: gaugeVec("requests_in_flight",
			"Requests currently being handled, by route.", "route"),
		requestSize: histogramVec("request_size_bytes",
			"Request body sizes, by route.", sizes, "route"),
		responseSize: histogramVec("response_size_bytes",
			"Response body sizes, by route.", sizes, "route"),

		attempts: counterVec("upstream_attempts_total",
			"Upstream attempts, by service, instance and status class (error: no response).", "service", "instance", "code"),
		attemptDuration: histogramVec("upstream_attempt_duration_seconds",
			"Duration of upstream attempts until response headers or failure.", durations, "service", "instance", "code"),
		retries: counterVec("retries_total",
			"Upstream retries, by service and reason.", "service", "reason"),
		queued: counterVec("upstream_queued_total",
			"Requests that waited for one of an instance's max_conns_per_instance slots.", "service", "instance"),
		queueWait: histogramVec("upstream_queue_wait_seconds",
			"Time requests waited for an instance slot, of those that waited.", durations, "service"),

		breakerState: gaugeVec("breaker_state",
			"Circuit breaker state: 0 closed, 1 half-open, 2 open.", "service", "instance"),
		breakerTransitions: counterVec("breaker_transitions_total",
			"Circuit breaker state changes.", "service", "instance", "from", "to"),
		instanceHealthy: gaugeVec("instance_healthy",
			"1 if the instance passes health checks, 0 if not.", "service", "instance"),
		ejections: counterVec("instance_ejections_total",
			"Outlier ejections of instances.", "service", "instance"),
		picks: counterVec("balancer_picks_total",
			"Instances chosen by the load balancer.", "service", "instance"),

		rateLimit: counterVec("ratelimit_decisions_total",
			"Rate limit decisions, by policy and decision (allowed, limited).", "policy", "decision"),
		rateLimitErrors: counterVec("ratelimit_store_errors_total",
			"Errors from rate limit stores.", "store"),
		authFailures: counterVec("auth_failures_total",
			"Rejected authentications, by reason.", "reason"),

		wsConnections:   gauge("websocket_connections", "Open WebSocket connections."),
		wsSubscriptions: gauge("websocket_subscriptions", "Active WebSocket subscriptions."),
		wsDrops: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "websocket_drops_total",
			Help: "WebSocket messages dropped because a client could not keep up."}),

		lastReloadTimestamp: gauge("config_last_reload_success_timestamp_seconds",
			"Unix time of the last successful configuration reload."),
		lastReloadOK: gauge("config_last_reload_success",
			"1 if the last configuration reload succeeded, 0 if it failed."),

		mirror: counterVec("mirror_requests_total",
			"Mirrored requests, by service and outcome (sent, dropped, mismatch, error).", "service", "outcome"),
		buildInfo: gaugeVec("build_info",
			"Always 1; the labels identify the running build.", "version", "goversion"),
		overflow: counterVec("metrics_label_overflow_total",
			"Label combinations recorded as _overflow because a metric reached its series limit.", "metric"),
	}
	wsMessages := counterVec("websocket_messages_total", "WebSocket messages relayed, by direction (in, out).", "direction")
	m.wsMessagesIn = wsMessages.WithLabelValues("in")
	m.wsMessagesOut = wsMessages.WithLabelValues("out")
	reloads := counterVec("config_reloads_total", "Configuration reloads, by result (success, failure).", "result")
	m.reloadSuccess = reloads.WithLabelValues("success")
	m.reloadFailure = reloads.WithLabelValues("failure")
	m.buildInfo.WithLabelValues(version, runtime.Version()).Set(1)

	m.makeCaches(limit)

	if err := m.register(
		m.requests, m.requestDuration, m.inFlight, m.requestSize, m.responseSize,
		m.attempts, m.attemptDuration, m.retries, m.queued, m.queueWait,
		m.breakerState, m.breakerTransitions, m.instanceHealthy, m.ejections, m.picks,
		m.rateLimit, m.rateLimitErrors, m.authFailures,
		m.wsConnections, m.wsSubscriptions, wsMessages, m.wsDrops,
		reloads, m.lastReloadTimestamp, m.lastReloadOK,
		m.mirror, m.buildInfo, m.overflow,
	); err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
				continue // the embedder registered its own; both export the same series
			}
			m.unregister()
			return nil, fmt.Errorf("metrics: register runtime collector: %w", err)
		}
		m.collectors = append(m.collectors, c)
	}
	return m, nil
}

func (m *Metrics) register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			m.unregister()
			return fmt.Errorf("metrics: register: %w", err)
		}
		m.collectors = append(m.collectors, c)
	}
	return nil
}

func (m *Metrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
	m.collectors = nil
}

func (m *Metrics) makeCaches(limit int) {
	overflow := func(metric string) prometheus.Counter { return m.overflow.WithLabelValues(namespace + "_" + metric) }
	m.requestSeries = newCache(limit, overflow("requests_total"),
		func(k requestKey) *requestChildren {
			route, service := labelValue(k.route), labelValue(k.service)
			method, code := methodNames[k.method], codeNames[k.code]
			return &requestChildren{
				count:    m.requests.WithLabelValues(route, service, method, code),
				duration: m.requestDuration.WithLabelValues(route, service, method, code),
				reqSize:  m.requestSize.WithLabelValues(route),
				respSize: m.responseSize.WithLabelValues(route),
			}
		},
		func(k requestKey) requestKey { return requestKey{overflowValue, overflowValue, k.method, k.code} })
	m.inFlightSeries = newCache(limit, overflow("requests_in_flight"),
		func(route string) prometheus.Gauge { return m.inFlight.WithLabelValues(labelValue(route)) },
		func(string) string { return overflowValue })
	m.attemptSeries = newCache(limit, overflow("upstream_attempts_total"),
		func(k attemptKey) *attemptChildren {
			service, instance, code := labelValue(k.service), labelValue(k.instance), codeNames[k.code]
			return &attemptChildren{
				count:    m.attempts.WithLabelValues(service, instance, code),
				duration: m.attemptDuration.WithLabelValues(service, instance, code),
			}
		},
		func(k attemptKey) attemptKey { return attemptKey{overflowValue, overflowValue, k.code} })
	pairCache := func(vec *prometheus.CounterVec, metric string) *cache[pair, prometheus.Counter] {
		return newCache(limit, overflow(metric),
			func(k pair) prometheus.Counter { return vec.WithLabelValues(labelValue(k.a), labelValue(k.b)) },
			func(pair) pair { return pair{overflowValue, overflowValue} })
	}
	m.retrySeries = pairCache(m.retries, "retries_total")
	m.queuedSeries = pairCache(m.queued, "upstream_queued_total")
	m.queueWaitSeries = newCache(limit, overflow("upstream_queue_wait_seconds"),
		func(service string) prometheus.Observer { return m.queueWait.WithLabelValues(labelValue(service)) },
		func(string) string { return overflowValue })
	m.pickSeries = pairCache(m.picks, "balancer_picks_total")
	m.rateLimitSeries = newCache(limit, overflow("ratelimit_decisions_total"),
		func(policy string) *[2]prometheus.Counter {
			p := labelValue(policy)
			return &[2]prometheus.Counter{m.rateLimit.WithLabelValues(p, "limited"), m.rateLimit.WithLabelValues(p, "allowed")}
		},
		func(string) string { return overflowValue })
	stringCache := func(vec *prometheus.CounterVec, metric string) *cache[string, prometheus.Counter] {
		return newCache(limit, overflow(metric),
			func(k string) prometheus.Counter { return vec.WithLabelValues(labelValue(k)) },
			func(string) string { return overflowValue })
	}
	m.storeErrSeries = stringCache(m.rateLimitErrors, "ratelimit_store_errors_total")
	m.authSeries = stringCache(m.authFailures, "auth_failures_total")
	m.mirrorSeries = newCache(limit, overflow("mirror_requests_total"),
		func(k mirrorKey) prometheus.Counter {
			return m.mirror.WithLabelValues(labelValue(k.service), mirrorOutcomes[k.outcome])
		},
		func(k mirrorKey) mirrorKey { return mirrorKey{overflowValue, k.outcome} })
}

// Handler returns an HTTP handler serving the metrics gathered from g,
// usually the *prometheus.Registry passed to New. A failing collector does
// not fail the scrape (the others are served and the failure counted in
// promhttp_metric_handler_errors_total); at most 4 scrapes run at once and
// each is cut off after 10 s, so a scrape storm cannot pile up work.
// Responses are gzip- or zstd-compressed when the scraper asks for it.
func (m *Metrics) Handler(g prometheus.Gatherer) http.Handler {
	opts := promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}
	if m != nil {
		opts.Registry = m.reg
	}
	return promhttp.HandlerFor(g, opts)
}

// InFlight adds delta to the requests in flight on route: +1 when a request
// starts and -1 when it ends.
func (m *Metrics) InFlight(route string, delta int) {
	if m == nil {
		return
	}
	m.inFlightSeries.get(route).Add(float64(delta))
}

// ObserveRequest records a finished request: its count and duration by
// route, service, method and status class, and its body sizes by route. A
// negative size means unknown and is not recorded. status 0 means no
// response was sent.
func (m *Metrics) ObserveRequest(route, service, method string, status int, dur time.Duration, reqBytes, respBytes int64) {
	if m == nil {
		return
	}
	c := m.requestSeries.get(requestKey{route, service, methodIndex(method), codeIndex(status)})
	c.count.Inc()
	c.duration.Observe(dur.Seconds())
	if reqBytes >= 0 {
		c.reqSize.Observe(float64(reqBytes))
	}
	if respBytes >= 0 {
		c.respSize.Observe(float64(respBytes))
	}
}

// ObserveAttempt records one upstream attempt on instance (host:port) of
// service. status 0 means a transport error (no response).
func (m *Metrics) ObserveAttempt(service, instance string, status int, dur time.Duration) {
	if m == nil {
		return
	}
	c := m.attemptSeries.get(attemptKey{service, instance, codeIndex(status)})
	c.count.Inc()
	c.duration.Observe(dur.Seconds())
}

// Queued records a request to instance of service that waited for a slot
// (max_conns_per_instance) before it was sent, or gave up waiting.
func (m *Metrics) Queued(service, instance string, wait time.Duration) {
	if m == nil {
		return
	}
	m.queuedSeries.get(pair{service, instance}).Inc()
	m.queueWaitSeries.get(service).Observe(wait.Seconds())
}

// Retry counts a retry of a request to service. reason must come from a
// small fixed set chosen by the caller (e.g. "status", "transport",
// "timeout"), never from an error message.
func (m *Metrics) Retry(service, reason string) {
	if m == nil {
		return
	}
	m.retrySeries.get(pair{service, reason}).Inc()
}

// Breaker states for [Metrics.BreakerState], as exported.
const (
	BreakerClosed   = 0
	BreakerHalfOpen = 1
	BreakerOpen     = 2
)

// BreakerState sets the current breaker state of an instance: 0 closed,
// 1 half-open, 2 open.
func (m *Metrics) BreakerState(service, instance string, state int) {
	if m == nil {
		return
	}
	m.breakerState.WithLabelValues(labelValue(service), labelValue(instance)).Set(float64(state))
}

// BreakerTransition counts a breaker state change of an instance; from and
// to are state names such as "closed", "half-open" and "open".
func (m *Metrics) BreakerTransition(service, instance, from, to string) {
	if m == nil {
		return
	}
	m.breakerTransitions.WithLabelValues(labelValue(service), labelValue(instance), labelValue(from), labelValue(to)).Inc()
}

// InstanceHealth sets whether an instance passes its health checks.
func (m *Metrics) InstanceHealth(service, instance string, healthy bool) {
	if m == nil {
		return
	}
	m.instanceHealthy.WithLabelValues(labelValue(service), labelValue(instance)).Set(b2f(healthy))
}

// Ejection counts an outlier ejection of an instance.
func (m *Metrics) Ejection(service, instance string) {
	if m == nil {
		return
	}
	m.ejections.WithLabelValues(labelValue(service), labelValue(instance)).Inc()
}

// BalancerPick counts the balancer choosing instance for a request to
// service.
func (m *Metrics) BalancerPick(service, instance string) {
	if m == nil {
		return
	}
	m.pickSeries.get(pair{service, instance}).Inc()
}

// RateLimit counts a rate limit decision of the named policy.
func (m *Metrics) RateLimit(policy string, allowed bool) {
	if m == nil {
		return
	}
	c := m.rateLimitSeries.get(policy)
	if allowed {
		c[1].Inc()
	} else {
		c[0].Inc()
	}
}

// RateLimitStoreError counts a failed call to a rate limit store (e.g.
// "redis", "memory").
func (m *Metrics) RateLimitStoreError(store string) {
	if m == nil {
		return
	}
	m.storeErrSeries.get(store).Inc()
}

// AuthFailure counts a rejected authentication. reason must come from a
// small fixed set (e.g. "missing", "expired", "signature", "audience"),
// never from the token or an error message.
func (m *Metrics) AuthFailure(reason string) {
	if m == nil {
		return
	}
	m.authSeries.get(reason).Inc()
}

// WebSocket events for [Metrics.WebSocket].
const (
	WSConnect    = "connect"     // delta connections opened
	WSDisconnect = "disconnect"  // delta connections closed
	WSSubscribe  = "subscribe"   // delta subscriptions added (negative: removed)
	WSMessageIn  = "message_in"  // delta messages from clients
	WSMessageOut = "message_out" // delta messages to clients
	WSDrop       = "drop"        // delta messages dropped
)

// WebSocket records a WebSocket event delta times. connect and disconnect
// move the connection gauge up and down; subscribe moves the subscription
// gauge by delta (negative to unsubscribe); message_in, message_out and drop
// add delta to their counters, ignoring a negative delta. Unknown events are
// ignored.
func (m *Metrics) WebSocket(event string, delta int) {
	if m == nil {
		return
	}
	d := float64(delta)
	switch event {
	case WSConnect:
		m.wsConnections.Add(d)
	case WSDisconnect:
		m.wsConnections.Sub(d)
	case WSSubscribe:
		m.wsSubscriptions.Add(d)
	case WSMessageIn, WSMessageOut, WSDrop:
		if delta <= 0 {
			return // counters only go up; Add would panic
		}
		switch event {
		case WSMessageIn:
			m.wsMessagesIn.Add(d)
		case WSMessageOut:
			m.wsMessagesOut.Add(d)
		default:
			m.wsDrops.Add(d)
		}
	}
}

// ConfigReload records a configuration reload attempt that finished at when.
func (m *Metrics) ConfigReload(success bool, when time.Time) {
	if m == nil {
		return
	}
	if !success {
		m.reloadFailure.Inc()
		m.lastReloadOK.Set(0)
		return
	}
	m.reloadSuccess.Inc()
	m.lastReloadOK.Set(1)
	m.lastReloadTimestamp.Set(float64(when.UnixNano()) / 1e9)
}

// Mirror outcomes for [Metrics.Mirror].
const (
	MirrorSent     = "sent"
	MirrorDropped  = "dropped"
	MirrorMismatch = "mismatch"
	MirrorError    = "error"
)

var mirrorOutcomes = [...]string{MirrorSent, MirrorDropped, MirrorMismatch, MirrorError, "other"}

// Mirror counts a mirrored request to service by outcome: sent, dropped,
// mismatch or error; any other outcome is recorded as "other".
func (m *Metrics) Mirror(service, outcome string) {
	if m == nil {
		return
	}
	o := uint8(len(mirrorOutcomes) - 1)
	for i, s := range mirrorOutcomes[:len(mirrorOutcomes)-1] {
		if s == outcome {
			o = uint8(i)
			break
		}
	}
	m.mirrorSeries.get(mirrorKey{service, o}).Inc()
}

// Forget deletes every series of an instance of service that left the
// pool: attempts, breaker, health, ejections and balancer picks. Call it
// once the instance no longer receives traffic; a later observation for it
// starts its series again from zero.
func (m *Metrics) Forget(service, instance string) {
	if m == nil {
		return
	}
	labels := prometheus.Labels{"service": labelValue(service), "instance": labelValue(instance)}
	m.attemptSeries.forget(
		func(k attemptKey) bool { return k.service == service && k.instance == instance },
		func() {
			m.attempts.DeletePartialMatch(labels)
			m.attemptDuration.DeletePartialMatch(labels)
		})
	m.pickSeries.forget(
		func(k pair) bool { return k.a == service && k.b == instance },
		func() { m.picks.DeletePartialMatch(labels) })
	m.breakerState.DeletePartialMatch(labels)
	m.breakerTransitions.DeletePartialMatch(labels)
	m.instanceHealthy.DeletePartialMatch(labels)
	m.ejections.DeletePartialMatch(labels)
}

// ForgetRoute deletes the request series of a route removed by a
// configuration reload. The in-flight gauge is kept: requests still running
// on the old route decrement it when they finish.
func (m *Metrics) ForgetRoute(route string) {
	if m == nil {
		return
	}
	labels := prometheus.Labels{"route": labelValue(route)}
	m.requestSeries.forget(
		func(k requestKey) bool { return k.route == route },
		func() {
			m.requests.DeletePartialMatch(labels)
			m.requestDuration.DeletePartialMatch(labels)
			m.requestSize.DeletePartialMatch(labels)
			m.responseSize.DeletePartialMatch(labels)
		})
}

var methodNames = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}

// methodIndex maps an HTTP method to its index in methodNames. Methods are
// case-sensitive, so "get" is "other".
func methodIndex(method string) uint8 {
	switch method {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodPatch:
		return 4
	case http.MethodDelete:
		return 5
	case http.MethodOptions:
		return 6
	}
	return 7
}

var codeNames = [...]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx", "other"}

// codeIndex maps a status code to its index in codeNames.
func codeIndex(status int) uint8 {
	switch {
	case status <= 0:
		return 0
	case status >= 100 && status <= 599:
		return uint8(status / 100)
	}
	return 6
}

// labelValue makes s acceptable as a label value: WithLabelValues panics on
// invalid UTF-8, and a panic on the request path is worse than a mangled
// label. It runs only when a series is created.
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// buckets validates b, or returns def when b is nil. It copies, so the
// caller may reuse its slice. The histogram itself would only panic on bad
// buckets when its first child is created, on the request path.
func buckets(b, def []float64) ([]float64, bool) {
	if b == nil {
		return slices.Clone(def), true
	}
	if len(b) == 0 {
		return nil, false
	}
	for i, v := range b {
		if math.IsNaN(v) || math.IsInf(v, 0) || (i > 0 && v <= b[i-1]) {
			return nil, false
		}
	}
	return slices.Clone(b), true
}

// buildVersion returns the main module version recorded in the binary.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
