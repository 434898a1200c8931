package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway/connguard"
	"github.com/pyairtable/api-gateway/gateway/internal/gate"
	"github.com/pyairtable/api-gateway/gateway/transform"
)

func (s TransportSettings) withDefaults() TransportSettings {
	if s.MaxIdleConns == 0 {
		s.MaxIdleConns = 1000
	}
	if s.MaxIdleConnsPerHost == 0 {
		s.MaxIdleConnsPerHost = 100
	}
	switch {
	case s.MaxConnsPerHost == 0:
		s.MaxConnsPerHost = 1024
	case s.MaxConnsPerHost < 0:
		s.MaxConnsPerHost = 0 // http.Transport's "no limit"
	}
	if s.IdleConnTimeout == 0 {
		s.IdleConnTimeout = 90 * time.Second
	}
	if s.DialTimeout == 0 {
		s.DialTimeout = 3 * time.Second
	}
	if s.CopyBufferSize == 0 {
		s.CopyBufferSize = 32 << 10
	}
	return s
}

// newTransport builds the one upstream transport every service shares, so
// idle connections are pooled across routes.
func newTransport(s TransportSettings) *http.Transport {
	d := &net.Dialer{Timeout: s.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil, // never send backend traffic through an environment proxy
		DialContext:           d.DialContext,
		MaxIdleConns:          s.MaxIdleConns,
		MaxIdleConnsPerHost:   s.MaxIdleConnsPerHost,
		MaxConnsPerHost:       s.MaxConnsPerHost,
		IdleConnTimeout:       s.IdleConnTimeout,
		ReadBufferSize:        s.ReadBufferSize,
		WriteBufferSize:       s.WriteBufferSize,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false, // backends speak HTTP/1.1; h2 would need TLS anyway
		// Content coding is between client and backend: left on, the
		// Transport would ask every backend for gzip on behalf of
		// clients that did not, then spend the gateway's CPU inflating
		// it again.
		DisableCompression: true,
	}
}

// bufferPool is a bounded free list of copy buffers. Unlike sync.Pool of
// []byte it does not allocate on Put (a slice header stored in an
// interface would), and it never holds more than its capacity.
type bufferPool struct {
	size int
	free chan []byte
}

func newBufferPool(size, keep int) *bufferPool {
	return &bufferPool{size: size, free: make(chan []byte, keep)}
}

func (p *bufferPool) Get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.size)
	}
}

func (p *bufferPool) Put(b []byte) {
	if cap(b) != p.size {
		return
	}
	select {
	case p.free <- b[:p.size]:
	default:
	}
}

// rewrite builds the outbound request: the routed path (less a stripped
// prefix), forwarding headers that only trusted proxies may extend, and
// the request id.
func rewrite(pr *httputil.ProxyRequest, strip string, tr *transform.Transform) {
	st := stateFrom(pr.In.Context())
	out := pr.Out
	if strip != "" && strip != "/" {
		p := strings.TrimPrefix(out.URL.Path, strip)
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
		out.URL.Path = p
		out.URL.RawPath = ""
	}
	// Route transforms run before the gateway sets forwarding, identity
	// and tracing headers, so no transform can forge those.
	tr.ApplyRequest(out, pr.In, vars{})
	h := out.Header
	if st == nil {
		stripClientHeaders(h, false, false)
	} else {
		// Stripped before the gateway adds its own headers (none of
		// which the stripping would touch): the pass covers only what
		// came in.
		allowOverride := st.route != nil && st.route.route.AllowOverrideHeaders
		stripClientHeaders(h, st.table != nil && st.table.limits.AllowUnderscoreHeaders, allowOverride)
		if st.viaProxy {
			// A trusted proxy's chain is extended, not replaced.
			if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
				h["X-Forwarded-For"] = prior
			}
			pr.SetXForwarded()
		} else {
			// The peer is not a trusted proxy: whatever forwarding
			// headers it sent are its own claims, not facts.
			h["X-Forwarded-For"] = st.val(0, st.ip())
			h["X-Forwarded-Host"] = st.val(1, pr.In.Host)
			if pr.In.TLS != nil {
				h["X-Forwarded-Proto"] = headerHTTPS
			} else {
				h["X-Forwarded-Proto"] = headerHTTP
			}
		}
		h["X-Real-Ip"] = st.val(2, st.ip())
		h[headerRequestID] = st.val(3, st.id)
		st.injectTrace(h)
		st.setIdentity(h)
	}
	// Only WebSocket upgrades are forwarded, and only on routes that allow
	// them; h2c and other protocol switches would hand the client a raw
	// tunnel to the backend.
	if up := h.Get("Upgrade"); up != "" && (!strings.EqualFold(up, "websocket") || st == nil || st.route == nil || !st.route.route.WebSocket) {
		h.Del("Upgrade")
		h.Del("Connection")
	}
}

