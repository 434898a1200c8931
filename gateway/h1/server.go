package h1

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves the requests most of a gateway's clients send — GET and
// HEAD over HTTP/1.1, no body, a head of at most 4 KiB — and hands every
// connection that sends anything else to the net/http server Std, which
// serves it from that request on.
//
// net/http's server holds a 4 KiB read buffer and a 4 KiB write buffer for
// the whole life of a connection, a 2 KiB response buffer and a goroutine
// reading in the background for every request in flight, and a copy of
// the response header for each response. Under many busy connections
// (thousands of clients, each waiting for a slot on a backend) that is
// most of a gateway's memory. This Server holds a read buffer only while
// it reads a request head and a write buffer only while it writes a
// response, watches for the client going away only once a request has
// run for WatchDelay, and writes the header block without copying it.
//
// What it takes is what is simple to read exactly as net/http reads it:
// the request line "GET|HEAD origin-form HTTP/1.1", plain "Name: value"
// fields with CRLF line ends, exactly one valid Host, and no field that
// frames a body or changes the protocol (Content-Length,
// Transfer-Encoding, Expect, Upgrade, or a Connection other than close or
// keep-alive). A request it does not take is left unread, with the bytes
// read so far, for Std; a fuzz test holds every request it takes to the
// same reading by http.ReadRequest and net/http's server checks.
//
// Responses are framed as net/http frames them (Content-Length computed
// for a short body written before the handler returns, chunked
// otherwise, Content-Type sniffed when unset, Date added, trailers), with
// two differences: header fields are written in the map's order, and
// changes a handler makes to the header after WriteHeader and before the
// first byte goes out are sent (net/http copies the map at WriteHeader;
// the framing — Content-Length, Transfer-Encoding — follows what
// WriteHeader saw either way). Hijacking is not supported on the
// requests this Server takes: requests that ask to switch protocols
// (Upgrade) are Std's.
//
// Std.ConnState is not called for the connections this Server serves,
// Std.SetKeepAlivesEnabled does not reach them (Shutdown does), and
// Std.ConnContext sees a handed-over connection wrapped; see [Unwrap].
// TLS connections, and every connection when Std.Protocols leaves out
// HTTP/1, go to Std as they are.
type Server struct {
	// Std answers every request through its Handler. Its ReadTimeout,
	// ReadHeaderTimeout, IdleTimeout, WriteTimeout, BaseContext,
	// ConnContext and ErrorLog apply here too. It must be set, and not
	// served by anything else.
	Std *http.Server
	// WatchDelay is about how long a request runs before the Server
	// watches its connection for the client going away, which cancels the
	// request's context: between half of it and all of it. If zero, 500ms.
	WatchDelay time.Duration

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*serverConn]struct{}
	handoff   *handoffListener
	stdDone   chan struct{}
	sweepDone chan struct{}
	closing   atomic.Bool
	// epoch counts sweeps; a request records the one it started in, so
	// the sweep knows it ran long without a clock read per request.
	epoch atomic.Int64
}

