package gateway

import (
	"bytes"
	"context"
	"errors"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway/transform"
)

// SplitTarget is one service of a weighted traffic split.
type SplitTarget struct {
	Service string
	Weight  int
}

// SplitSticky chooses how a client keeps its side of a split.
type SplitSticky int

const (
	// SplitRandom picks per request.
	SplitRandom SplitSticky = iota
	// SplitByPrincipal hashes the authenticated subject (else the client
	// address), so one user stays on one version.
	SplitByPrincipal
	// SplitByCookie pins the client with a cookie naming its target.
	SplitByCookie
)

// Mirror sends a copy of sampled requests to another service. The copy is
// fire-and-forget: its latency, errors and answer never reach the client.
type Mirror struct {
	// Service receives the copies.
	Service string
	// Percent of requests mirrored, 0 < Percent <= 100.
	Percent float64
	// BodyLimit: requests with larger bodies are not mirrored. If zero,
	// 64 KiB.
	BodyLimit int64
	// Queue bounds copies waiting to be sent; more are dropped. If zero,
	// 1024.
	Queue int
	// Timeout bounds each copy. If zero, 10s.
	Timeout time.Duration
}

// Fallback answers for a route whose service has no available instance
// (all unhealthy, ejected or behind open breakers): another service, or a
// fixed problem.
type Fallback struct {
	Service string
	Problem *Problem
}

// errFallbackProblem asks proxyError to answer with the route's fallback
// problem.
var errFallbackProblem = errors.New("gateway: fallback response")

// split is a compiled weighted split.
type split struct {
	targets []*service
	cum     []int // cumulative weights
	total   int
	sticky  SplitSticky
	cookie  string
}

func (s *split) pick(r *http.Request, st *requestState) (*service, *http.Cookie) {
	switch s.sticky {
	case SplitByCookie:
		if c, err := r.Cookie(s.cookie); err == nil {
			if i, err := strconv.Atoi(c.Value); err == nil && i >= 0 && i < len(s.targets) {
				return s.targets[i], nil
			}
		}
		i := s.index(rand.IntN(s.total))
		return s.targets[i], &http.Cookie{Name: s.cookie, Value: strconv.Itoa(i), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: 7 * 24 * 3600}
	case SplitByPrincipal:
		key := st.clientIP.String()
		if st.principal != nil && st.principal.Subject != "" {
			key = st.principal.Subject
		}
		h := fnv.New32a()
		io.WriteString(h, key)
		return s.targets[s.index(int(h.Sum32()%uint32(s.total)))], nil
	}
	return s.targets[s.index(rand.IntN(s.total))], nil
}

func (s *split) index(n int) int {
	for i, c := range s.cum {
		if n < c {
			return i
		}
	}
	return len(s.cum) - 1
}

// vars gives transforms the request's values.
type vars struct{}

func (vars) RequestID(r *http.Request) string { return RequestID(r.Context()) }
func (vars) ClientIP(r *http.Request) string {
	if a := ClientIP(r.Context()); a.IsValid() {
		return a.String()
	}
	return ""
}
func (vars) Subject(r *http.Request) string {
	if p := Principal(r.Context()); p != nil {
		return p.Subject
	}
	return ""
}
func (vars) Tenant(r *http.Request) string {
	if p := Principal(r.Context()); p != nil {
		return p.Tenant
	}
	return ""
}
func (vars) Route(r *http.Request) string { return RouteName(r.Context()) }

var _ transform.Vars = vars{}

// mirrorer sends request copies from a bounded queue with a few workers.
type mirrorer struct {
	cfg     Mirror
	svc     *service
	base    http.RoundTripper
	queue   chan *mirrorJob
	onEvent func(service, outcome string)
	wg      sync.WaitGroup
	stop    chan struct{}
	once    sync.Once
	started sync.Once
}

type mirrorJob struct {
	req    *http.Request
	status chan int // the client response's status, for comparison
}

func newMirrorer(cfg Mirror, svc *service, base http.RoundTripper, onEvent func(string, string)) *mirrorer {
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 64 << 10
	}
	if cfg.Queue == 0 {
		cfg.Queue = 1024
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &mirrorer{cfg: cfg, svc: svc, base: base, queue: make(chan *mirrorJob, cfg.Queue), onEvent: onEvent, stop: make(chan struct{})}
}

// start runs the workers on first use, so building a gateway starts no
// goroutine; close stops them.
func (m *mirrorer) start() {
	m.started.Do(func() {
		for i := 0; i < 4; i++ {
			m.wg.Add(1)
			go m.work()
		}
	})
}

func (m *mirrorer) event(outcome string) {
	if m.onEvent != nil {
		m.onEvent(m.svc.name, outcome)
	}
}

