package gateway

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/pyairtable/api-gateway/gateway/metrics"
	"github.com/pyairtable/api-gateway/gateway/tracecontext"
)

// Observability settings live in Config:
//
//	Metrics         *metrics.Metrics      request, upstream, breaker, limit and auth metrics
//	MetricsHandler  http.Handler          also served at /metrics on the main port
//	AccessLog       *slog.Logger          one record per request (NewAccessLog: the allocation-free encoder)
//	AccessLogSample float64               share of successful requests logged
//	TraceExporter   tracecontext.Exporter one span per request

var (
	headerTraceparent = http.CanonicalHeaderKey(tracecontext.TraceparentHeader)
	headerTracestate  = http.CanonicalHeaderKey(tracecontext.TracestateHeader)
)

// TraceContext returns the W3C trace context of the request whose context
// is ctx: the caller's trace (or a new one) with the gateway's span id.
func TraceContext(ctx context.Context) (tracecontext.Context, bool) {
	if st := stateFrom(ctx); st != nil {
		return st.trace, true
	}
	return tracecontext.Context{}, false
}

// startTrace continues the caller's trace (or starts one) and returns it to
// the client in traceparent.
func (st *requestState) startTrace(r *http.Request, h http.Header) {
	st.trace = tracecontext.Start(r.Header)
	st.traceVal[0] = frozen(st.trace.AppendTraceparent(st.traceBuf[:0]))
	h[headerTraceparent] = st.traceVal[:1:1]
}

// injectTrace passes the trace upstream with the gateway's span as parent.
func (st *requestState) injectTrace(h http.Header) {
	h[headerTraceparent] = st.traceVal[:1:1]
	if st.trace.State != "" {
		h[headerTracestate] = []string{st.trace.State}
	} else {
		delete(h, headerTracestate)
	}
}

// finish records a request once its response is done: metrics, the access
// log line and the span.
func (g *Gateway) finish(st *requestState, r *http.Request) {
	end := g.now()
	dur := end.Sub(st.start)
	status := st.rw.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
		if r.Context().Err() != nil {
			status = 499 // the client went away first
		}
	}
	route, service := "none", ""
	if st.route != nil {
		route, service = st.route.route.Name, st.route.svc.name
		if st.svc != nil {
			service = st.svc.name
		}
	}
	if m := g.metrics; m != nil {
		m.ObserveRequest(route, service, r.Method, status, dur, r.ContentLength, st.rw.bytes)
		if st.route != nil {
			m.InFlight(route, -1)
		}
	}
	if g.accessLog != nil && (status >= 400 || g.sample >= 1 || rand.Float64() < g.sample) {
		line := accessLine{time: end, level: slog.LevelInfo, service: service, route: route,
			method: r.Method, path: r.URL.Path, // never the query: it may carry credentials
			status: status, duration: dur, bytes: st.rw.bytes, clientIP: st.clientIP,
			requestID: st.id, traceID: st.trace.TraceID, attempts: st.attempts}
		if status >= 500 {
			line.level = slog.LevelWarn
		}
		if st.instance != nil {
			line.instance = st.instance.String()
		}
		if h := g.fastLog; h != nil {
			h.log(&line)
		} else {
			line.logTo(g.accessLog)
		}
	}
	if x := g.exporter; x != nil {
		span := &tracecontext.Span{Context: st.trace, Name: r.Method + " " + route, Start: st.start, End: end, Status: status,
			Attributes: []tracecontext.Attr{{Key: "http.route", Value: route}, {Key: "gateway.service", Value: service}, {Key: "gateway.request_id", Value: strings.Clone(st.id)}}} // an exporter may keep spans: do not pin the request's state
		x.ExportSpan(span)
	}
}

// metricsHooks connects the gateway's decisions to its metrics.
func (g *Gateway) metricsHooks(m *metrics.Metrics) {
	if m == nil {
		return
	}
	g.onAuthFailure = m.AuthFailure
	g.onRateLimit = func(policy string, allowed bool, err error) { m.RateLimit(policy, allowed) }
}

// attemptDone records one upstream attempt.
func (s *service) attemptDone(instance string, status int, rtt time.Duration) {
	if s.metrics != nil {
		s.metrics.BalancerPick(s.name, instance)
		s.metrics.ObserveAttempt(s.name, instance, status, rtt)
	}
}