// ErrServerClosed is http.ErrServerClosed, returned by Serve after
// Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// Serve accepts connections on l and serves them until l fails or the
// Server is shut down; then it closes l. It always returns a non-nil
// error: ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[*net.Listener]struct{}{}
		s.conns = map[*serverConn]struct{}{}
	}
	s.listeners[&l] = struct{}{}
	if s.handoff == nil {
		s.handoff = &handoffListener{addr: l.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
		s.stdDone = make(chan struct{})
		s.sweepDone = make(chan struct{})
		go s.sweep()
		go func() {
			defer close(s.stdDone)
			// Once Std stops serving, hand-overs close the connection
			// instead of waiting for it.
			defer s.handoff.Close()
			s.Std.Serve(s.handoff)
		}()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, &l)
		s.mu.Unlock()
		l.Close()
	}()

	base := context.Background()
	if s.Std.BaseContext != nil {
		base = s.Std.BaseContext(l)
	}
	base = context.WithValue(base, http.ServerContextKey, s.Std)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				// Out of file descriptors and the like: back off as
				// net/http does rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logf("h1: accept error: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if _, ok := nc.(*tls.Conn); ok || !s.http1() {
			// TLS (and with it HTTP/2) is net/http's to negotiate, as is
			// everything when Std does not serve HTTP/1: the connection
			// goes over untouched.
			s.handoff.give(nc)
			continue
		}
		c := &serverConn{s: s, nc: nc, remote: nc.RemoteAddr().String()}
		ctx := context.WithValue(base, http.LocalAddrContextKey, nc.LocalAddr())
		if s.Std.ConnContext != nil {
			ctx = s.Std.ConnContext(ctx, nc)
		}
		c.ctx = ctx
		if !s.track(c) {
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

// http1 reports whether Std serves HTTP/1 (it may be set to unencrypted
// HTTP/2 only).
func (s *Server) http1() bool {
	p := s.Std.Protocols
	return p == nil || p.HTTP1()
}

func (s *Server) track(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops the Server as http.Server.Shutdown does: it closes the
// listeners and the idle connections, then waits for the others to finish
// their response and close, until ctx ends. Std is shut down alongside.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.closeListeners()
	stdErr := make(chan error, 1)
	go func() { stdErr <- s.Std.Shutdown(ctx) }()
	tick := 5 * time.Millisecond
	for {
		if s.closeIdle() {
			break
		}
		t := time.NewTimer(tick)
		select {
		case <-ctx.Done():
			t.Stop()
			<-stdErr
			return ctx.Err()
		case <-t.C:
		}
		tick = min(2*tick, 500*time.Millisecond)
	}
	err := <-stdErr
	s.waitStd()
	return err
}

// Close closes the listeners and every connection at once, Std's too.
func (s *Server) Close() error {
	s.closing.Store(true)
	s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		c.state.Store(stateClosed)
		c.nc.Close()
	}
	s.mu.Unlock()
	err := s.Std.Close()
	s.waitStd()
	return err
}

// waitStd waits for the goroutines Serve started: Std's Serve and the
// sweep.
func (s *Server) waitStd() {
	s.mu.Lock()
	done, sweep := s.stdDone, s.sweepDone
	if s.handoff != nil {
		s.handoff.Close()
	}
	s.mu.Unlock()
	if done != nil {
		<-done
		<-sweep
	}
}

// sweep runs every half WatchDelay and starts the watch of each request
// that has been running since before the previous sweep, so a request is
// watched once it has run between half a WatchDelay and a whole one: one
// goroutine for all connections instead of a timer per request. It ends
// when the Server closes.
func (s *Server) sweep() {
	defer close(s.sweepDone)
	d := s.WatchDelay
	if d <= 0 {
		d = 500 * time.Millisecond
	}
	t := time.NewTicker(max(d/2, time.Millisecond))
	defer t.Stop()
	for range t.C {
		if s.closing.Load() {
			return
		}
		e := s.epoch.Add(1)
		s.mu.Lock()
		for c := range s.conns {
			if st := c.started.Load(); st != 0 && st < e {
				c.startWatch()
			}
		}
		s.mu.Unlock()
	}
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.listeners {
		(*l).Close()
	}
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) logf(format string, args ...any) {
	if l := s.Std.ErrorLog; l != nil {
		l.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// Connection states: a connection is idle while it waits for a request's
// first bytes; Shutdown closes only idle ones.
const (
	stateIdle int32 = iota
	stateActive
	stateClosed
)

// Disconnect watch states.
const (
	watchOff     = iota // no request, or the watch ended by itself
	watchArmed          // a request runs; the sweep may start the watch
	watchReading        // the watch is blocked reading the connection
	watchAborted        // the request ended while the watch read
)

// Heads are read into a small buffer, which most fit and which is what
// a connection waiting for its next request holds; one that does not fit
// moves to a large one. Heads longer than maxHead are Std's.
const (
	smallHead = 1 << 10
	maxHead   = 4 << 10
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallHead); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, maxHead); return &b }}
)

