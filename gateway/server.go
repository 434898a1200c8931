package gateway

import (
	"context"

	"errors"
	"github.com/pyairtable/api-gateway/gateway/connguard"
	"github.com/pyairtable/api-gateway/gateway/h1"
	"net"
	"net/http"
	"sync"
	"time"
)

// ServerSettings configures the listener side of Serve.
type ServerSettings struct {
	// ReadHeaderTimeout bounds reading request headers. If zero, 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. If zero, 30s.
	// Negative means none.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response; streams extend it on every
	// flush, so it cuts stalled clients, not long streams. If zero, 30s.
	// Negative means none.
	WriteTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. If zero, 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers. If zero, 1 MiB.
	MaxHeaderBytes int
	// Concurrency caps open client connections; further ones wait in the
	// listen backlog. If zero, 262144.
	Concurrency int
	// ShutdownDelay is how long /ready reports 503 before the listener
	// closes, so load balancers stop sending new connections. If zero,
	// 5s. Negative means none.
	ShutdownDelay time.Duration
	// NetHTTPOnly serves every connection with net/http's server. By
	// default h1's server takes the everyday requests (GET and HEAD
	// without a body) with less memory per connection, and hands the
	// connections that send anything else to net/http.
	NetHTTPOnly bool
	// ShutdownTimeout bounds waiting for in-flight requests (including
	// streams) after the listener closed. If zero, 30s.
	ShutdownTimeout time.Duration
}

func (s ServerSettings) withDefaults() ServerSettings {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		} else if *d < 0 {
			*d = 0
		}
	}
	def(&s.ReadHeaderTimeout, 10*time.Second)
	def(&s.ReadTimeout, 30*time.Second)
	def(&s.WriteTimeout, 30*time.Second)
	def(&s.IdleTimeout, 120*time.Second)
	def(&s.ShutdownDelay, 5*time.Second)
	def(&s.ShutdownTimeout, 30*time.Second)
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = 1 << 20
	}
	if s.Concurrency == 0 {
		s.Concurrency = 262144
	}
	return s
}

// NewServer returns an http.Server for h with the hardening of s.
func NewServer(h http.Handler, s ServerSettings) *http.Server {
	s = s.withDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		// The write timeout is applied per response by the gateway so that
		// streams can extend it; a server-wide one would cut them.
		WriteTimeout:   0,
		IdleTimeout:    s.IdleTimeout,
		MaxHeaderBytes: s.MaxHeaderBytes,
	}
}

// Serve serves the gateway on ln until ctx is done, then shuts down
// gracefully: /ready turns 503 at once, ShutdownDelay lets load balancers
// notice, then the listener closes and in-flight requests (streams too)
// get up to ShutdownTimeout to finish. It returns nil after a clean
// shutdown.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	s := g.server
	srv := NewServer(g, s)
	// The guard sees the raw bytes of every request head (framing checks)
	// and caps connections per client address.
	ln = connguard.Listen(LimitListener(ln, s.Concurrency), connguard.Settings{
		MaxConnsPerIP: g.tbl.Load().limits.MaxConnsPerIP,
		MaxHeadBytes:  s.MaxHeaderBytes + 4096,
		WriteTimeout:  s.WriteTimeout,
	})
	// Connections h1's server hands over reach net/http wrapped.
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return connguard.ConnContext(ctx, h1.Unwrap(c))
	}
	var sv interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
		Close() error
	} = srv
	if !s.NetHTTPOnly {
		sv = &h1.Server{Std: srv}
	}
	errc := make(chan error, 1)
	go func() { errc <- sv.Serve(ln) }()
	bgCtx, stopBg := context.WithCancel(context.Background())
	bgDone := make(chan struct{})
	go func() {
		defer close(bgDone)
		g.Run(bgCtx)
	}()
	defer func() {
		stopBg()
		<-bgDone
	}()
	g.ready.Store(true)
	select {
	case err := <-errc:
		g.ready.Store(false)
		return err
	case <-ctx.Done():
	}
	g.draining.Store(true)
	g.logger.Info("draining", "shutdown_delay", s.ShutdownDelay.String())
	if s.ShutdownDelay > 0 {
		t := time.NewTimer(s.ShutdownDelay)
		select {
		case <-t.C:
		case err := <-errc:
			t.Stop()
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout)
	defer cancel()
	if h := g.ws.Hub; h != nil {
		srv.RegisterOnShutdown(func() { h.Shutdown(sctx) })
	}
	err := sv.Shutdown(sctx)
	if err != nil {
		sv.Close()
	}
	// Shutdown does not wait for hijacked connections: proxied WebSocket
	// tunnels are waited for here, within the same timeout.
	for g.inflight.Load() > 0 && sctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	g.upstreamRT.CloseIdleConnections()
	g.logger.Info("stopped")
	return err
}

// Draining reports whether the gateway is shutting down.
func (g *Gateway) Draining() bool { return g.draining.Load() }

// LimitListener returns a listener that keeps at most n connections open at
// once; Accept waits while n are open.
func LimitListener(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