var (
	headerHTTP  = []string{"http"}
	headerHTTPS = []string{"https"}
)

// modifyResponse drops backend headers that would contradict or duplicate
// the gateway's own.
func modifyResponse(resp *http.Response) error {
	h := resp.Header
	delete(h, headerRequestID) // the gateway already set the one true id
	delete(h, "Server")        // backends' software versions are nobody's business
	delete(h, "X-Powered-By")
	// The gateway's server dates the response itself, as nginx does by
	// default. One entry fewer also keeps a typical proxied response's
	// header map (security, id, trace, seven rate-limit and the
	// backend's content headers) at 14 entries, short of the map's
	// second growth: 0.66 µs per response measured.
	delete(h, "Date")
	var st *requestState
	if resp.Request != nil {
		st = stateFrom(resp.Request.Context())
	}
	if st != nil && st.edge != nil {
		for _, k := range st.edge.secKeys {
			delete(h, k)
		}
		if st.tls && st.edge.hsts != nil {
			delete(h, "Strict-Transport-Security")
		}
		if st.edge.cors {
			for k := range h {
				if strings.HasPrefix(k, "Access-Control-") {
					delete(h, k)
				}
			}
		}
	}
	return nil
}

// upstream is a service's RoundTripper: per attempt it picks an instance,
// consults the instance's breaker, keeps the live statistics, and retries
// on another instance when that is safe and the retry budget allows.
type upstream struct {
	svc  *service
	base http.RoundTripper
	now  func() time.Time
}

// errFailureStatus reports a response whose status counts as a failure to
// breakers and passive health checks.
var errFailureStatus = errors.New("gateway: failure status from backend")

// errUnexpectedUpgrade reports a backend switching protocols on a request
// the gateway did not forward as an upgrade.
var errUnexpectedUpgrade = errors.New("gateway: backend switched protocols without an admitted upgrade")