// serverConn is one client connection served by the Server.
type serverConn struct {
	s      *Server
	nc     net.Conn
	ctx    context.Context
	remote string
	state  atomic.Int32
	handed bool // given to Std
	ownWD  bool // a handler set the write deadline

	// in holds bytes read and not yet served, in[:n]: held while a head
	// is read, and after it only when a pipelined request follows.
	in *[]byte
	n  int

	// The disconnect watch, armed for each request and started by the
	// Server's sweep.
	started atomic.Int64 // the sweep epoch the request started in, plus one; 0 for none
	wmu     sync.Mutex
	wstate  int
	wdone   chan struct{}
	cancel  context.CancelFunc
	peeked  bool // the watch read the first byte of the next request
	peek    byte
	gone    bool // the watch saw the client leave
}

func (c *serverConn) serve() {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.logf("http: panic serving %v: %v\n%s", c.remote, v, buf)
		}
		c.stopWatch()
		if c.handed {
			return
		}
		c.releaseIn()
		c.s.untrack(c)
		c.nc.Close()
	}()
	for first := true; ; first = false {
		req, cancel, ok := c.readRequest(first)
		if !ok {
			return
		}
		if req == nil {
			c.handOver()
			return
		}
		if !c.serveRequest(req, cancel) {
			return
		}
		if !c.state.CompareAndSwap(stateActive, stateIdle) || c.s.closing.Load() {
			return
		}
	}
}

// readRequest waits for the next request and reads it. ok is false when
// the connection is to be closed; a nil req with ok is a request for Std,
// whose bytes so far are in c.in.
func (c *serverConn) readRequest(first bool) (req *http.Request, cancel context.CancelFunc, ok bool) {
	// The timeouts as net/http reads them: a zero one falls back to
	// ReadTimeout, a negative one is none.
	std := c.s.Std
	hdr := std.ReadHeaderTimeout
	if hdr == 0 {
		hdr = std.ReadTimeout
	}
	wait := std.IdleTimeout
	if wait == 0 {
		wait = std.ReadTimeout
	}
	if first {
		wait = hdr
	}
	if c.in == nil {
		c.in = smallPool.Get().(*[]byte)
		c.n = 0
	}
	buf := *c.in
	if c.peeked {
		buf[c.n] = c.peek
		c.n++
		c.peeked = false
	}
	if c.n == 0 {
		// One deadline per request: the wait for it. A head that does
		// not arrive whole in the first read gets ReadHeaderTimeout from
		// then on.
		c.nc.SetReadDeadline(deadline(wait))
		m, err := c.nc.Read(buf)
		if err != nil && m == 0 {
			return nil, nil, false
		}
		c.n = m
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return nil, nil, false // Shutdown closed it
	}
	moved := first // the first wait was already the header timeout
	for {
		if !takesMethod(buf[:c.n]) {
			return nil, nil, true
		}
		if end := headEnd(buf[:c.n]); end == -2 {
			return nil, nil, true
		} else if end > 0 {
			h, ok := parseHead(string(buf[:end]))
			if !ok {
				return nil, nil, true
			}
			ctx, cancel := context.WithCancel(c.ctx)
			req, err := h.request(ctx)
			if err != nil {
				cancel()
				return nil, nil, true
			}
			req.RemoteAddr = c.remote
			if rest := c.n - end; rest > 0 {
				copy(buf, buf[end:c.n])
				c.n = rest
			} else {
				c.releaseIn()
			}
			return req, cancel, true
		}
		if c.n == len(buf) {
			if len(buf) == maxHead {
				return nil, nil, true
			}
			large := largePool.Get().(*[]byte)
			copy(*large, buf[:c.n])
			smallPool.Put(c.in)
			c.in, buf = large, *large
		}
		if !moved {
			// Also when the head began with bytes already here (a
			// pipelined request, the watch's byte): whatever deadline
			// was left on the connection must not apply.
			c.nc.SetReadDeadline(deadline(hdr))
			moved = true
		}
		m, err := c.nc.Read(buf[c.n:])
		c.n += m
		if err != nil {
			return nil, nil, false
		}
	}
}

func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

func (c *serverConn) releaseIn() {
	if c.in != nil {
		if len(*c.in) == maxHead {
			largePool.Put(c.in)
		} else {
			smallPool.Put(c.in)
		}
		c.in = nil
		c.n = 0
	}
}

