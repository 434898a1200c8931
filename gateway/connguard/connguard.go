// Package connguard guards an HTTP/1.1 server at the connection level: it
// refuses requests whose message framing is ambiguous (the raw material of
// request smuggling) and caps the number of open connections per client IP.
//
// Go's net/http server already rejects conflicting Content-Length fields and
// transfer codings other than a single "chunked", but it quietly accepts
// several things that a proxy in front of it, or behind it, may read
// differently: Content-Length together with Transfer-Encoding (it drops the
// Content-Length), Transfer-Encoding on an HTTP/1.0 request (it ignores it),
// obsolete line folding, bare LF line endings and bare LF inside chunked
// trailers. A handler cannot see any of this because the server has already
// normalised the request, so the guard sits below the server, on the byte
// stream:
//
//	gl := connguard.Listen(ln, connguard.Settings{MaxConnsPerIP: 100})
//	srv := &http.Server{
//		Handler:     h, // calls connguard.Check(r.Context()) first
//		ConnContext: connguard.ConnContext,
//	}
//	srv.Serve(gl)
//
// Every accepted connection is a [*Conn] whose Read hands bytes to the server
// unchanged while a small state machine follows the stream of requests:
// request line and header block, then the body exactly as Go frames it
// (chunked, Content-Length or none) to find the next request head. Each head
// yields a verdict, queued on the connection. The handler fetches the
// verdict of the request it is serving with [Check] and, when it is an error,
// answers 400 and closes the connection without forwarding anything.
//
// The sniffer keeps no copy of the bytes: its memory is a fixed-size struct
// whatever the input, and clean traffic costs no allocation. Once it meets
// something it refuses it stops following the stream, and every later
// [Check] on that connection reports the problem, so a connection cannot be
// resynchronised by an attacker after a bad request.
//
// Limits: the guard only sees plaintext HTTP/1.x. With http.Server.ServeTLS
// the server wraps the guarded connection in TLS, [ConnContext] sees a
// *tls.Conn and stores nothing, and [Check] returns nil: terminate TLS below
// the guard (Listen(tls.NewListener(ln, cfg), …)) to keep it, at the price of
// r.TLS being nil and no HTTP/2 (the server recognises TLS only by the
// concrete *tls.Conn type). HTTP/2 framing has no such ambiguity.
package connguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBadFraming is wrapped by every error [Check] returns.
var ErrBadFraming = errors.New("connguard: ambiguous request framing")

// DefaultMaxHeadBytes is the head size limit used when
// Settings.MaxHeadBytes is zero: http.DefaultMaxHeaderBytes plus the 4 KiB
// of slack the server allows on top of it.
const DefaultMaxHeadBytes = 1<<20 + 4<<10

// Settings configures [Listen].
type Settings struct {
	// MaxConnsPerIP caps the connections open at the same time from one
	// remote IP address. A connection beyond the cap is closed by Accept
	// before anything is read from it or written to it, and counted in
	// Stats.RefusedPerIP. Connections whose remote address is not an IP
	// address (Unix sockets) are not capped. If zero or negative, there is
	// no cap.
	MaxConnsPerIP int

	// MaxHeadBytes bounds one request head (request line, header fields
	// and the blank line ending them), and so the work the sniffer does
	// before a verdict. A longer head is refused. Keep it at least
	// http.Server.MaxHeaderBytes + 4096 so the guard never refuses a head
	// the server would accept. If zero or negative, DefaultMaxHeadBytes
	// (1 MiB + 4 KiB) is used.
	MaxHeadBytes int

	// DisableGeneralOptionsHandler must mirror the http.Server field of
	// the same name. The server answers "OPTIONS *" requests itself unless
	// that field is set, so the handler never calls Check for them and the
	// guard must not queue a verdict for them.
	DisableGeneralOptionsHandler bool

	// WriteTimeout, when positive, keeps a write deadline on every
	// connection that is at least WriteTimeout/2 ahead whenever request
	// bytes arrive, so a client that stops reading cannot hold a response
	// write (the server's own error answers and 100 Continue included)
	// forever, while a keep-alive connection never carries a stale
	// deadline into its next request. The deadline moves only when less
	// than half of it is left: one timer update per WriteTimeout/2 instead
	// of one per request. Streams extend it with [Conn.ExtendWriteDeadline].
	// The guard owns the write deadline until the connection is hijacked
	// (see [Conn.SetWriteDeadline]). Use it with http.Server.WriteTimeout
	// zero.
	WriteTimeout time.Duration
}