// offer queues a copy of r if it is sampled and fits; it never blocks.
// The returned channel, when not nil, must receive the client's status.
func (m *mirrorer) offer(r *http.Request) chan int {
	if rand.Float64()*100 >= m.cfg.Percent {
		return nil
	}
	m.start()
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength < 0 || r.ContentLength > m.cfg.BodyLimit {
			m.event("dropped")
			return nil
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
		if err != nil {
			return nil
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b)) // the client's request still gets its body
	}
	out := r.Clone(context.Background())
	out.RequestURI = ""
	out.Body = http.NoBody
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
	}
	out.Header.Set("X-Mirrored-By", "api-gateway")
	job := &mirrorJob{req: out, status: make(chan int, 1)}
	select {
	case m.queue <- job:
		return job.status
	default:
		m.event("dropped")
		return nil
	}
}

func (m *mirrorer) work() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case job := <-m.queue:
			m.send(job)
		}
	}
}

func (m *mirrorer) send(job *mirrorJob) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	req := job.req.WithContext(ctx)
	in, err := m.svc.bal.Pick(req, m.svc.pool())
	if err != nil {
		m.event("error")
		return
	}
	req.URL.Scheme, req.URL.Host = in.URL.Scheme, in.URL.Host
	in.Begin()
	start := time.Now()
	resp, err := m.base.RoundTrip(req)
	if err != nil {
		in.End(time.Since(start), true, time.Now())
		m.event("error")
		return
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	in.End(time.Since(start), resp.StatusCode >= 500, time.Now())
	m.event("sent")
	select {
	case primary := <-job.status:
		if primary/100 != resp.StatusCode/100 {
			m.event("mismatch")
		}
	case <-ctx.Done():
	}
}

func (m *mirrorer) close() {
	m.once.Do(func() { close(m.stop) })
	m.wg.Wait()
}

// routeTransport sends a route's requests to the service chosen for them —
// the route's own, a split's pick — and to the fallback when that service
// has no available instance.
type routeTransport struct{ e *routeEntry }

func (t *routeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	svc := t.e.svc
	if st != nil && st.svc != nil {
		svc = st.svc
	}
	resp, err := svc.up.RoundTrip(req)
	if err == nil || !errors.Is(err, balancer.ErrNoInstance) || (st != nil && st.attempts > 0) {
		return resp, err
	}
	switch {
	case t.e.fallback != nil && t.e.fallback != svc:
		if st != nil {
			st.svc = t.e.fallback
		}
		return t.e.fallback.up.RoundTrip(req)
	case t.e.fallbackProblem != nil:
		return nil, errFallbackProblem
	}
	return resp, err
}

// compileTraffic resolves a route's split, mirror and fallback services.
func (g *Gateway) compileTraffic(t *table, e *routeEntry) error {
	r := &e.route
	if len(r.Split) > 0 {
		sp := &split{sticky: r.SplitSticky, cookie: "gw_split_" + cookieSafe(r.Name)}
		for _, tg := range r.Split {
			svc := t.services[tg.Service]
			if svc == nil {
				return errors.New("split: unknown service " + strconv.Quote(tg.Service))
			}
			if tg.Weight <= 0 {
				return errors.New("split: weight of " + strconv.Quote(tg.Service) + " must be positive")
			}
			sp.total += tg.Weight
			sp.targets = append(sp.targets, svc)
			sp.cum = append(sp.cum, sp.total)
		}
		e.split = sp
	}
	if m := r.Mirror; m != nil {
		svc := t.services[m.Service]
		if svc == nil {
			return errors.New("mirror: unknown service " + strconv.Quote(m.Service))
		}
		if m.Percent <= 0 || m.Percent > 100 {
			return errors.New("mirror: percent must be in (0, 100]")
		}
		e.mirror = newMirrorer(*m, svc, g.transport, g.metrics.Mirror)
		t.mirrors = append(t.mirrors, e.mirror)
	}
	if f := r.Fallback; f != nil {
		switch {
		case f.Service != "":
			svc := t.services[f.Service]
			if svc == nil {
				return errors.New("fallback: unknown service " + strconv.Quote(f.Service))
			}
			e.fallback = svc
		case f.Problem != nil:
			p := *f.Problem
			if p.Status == 0 {
				p.Status = http.StatusServiceUnavailable
			}
			if p.Type == "" {
				p.Type = "fallback"
			}
			e.fallbackProblem = &p
		}
	}
	return nil
}

func cookieSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// trafficHandler chooses a split's service and offers the request to the
// route's mirror.
func (g *Gateway) trafficHandler(e *routeEntry, next http.Handler) http.Handler {
	if e.split == nil && e.mirror == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateFrom(r.Context())
		if e.split != nil {
			svc, cookie := e.split.pick(r, st)
			st.svc = svc
			if cookie != nil {
				w.Header().Add("Set-Cookie", cookie.String())
			}
		}
		var status chan int
		if e.mirror != nil {
			status = e.mirror.offer(r)
		}
		next.ServeHTTP(w, r)
		if status != nil {
			status <- st.rw.status
		}
	})
}