func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	svc := u.svc
	st := stateFrom(req.Context())
	svc.budget.request()
	var svcDone func(error)
	if svc.svcBreaker != nil {
		d, err := svc.svcBreaker.Allow()
		if err != nil {
			return nil, &unavailableError{err: balancer.ErrNoInstance, retryAfter: svc.svcBreaker.RetryAfter()}
		}
		svcDone = d
	}
	replayable := req.Body == nil
	if req.Body != nil && req.Body != http.NoBody {
		replayable = u.bufferBody(req)
	}
	idempotent := safeToRepeat(req)
	m := svc.m.Load()
	var tried []*balancer.Instance
	var lastErr error // of the last attempt, reported when no instance is left
	attempts := 0
	for {
		in, cookie, err := u.pick(req, m, tried)
		if err != nil {
			if lastErr != nil {
				report(svcDone, lastErr)
				return nil, lastErr
			}
			report(svcDone, context.Canceled) // no attempt: nothing to count
			return nil, &unavailableError{err: err, retryAfter: svc.retryAfter()}
		}
		var done func(error)
		if b := m.breakers[in]; b != nil {
			d, err := b.Allow()
			if err != nil {
				tried = append(tried, in) // half-open and out of probe slots
				continue
			}
			done = d
		}
		gt := m.gates[in]
		if gt != nil {
			wait, err := gt.Acquire(req.Context(), svc.queueWait, u.now)
			if wait > 0 {
				svc.metrics.Queued(svc.name, in.String(), wait)
			}
			if err != nil {
				// The request's time ran out (or its client left) in
				// the queue: nothing was sent, nothing to count.
				report(done, context.Canceled)
				report(svcDone, context.Canceled)
				return nil, err // errQueueTimeout: 503 (problemFor)
			}
		}
		attempts++
		req.URL.Scheme, req.URL.Host = in.URL.Scheme, in.URL.Host
		if st != nil {
			st.instance = in
			st.attempts = attempts
		}
		if attempts > 1 && req.GetBody != nil {
			req.Body, _ = req.GetBody()
		}
		try, at := u.tryContext(req)
		at.gate = gt
		start := u.now()
		in.Begin()
		resp, err := u.base.RoundTrip(try)
		at.headersArrived()
		if err != nil {
			at.release()
			end := u.now()
			svc.attemptDone(in.String(), 0, end.Sub(start))
			gone := clientGone(req)
			in.End(end.Sub(start), !gone, end)
			if gone {
				report(done, context.Canceled)
				report(svcDone, context.Canceled)
				return nil, err
			}
			report(done, err)
			if svc.outlier != nil {
				svc.outlier.Observe(in, m.pool, true)
			}
			reached := !unreached(err)
			if attempts <= svc.retries && (!reached || (idempotent && replayable)) && hasOther(m.pool, tried, in) &&
				req.Context().Err() == nil && svc.budget.allow() {
				tried = append(tried, in)
				lastErr = err
				svc.metrics.Retry(svc.name, retryReason(reached))
				if reached && !u.sleep(req, attempts) {
					report(svcDone, err)
					return nil, err
				}
				continue
			}
			report(svcDone, err)
			if errors.Is(context.Cause(try.Context()), errTryTimeout) {
				return nil, errUpstreamTimeout // 504, like the service timeout
			}
			return nil, err
		}
		svc.attemptDone(in.String(), resp.StatusCode, u.now().Sub(start))
		failed := svc.failStatus[min(resp.StatusCode, 599)]
		var outcome error
		if failed {
			outcome = errFailureStatus
		}
		report(done, outcome)
		if svc.outlier != nil {
			svc.outlier.Observe(in, m.pool, failed)
		}
		if svc.retryOn[min(resp.StatusCode, 599)] && idempotent && replayable && attempts <= svc.retries &&
			hasOther(m.pool, tried, in) && req.Context().Err() == nil && svc.budget.allow() {
			// Discard this answer and ask another instance.
			io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
			at.release()
			end := u.now()
			in.End(end.Sub(start), failed, end)
			tried = append(tried, in)
			svc.metrics.Retry(svc.name, "status")
			if !u.sleep(req, attempts) {
				report(svcDone, outcome)
				return nil, req.Context().Err()
			}
			continue
		}
		report(svcDone, outcome)
		if st != nil && isStream(resp) {
			st.endStream()
		}
		if cookie != nil {
			resp.Header.Add("Set-Cookie", cookie.String())
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			rwc, ok := resp.Body.(io.ReadWriteCloser)
			if !ok || st == nil || st.wsRelease == nil {
				// Not an upgrade this route admitted: no tunnel.
				resp.Body.Close()
				at.release()
				in.End(u.now().Sub(start), true, u.now())
				return nil, errUnexpectedUpgrade
			}
			st.tunnel = true
			resp.Body = newTunnel(rwc, in, start, u.now, st.gw.ws.IdleTimeout, st.wsRelease)
			at.release()
			return resp, nil
		}
		var tb *trackedBody
		if st != nil {
			tb = &st.tracked // one per request: no allocation
		} else {
			tb = new(trackedBody)
		}
		tb.ReadCloser, tb.in, tb.start, tb.failed, tb.now, tb.at = resp.Body, in, start, failed, u.now, at
		resp.Body = tb
		return resp, nil
	}
}

func retryReason(reached bool) string {
	if reached {
		return "error"
	}
	return "connect"
}

func report(done func(error), err error) {
	if done != nil {
		done(err)
	}
}

// pick chooses the next instance, skipping those already tried. When the
// balancer finds nothing it falls back to ejected instances (panic mode).
func (u *upstream) pick(req *http.Request, m *members, tried []*balancer.Instance) (*balancer.Instance, *http.Cookie, error) {
	candidates := m.pool
	if len(tried) > 0 {
		candidates = without(m.pool, tried)
	}
	var in *balancer.Instance
	var cookie *http.Cookie
	var err error
	if u.svc.sticky != nil {
		in, cookie, err = u.svc.sticky.PickSticky(req, candidates)
	} else {
		in, err = u.svc.bal.Pick(req, candidates)
	}
	if err == nil {
		return in, cookie, nil
	}
	st := stateFrom(req.Context())
	stale := m != u.svc.m.Load() || (st != nil && st.table != st.gw.tbl.Load())
	if p := pickPanic(m.pool, tried, stale); p != nil {
		return p, nil, nil
	}
	return nil, nil, err
}

// errTryTimeout is the cancellation cause of an attempt that produced no
// response headers within the service's try timeout.
var errTryTimeout = errors.New("gateway: attempt timed out")

// attempt is the per-attempt timeout: it bounds the wait for response
// headers only, so a stream that has started is never cut by it.
type attempt struct {
	timer  *time.Timer
	cancel context.CancelCauseFunc
	gate   *gate.Gate // the instance's slot, held until the attempt ends
}

func (a attempt) headersArrived() {
	if a.timer != nil {
		a.timer.Stop()
	}
}

func (a attempt) release() {
	if a.cancel != nil {
		a.cancel(context.Canceled)
	}
	if a.gate != nil {
		a.gate.Release()
	}
}