// Stats are cumulative counters of a [Listener].
type Stats struct {
	Accepted     uint64 // connections returned by Accept
	RefusedPerIP uint64 // connections closed at once because of MaxConnsPerIP
	BadFraming   uint64 // Check calls that returned an error
	Open         int64  // connections returned by Accept and not yet closed
}

// Listener wraps a net.Listener: Accept applies the per-IP cap and returns
// connections as [*Conn].
//
// A Listener is safe for concurrent use. It starts no goroutine; Close
// closes the wrapped listener.
type Listener struct {
	ln       net.Listener
	maxPerIP int
	maxHead  int64
	options  bool // a verdict is queued for "OPTIONS *"
	wt       time.Duration

	mu    sync.Mutex
	perIP map[netip.Addr]int // open connections per IP; an entry is deleted at zero

	accepted atomic.Uint64
	refused  atomic.Uint64
	bad      atomic.Uint64
	open     atomic.Int64
}

// Listen wraps ln. It does not start accepting: the caller's server does,
// through the returned listener's Accept.
func Listen(ln net.Listener, s Settings) *Listener {
	l := &Listener{
		ln:       ln,
		maxPerIP: max(s.MaxConnsPerIP, 0),
		maxHead:  int64(s.MaxHeadBytes),
		options:  s.DisableGeneralOptionsHandler,
		wt:       max(s.WriteTimeout, 0),
	}
	if l.maxHead <= 0 {
		l.maxHead = DefaultMaxHeadBytes
	}
	if l.maxPerIP > 0 {
		l.perIP = make(map[netip.Addr]int)
	}
	return l
}

// Accept waits for the next connection whose remote IP is below the cap and
// returns it as a *Conn. Connections over the cap are closed and skipped.
// Errors are those of the wrapped listener.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			return nil, err
		}
		ip, capped := l.remoteIP(nc)
		if capped && !l.acquire(ip) {
			l.refused.Add(1)
			nc.Close()
			continue
		}
		l.accepted.Add(1)
		l.open.Add(1)
		c := &Conn{Conn: nc, l: l, ip: ip, capped: capped}
		c.s.init(l.maxHead, l.options)
		return c, nil
	}
}

// Close closes the wrapped listener. Connections already accepted stay open.
func (l *Listener) Close() error { return l.ln.Close() }

// Addr returns the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Stats returns the listener's counters. The fields are read one by one, so
// they may be slightly inconsistent with each other under load.
func (l *Listener) Stats() Stats {
	return Stats{
		Accepted:     l.accepted.Load(),
		RefusedPerIP: l.refused.Load(),
		BadFraming:   l.bad.Load(),
		Open:         l.open.Load(),
	}
}

// remoteIP reports the IP that nc counts against, and whether it counts at
// all.
func (l *Listener) remoteIP(nc net.Conn) (netip.Addr, bool) {
	if l.maxPerIP == 0 {
		return netip.Addr{}, false
	}
	switch a := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		// Unmap so that an IPv4 client reaching a dual-stack socket counts
		// against the same entry as over IPv4.
		return a.AddrPort().Addr().Unmap(), true
	case nil:
		return netip.Addr{}, false
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}, false
		}
		return ap.Addr().Unmap(), true
	}
}

func (l *Listener) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.perIP[ip]
	if n >= l.maxPerIP {
		return false
	}
	l.perIP[ip] = n + 1
	return true
}

func (l *Listener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.perIP[ip]; n > 1 {
		l.perIP[ip] = n - 1
	} else {
		delete(l.perIP, ip)
	}
}

// Conn is a connection accepted by a [Listener]. Read passes the bytes
// through unchanged and sniffs the request framing on the way; Write and the
// other net.Conn methods go straight to the wrapped connection.
//
// Read must not be called concurrently with itself (http.Server never does:
// its background read and its request reads take turns). Check, Hijacked
// and Close may be called from any goroutine.
type Conn struct {
	net.Conn

	l      *Listener
	ip     netip.Addr
	capped bool
	closed atomic.Bool

	wdl      atomic.Int64 // the write deadline last set, in Unix ns; 0 for none
	hijacked atomic.Bool  // the deadline belongs to whoever took the connection

	s sniffer
}

// Read reads from the wrapped connection and feeds what it got to the
// sniffer before returning it. Request bytes also move the write deadline
// (see Settings.WriteTimeout).
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.s.term.Load() == nil {
		c.s.feed(b[:n])
		if c.l.wt > 0 {
			c.ExtendWriteDeadline(time.Now())
		}
	}
	return n, err
}

