package gateway

import (
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
)

func (s TransportSettings) withDefaults() TransportSettings {
	if s.MaxIdleConns == 0 {
		s.MaxIdleConns = 1000
	}
	if s.MaxIdleConnsPerHost == 0 {
		s.MaxIdleConnsPerHost = 100
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
func rewrite(pr *httputil.ProxyRequest, strip string) {
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
	h := out.Header
	if st != nil {
		if st.viaProxy {
			// A trusted proxy's chain is extended, not replaced.
			if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
				h["X-Forwarded-For"] = prior
			}
			pr.SetXForwarded()
		} else {
			// The peer is not a trusted proxy: whatever forwarding
			// headers it sent are its own claims, not facts.
			h["X-Forwarded-For"] = []string{st.clientIP.String()}
			h["X-Forwarded-Host"] = []string{pr.In.Host}
			if pr.In.TLS != nil {
				h["X-Forwarded-Proto"] = headerHTTPS
			} else {
				h["X-Forwarded-Proto"] = headerHTTP
			}
		}
		h["X-Real-Ip"] = []string{st.clientIP.String()}
		h[headerRequestID] = []string{st.id}
	}
	// Only WebSocket upgrades are forwarded; h2c and other protocol
	// switches would hand the client a raw tunnel to the backend.
	if up := h.Get("Upgrade"); up != "" && !strings.EqualFold(up, "websocket") {
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
	return nil
}

// upstream is a service's RoundTripper: it picks an instance per attempt,
// keeps the instance's live statistics, fails over to another instance when
// one cannot be reached, and exempts streams from the service timeout.
type upstream struct {
	svc  *service
	base http.RoundTripper
	now  func() time.Time
}

func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	pool := *u.svc.pool.Load()
	var tried []*balancer.Instance
	candidates := pool
	if req.Body != nil && u.svc.retries > 0 {
		// The transport closes the body when it cannot connect; keep it
		// open so the request can be re-sent to another instance.
		req.Body = keepOpen{req.Body}
	}
	for attempt := 0; ; attempt++ {
		in, err := u.svc.bal.Pick(req, candidates)
		if err != nil {
			return nil, err
		}
		req.URL.Scheme, req.URL.Host = in.URL.Scheme, in.URL.Host
		if st != nil {
			st.instance = in
			st.attempts = attempt + 1
		}
		start := u.now()
		in.Begin()
		resp, err := u.base.RoundTrip(req)
		if err != nil {
			end := u.now()
			// A client that gave up says nothing about the instance.
			clientGone := req.Context().Err() != nil && !errors.Is(context.Cause(req.Context()), errUpstreamTimeout)
			in.End(end.Sub(start), !clientGone, end)
			if attempt < u.svc.retries && unreached(err) && req.Context().Err() == nil {
				// The request never reached the instance, so sending it
				// elsewhere is safe whatever its method.
				tried = append(tried, in)
				candidates = without(pool, tried)
				if len(candidates) > 0 {
					continue
				}
			}
			return nil, err
		}
		failed := resp.StatusCode >= 500
		if st != nil && isStream(resp) {
			st.endStream()
		}
		resp.Body = &trackedBody{ReadCloser: resp.Body, in: in, start: start, failed: failed, now: u.now}
		return resp, nil
	}
}

// keepOpen is a request body whose Close is left to the ReverseProxy.
type keepOpen struct{ io.ReadCloser }

func (keepOpen) Close() error { return nil }

// unreached reports whether err shows the request was never delivered.
func unreached(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func without(pool, skip []*balancer.Instance) []*balancer.Instance {
	out := make([]*balancer.Instance, 0, len(pool))
	for _, in := range pool {
		skipped := false
		for _, s := range skip {
			if s == in {
				skipped = true
				break
			}
		}
		if !skipped {
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
	once   sync.Once
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		now := b.now()
		b.in.End(now.Sub(b.start), b.failed, now)
	})
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
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		if w.writeTimeout > 0 {
			http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.writeTimeout))
		}
	}
	w.ResponseWriter.WriteHeader(code)
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
	rc := http.NewResponseController(w.ResponseWriter)
	if w.writeTimeout > 0 {
		rc.SetWriteDeadline(time.Now().Add(w.writeTimeout))
	}
	rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection (hijack,
// deadlines).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status returns the status written so far (0 if none).
func (w *responseWriter) Status() int { return w.status }