// serveRequest runs the handler for req and ends its response; it reports
// whether the connection may serve another request.
func (c *serverConn) serveRequest(req *http.Request, cancel context.CancelFunc) bool {
	defer cancel()
	std := c.s.Std
	if std.WriteTimeout > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(std.WriteTimeout))
	}
	w := &response{c: c, req: req, header: make(http.Header, 16), cl: -1, cancel: cancel, wantsClose: req.Close}
	if c.in == nil {
		c.armWatch(cancel)
	}
	h := std.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	h.ServeHTTP(w, req)
	c.stopWatch()
	keep := w.finish()
	if c.ownWD {
		c.ownWD = false
		c.nc.SetWriteDeadline(time.Time{})
	}
	return keep && !c.gone
}

// handOver gives the connection, with the bytes read so far, to Std, and
// forgets it.
func (c *serverConn) handOver() {
	pending := bytes.Clone((*c.in)[:c.n])
	c.releaseIn()
	// Std sets deadlines only for the timeouts it has; none of this
	// Server's may follow the connection there.
	c.nc.SetReadDeadline(time.Time{})
	c.nc.SetWriteDeadline(time.Time{})
	c.handed = true
	c.s.untrack(c)
	c.s.handoff.give(&handedConn{Conn: c.nc, pending: pending})
}

func (c *serverConn) armWatch(cancel context.CancelFunc) {
	c.wmu.Lock()
	c.wstate = watchArmed
	c.cancel = cancel
	c.wmu.Unlock()
	c.started.Store(c.s.epoch.Load() + 1)
}

// startWatch starts the watch of an armed request (called by the sweep).
func (c *serverConn) startWatch() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wstate == watchArmed {
		c.wstate = watchReading
		if c.wdone == nil {
			c.wdone = make(chan struct{}, 1)
		}
		// Cleared here, under the lock stopWatch takes, so that an
		// abort's deadline always comes after it.
		c.nc.SetReadDeadline(time.Time{})
		go c.watch()
	}
}

// watch reads the connection while a request runs long: an error or end
// of stream means the client went away (the request's context is
// cancelled), a byte is the start of the next request (kept).
func (c *serverConn) watch() {
	var b [1]byte
	n, err := c.nc.Read(b[:])

	c.wmu.Lock()
	aborted := c.wstate == watchAborted
	var ne net.Error
	switch {
	case n == 1:
		c.peeked, c.peek = true, b[0]
	case err != nil && !(errors.As(err, &ne) && ne.Timeout()):
		// A timeout is the end of the request (or a deadline the
		// handler set), never the client leaving.
		c.gone = true
		c.cancel()
	}
	c.wstate = watchOff
	c.wmu.Unlock()
	if aborted {
		c.wdone <- struct{}{}
	}
}

// stopWatch ends the watch of the request that just ended, waiting for a
// read in progress to return.
func (c *serverConn) stopWatch() {
	c.started.Store(0)
	c.wmu.Lock()
	switch c.wstate {
	case watchArmed:
		c.wstate = watchOff
	case watchReading:
		c.wstate = watchAborted
		c.nc.SetReadDeadline(aLongTimeAgo)
		c.wmu.Unlock()
		<-c.wdone
		return
	}
	c.wmu.Unlock()
}

// handoffListener is the listener Std serves: the connections this Server
// hands over.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give hands c to Std, or closes it when Std no longer serves.
func (l *handoffListener) give(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// handedConn is a connection handed to Std: it replays the bytes the
// Server read before it reads on.
type handedConn struct {
	net.Conn
	pending []byte
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close the connection after an error
// answer, as it does with the connection itself.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Unwrap returns the connection as accepted when c is one a [Server]
// handed to its Std, and c otherwise. Std.ConnContext and Std.ConnState
// see handed-over connections wrapped, since the wrapper replays the bytes
// the Server had read; a ConnContext that looks for a connection type of
// its own unwraps first.
func Unwrap(c net.Conn) net.Conn {
	if h, ok := c.(*handedConn); ok {
		return h.Conn
	}
	return c
}
