package gateway

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway/hub"
)

// WebSocketSettings govern upgrades proxied to backends on routes with
// WebSocket set, and the built-in hub.
type WebSocketSettings struct {
	// IdleTimeout closes a proxied tunnel with no traffic either way for
	// this long. If zero, 5m. Negative means never.
	IdleTimeout time.Duration
	// MaxConnsPerIP and MaxConnsPerUser cap open proxied WebSocket
	// connections (429 beyond). Zero means no cap.
	MaxConnsPerIP, MaxConnsPerUser int
	// Hub, when set, is served at HubPath (default "/ws"); services
	// publish through BroadcastPath (default "/internal/broadcast") as a
	// principal holding one of BroadcastRoles (default "service").
	Hub            *hub.Hub
	HubPath        string
	BroadcastPath  string
	BroadcastRoles []string
}

func (s WebSocketSettings) withDefaults() WebSocketSettings {
	if s.IdleTimeout == 0 {
		s.IdleTimeout = 5 * time.Minute
	}
	if s.HubPath == "" {
		s.HubPath = "/ws"
	}
	if s.BroadcastPath == "" {
		s.BroadcastPath = "/internal/broadcast"
	}
	if len(s.BroadcastRoles) == 0 {
		s.BroadcastRoles = []string{"service"}
	}
	return s
}

// isWebSocketUpgrade reports whether r asks to switch to WebSocket.
func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// OriginAllowed reports whether a browser page at r's Origin may open a
// WebSocket: an origin CORS allows, else the same origin as the request.
// Requests without an Origin (non-browser clients) are allowed.
func (g *Gateway) OriginAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if e := g.tbl.Load().edge; e.cors && e.allowOrigin(origin) {
		return true
	}
	return hub.SameOrigin(r)
}

// connCounter caps concurrent connections per key.
type connCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *connCounter) acquire(key string, limit int) bool {
	if limit <= 0 || key == "" {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	if c.m[key] >= limit {
		return false
	}
	c.m[key]++
	return true
}

func (c *connCounter) release(key string, limit int) {
	if limit <= 0 || key == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[key]--; c.m[key] <= 0 {
		delete(c.m, key)
	}
}

var ProblemTooManyConnections = Problem{Type: "too-many-connections", Title: "Too many WebSocket connections", Status: http.StatusTooManyRequests}

// wsGuard applies the WebSocket rules to an upgrade on a route that allows
// it: origin check and connection caps. It returns a release func, or
// false when it answered the request itself.
func (g *Gateway) wsGuard(w http.ResponseWriter, r *http.Request, st *requestState) (func(), bool) {
	if !g.OriginAllowed(r) {
		p := ProblemForbidden
		p.Detail = "origin not allowed"
		WriteProblem(w, r, p)
		return nil, false
	}
	ws := g.ws
	ip := st.clientIP.String()
	if !g.wsByIP.acquire(ip, ws.MaxConnsPerIP) {
		WriteProblem(w, r, ProblemTooManyConnections)
		return nil, false
	}
	user := ""
	if st.principal != nil {
		user = st.principal.Tenant + "/" + st.principal.Subject
	}
	if !g.wsByUser.acquire(user, ws.MaxConnsPerUser) {
		g.wsByIP.release(ip, ws.MaxConnsPerIP)
		WriteProblem(w, r, ProblemTooManyConnections)
		return nil, false
	}
	return func() {
		g.wsByIP.release(ip, ws.MaxConnsPerIP)
		g.wsByUser.release(user, ws.MaxConnsPerUser)
	}, true
}

// serveHub answers the hub's endpoints; it reports whether p was one.
func (g *Gateway) serveHub(w http.ResponseWriter, r *http.Request, t *table, p string) bool {
	ws := g.ws
	if ws.Hub == nil {
		return false
	}
	switch p {
	case ws.HubPath:
		// The hub authenticates in its own handshake (first message).
		ws.Hub.ServeHTTP(w, r)
		return true
	case ws.BroadcastPath:
		st := stateFrom(r.Context())
		e := &routeEntry{policy: authnPolicy(ws.BroadcastRoles)}
		if err := g.authorize(e, t.auth, r, st); err != nil {
			g.writeAuthError(w, r, err)
			return true
		}
		g.broadcast.ServeHTTP(w, r)
		return true
	}
	return false
}

// tunnel is the backend side of a proxied WebSocket: it ends the
// instance's in-flight accounting when the tunnel closes, and closes a
// tunnel idle in both directions for longer than the idle timeout.
type tunnel struct {
	io.ReadWriteCloser
	in      *balancer.Instance
	start   time.Time
	now     func() time.Time
	release func()
	idle    time.Duration
	timer   *time.Timer
	once    sync.Once
}

func newTunnel(rwc io.ReadWriteCloser, in *balancer.Instance, start time.Time, now func() time.Time, idle time.Duration, release func()) *tunnel {
	t := &tunnel{ReadWriteCloser: rwc, in: in, start: start, now: now, release: release, idle: idle}
	if idle > 0 {
		t.timer = time.AfterFunc(idle, func() { t.Close() })
	}
	return t
}

func (t *tunnel) touch() {
	if t.timer != nil {
		t.timer.Reset(t.idle)
	}
}

func (t *tunnel) Read(p []byte) (int, error) {
	n, err := t.ReadWriteCloser.Read(p)
	if n > 0 {
		t.touch()
	}
	return n, err
}

func (t *tunnel) Write(p []byte) (int, error) {
	n, err := t.ReadWriteCloser.Write(p)
	if n > 0 {
		t.touch()
	}
	return n, err
}

func (t *tunnel) Close() error {
	err := t.ReadWriteCloser.Close()
	t.once.Do(func() {
		if t.timer != nil {
			t.timer.Stop()
		}
		now := t.now()
		t.in.End(now.Sub(t.start), false, now)
		if t.release != nil {
			t.release()
		}
	})
	return err
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(v string) bool { return strings.EqualFold(v, s) })
}