// ExtendWriteDeadline makes sure the write deadline is at least
// Settings.WriteTimeout/2 after now, moving it to now + WriteTimeout when
// it is not. It reports false, doing nothing, when the listener has no
// WriteTimeout: the caller must then set deadlines itself. Once the
// connection was hijacked it leaves the deadline alone. Safe for
// concurrent use.
func (c *Conn) ExtendWriteDeadline(now time.Time) bool {
	wt := c.l.wt
	if wt <= 0 {
		return false
	}
	if c.hijacked.Load() {
		return true
	}
	n := now.UnixNano()
	if dl := c.wdl.Load(); dl != 0 && dl-n >= int64(wt/2) {
		return true
	}
	t := now.Add(wt)
	c.wdl.Store(t.UnixNano())
	c.Conn.SetWriteDeadline(t)
	return true
}

// SetWriteDeadline sets the wrapped connection's write deadline and
// remembers it for ExtendWriteDeadline. With a WriteTimeout the guard owns
// the write deadline until the connection is hijacked, and a zero t (the
// server clears the deadline after every response) is ignored: the next
// request's bytes move the deadline anyway, and skipping the clear saves a
// timer update per request.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() && c.owned() {
		return nil
	}
	c.remember(t)
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines of the wrapped connection and hands the
// write deadline over for good: whoever sets both manages them from now on.
// net/http does exactly that when a handler hijacks the connection, so a
// WebSocket tunnel never inherits the guard's write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	c.hijacked.Store(true)
	c.remember(t)
	return c.Conn.SetDeadline(t)
}

func (c *Conn) owned() bool { return c.l.wt > 0 && !c.hijacked.Load() }

func (c *Conn) remember(t time.Time) {
	if t.IsZero() {
		c.wdl.Store(0)
	} else {
		c.wdl.Store(t.UnixNano())
	}
}

// Close closes the wrapped connection. The first call also releases the
// connection's place in the per-IP count.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		if c.capped {
			c.l.release(c.ip)
		}
		c.l.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite shuts down the writing side of the wrapped connection when it
// supports that (TCP does). http.Server uses it to let a client read an
// error response before the connection goes away.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// NetConn returns the wrapped connection. Reading from it directly bypasses
// the guard.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Hijacked tells c that the bytes after the current request are no longer
// HTTP/1 (a 101 Switching Protocols was sent and the connection hijacked),
// so sniffing stops. A later Check reports an error.
//
// Calling it is an optimisation, not a requirement: when an upgrade is
// refused the next bytes are a request again and must still be judged, so
// the guard never stops on its own at an Upgrade request. After a real
// upgrade, the first bytes that are not HTTP end the sniffing with a verdict
// nobody asks for.
func (c *Conn) Hijacked() {
	c.hijacked.Store(true)
	c.s.stop(errHijacked)
}

// Check is the package-level [Check] for a *Conn already at hand (from
// [FromContext]); the same rules apply, and a nil c has no verdict to
// give (nil).
func (c *Conn) Check() error {
	if c == nil {
		return nil
	}
	err := c.s.pop()
	if err != nil {
		c.l.bad.Add(1)
	}
	return err
}

type connKey struct{}

// ConnContext is meant for http.Server.ConnContext: it stores c in the
// context when c is a *Conn, and returns ctx unchanged otherwise (for
// example a *tls.Conn made by ServeTLS).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, connKey{}, gc)
	}
	return ctx
}

// FromContext returns the *Conn that ConnContext stored in ctx, if any.
func FromContext(ctx context.Context) (*Conn, bool) {
	c, ok := ctx.Value(connKey{}).(*Conn)
	return c, ok
}

// Check returns the verdict for the request being served on the connection
// of ctx: nil when its framing was clean, else an error wrapping
// ErrBadFraming that names the problem (for example "Content-Length with
// Transfer-Encoding"). The caller should answer 400 and close the
// connection (Connection: close) without forwarding the request.
//
// Each call consumes the verdict of the next request in arrival order, so a
// handler must call it exactly once per request, before anything can answer
// on its behalf. Calling it more often fails closed (an error for a request
// that has no verdict); skipping it shifts the queue and defeats the guard.
// Once the sniffer has refused something, every later call on that
// connection returns the error again.
//
// Check returns nil when ctx carries no *Conn: the request did not arrive
// through a guarded plaintext connection (HTTP/2 over TLS, for instance).
// It is safe for concurrent use and does not allocate.
func Check(ctx context.Context) error {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c.Check()
}