func (u *upstream) tryContext(req *http.Request) (*http.Request, attempt) {
	if u.svc.tryTimeout <= 0 {
		return req, attempt{}
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	t := time.AfterFunc(u.svc.tryTimeout, func() { cancel(errTryTimeout) })
	return req.WithContext(ctx), attempt{timer: t, cancel: cancel}
}

// sleep waits the backoff before retry n; false if the request ended.
func (u *upstream) sleep(req *http.Request, n int) bool {
	d := backoff(u.svc.retry, n)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-req.Context().Done():
		return false
	}
}

// bufferBody reads a small body into memory so a retry can send it again.
// It reports whether the request can be replayed after it reached a
// backend. Larger bodies stream through (they can still be re-sent when the
// first instance could not be reached, since nothing was read).
func (u *upstream) bufferBody(req *http.Request) bool {
	limit := u.svc.retry.BodyLimit
	if u.svc.retries <= 0 || !safeToRepeat(req) || req.ContentLength < 0 || req.ContentLength > limit {
		req.Body = keepOpen{req.Body}
		return false
	}
	buf := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(req.Body, buf); err != nil {
		// Surface the read error from the transport, as an unbuffered body would.
		req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(buf), errReader{err}))
		return false
	}
	req.Body = io.NopCloser(bytes.NewReader(buf))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return true
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// safeToRepeat reports whether sending req twice is harmless: idempotent
// methods, or any method carrying an idempotency key.
func safeToRepeat(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// clientGone reports whether the client gave up (as opposed to the
// gateway's own timeout firing).
func clientGone(req *http.Request) bool {
	ctx := req.Context()
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), errUpstreamTimeout)
}

// keepOpen is a request body whose Close is left to the ReverseProxy.
type keepOpen struct{ io.ReadCloser }

func (keepOpen) Close() error { return nil }

// unreached reports whether err shows the request was never delivered.
func unreached(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// hasOther reports whether an available instance other than cur and
// those tried is left to retry on.
func hasOther(pool, tried []*balancer.Instance, cur *balancer.Instance) bool {
	for _, in := range pool {
		if in != cur && in.Available() && !slices.Contains(tried, in) {
			return true
		}
	}
	return false
}

func without(pool, skip []*balancer.Instance) []*balancer.Instance {
	out := make([]*balancer.Instance, 0, len(pool))
	for _, in := range pool {
		if !slices.Contains(skip, in) {
			out = append(out, in)
		}
	}
	return out
}

// isStream reports whether resp is a stream that must outlive the service
// timeout: server-sent events or a protocol switch.
func isStream(resp *http.Response) bool {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return true
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" || !strings.Contains(ct, "event-stream") {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// trackedBody ends the instance's in-flight accounting when the response
// body is done, so least-connections sees streams as busy.
type trackedBody struct {
	io.ReadCloser
	in     *balancer.Instance
	start  time.Time
	failed bool
	now    func() time.Time
	at     attempt // released with the body, not before: it may cancel the read
	closed atomic.Bool
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.closed.CompareAndSwap(false, true) {
		now := b.now()
		b.in.End(now.Sub(b.start), b.failed, now)
		b.at.release()
	}
	return err
}

// responseWriter records the status and size of a response, and keeps the
// write deadline moving for streams so the server's write timeout bounds a
// stalled client, not a long stream.
type responseWriter struct {
	http.ResponseWriter
	status       int
	bytes        int64
	writeTimeout time.Duration
	conn         *connguard.Conn // keeps the deadline lazily, when Serve's guard is there
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		if w.writeTimeout > 0 {
			w.extendDeadline()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// extendDeadline moves the connection's write deadline. The common case
// (net/http's own ResponseWriter) is found by type assertion, which unlike
// http.NewResponseController does not allocate.
func (w *responseWriter) extendDeadline() {
	now := time.Now()
	if w.conn != nil && w.conn.ExtendWriteDeadline(now) {
		return
	}
	t := now.Add(w.writeTimeout)
	switch d := w.ResponseWriter.(type) {
	case writeDeadliner:
		d.SetWriteDeadline(t)
	case interface{ Unwrap() http.ResponseWriter }:
		http.NewResponseController(w.ResponseWriter).SetWriteDeadline(t)
	}
	// Other writers cannot reach a connection: asking would only build
	// an ErrNotSupported error per response.
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush implements http.Flusher; each flush of a stream extends the write
// deadline.
func (w *responseWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.writeTimeout > 0 {
		w.extendDeadline()
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
		return
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (hijack,
// deadlines).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status returns the status written so far (0 if none).
func (w *responseWriter) Status() int { return w.status }
