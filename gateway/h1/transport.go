// Package h1 is HTTP/1.1 for both sides of a reverse proxy, written for
// the requests most of a gateway's traffic is made of and leaving the rest
// to net/http.
//
// [Server] stands in front of a net/http server: it serves bodiless GET
// and HEAD requests itself, holding buffers only while it reads or writes,
// and hands each connection that sends anything else to the net/http
// server for good.
//
// [Transport] is an upstream transport for backends that are trusted and
// speak plain HTTP/1.1. net/http's Transport gives every connection two
// goroutines, one writing requests and one reading responses, and hands
// each request to them and each response back over channels: for a proxy
// on loopback, about 15% of the CPU a request costs. This Transport writes
// the request and reads the response on the calling goroutine instead,
// and keeps no goroutine per connection.
//
// The Transport takes only the requests where that is simple and safe:
// GET, HEAD and OPTIONS without a body, over http, without Upgrade or
// Expect. Those are replayable, so a request that meets a connection that
// went bad while it sat idle (closed by the backend, timed out with a
// 408, holding stray bytes) is sent again on a fresh one. Every other
// request (bodies, upgrades, TLS backends, other methods) goes to
// Fallback, normally the http.Transport the proxy already has.
package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyairtable/api-gateway/gateway/internal/gate"
)

// Transport is an http.RoundTripper; see the package documentation for
// the requests it takes. Set its fields before first use. It is safe for
// concurrent use.
type Transport struct {
	// Fallback carries every request this Transport does not take. It
	// must be set.
	Fallback http.RoundTripper
	// DialContext connects to a backend. If nil, a net.Dialer with a 30s
	// timeout and TCP keep-alives.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdleConns bounds idle connections over all backends; 0: no bound.
	MaxIdleConns int
	// MaxIdleConnsPerHost bounds idle connections per backend; 0: 2, as
	// net/http.
	MaxIdleConnsPerHost int
	// MaxConnsPerHost bounds this Transport's connections per backend;
	// requests past it wait, in arrival order, for one to be free (or
	// for their context to end). 0: no bound.
	MaxConnsPerHost int
	// IdleConnTimeout closes connections idle this long; 0: never.
	IdleConnTimeout time.Duration
	// ReadBufferSize and WriteBufferSize size each connection's buffers;
	// 0: 4 KiB.
	ReadBufferSize, WriteBufferSize int
	// MaxResponseHeaderBytes bounds a response's header; 0: 1 MiB.
	MaxResponseHeaderBytes int64

	mu        sync.Mutex
	hosts     map[string]*hostPool
	idleTotal int
	sweeping  bool // a sweep of idle connections is scheduled
}

type hostPool struct {
	idle  []*conn    // most recently used last
	open  int        // connections, idle or busy
	users int        // requests using a connection, dialling or waiting for a slot
	slots *gate.Gate // bounds connections in use at once; nil: no bound
}

// Takes reports whether req goes through this Transport's own
// connections rather than Fallback.
func Takes(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return req.URL != nil && req.URL.Scheme == "http" && req.URL.Host != "" &&
		(req.Body == nil || req.Body == http.NoBody) && !req.Close &&
		len(req.Header["Upgrade"]) == 0 && len(req.Header["Expect"]) == 0
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !Takes(req) {
		return t.Fallback.RoundTrip(req)
	}
	// As net/http's Transport does: a header the gateway built from
	// something odd (a claim, a transform) must not reach the backend
	// as anything but an error.
	if err := validHeaders(req.Header); err != nil {
		return nil, err
	}
	addr := canonicalAddr(req.URL)
	for retried := false; ; retried = true {
		c, err := t.getConn(req.Context(), addr, retried)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		c.discard()
		// A reused connection can have gone bad while it sat idle: closed
		// by the backend (the request fails before any response
		// arrives), timed out with a 408, or holding stray bytes that do
		// not parse as a response. net/http's Transport, whose read loop
		// watches idle connections, drops such a connection before
		// using it; here the request (GET, HEAD or OPTIONS: idempotent)
		// is sent once more on a fresh one.
		if c.reused && (!c.gotBytes || c.notAnswer) && !retried && req.Context().Err() == nil {
			continue
		}
		return nil, err
	}
}

// errIdleTimeout is a 408 read on a reused connection. Servers send one
// when they close a connection that sat idle too long, before or while
// the next request arrives (net/http's Transport drops such a connection
// too); it does not answer the request.
var errIdleTimeout = errors.New("h1: backend timed out the idle connection (408)")

// validHeaders applies RFC 9110's grammar: field names are tokens, values
// hold no control characters but tab.
func validHeaders(h http.Header) error {
	for k, vv := range h {
		if !validName(k) {
			return fmt.Errorf("h1: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !validValue(v) {
				// Not the value: it may be a secret.
				return fmt.Errorf("h1: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// validValue reports whether v holds no control byte but tab. It tests
// eight bytes at a time, since most of a gateway's header bytes are long
// values (a bearer token, ids), and looks at single bytes only in a word
// that may hold one.
func validValue(v string) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
		space = 0x20 * ones
		del   = 0x7f * ones
	)
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := v[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		// The first term flags a word with a byte below 0x20, the second
		// one with a 0x7f; bytes from 0x80 up flag neither.
		y := x ^ del
		if ((x-space)&^x|(y-ones)&^y)&highs != 0 && !validBytes(w) {
			return false
		}
	}
	return validBytes(v[i:])
}

func validBytes(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

// tokenBytes marks the bytes of RFC 9110's tchar.
var tokenBytes = func() (t [256]bool) {
	for b := range 256 {
		t[b] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(b)) >= 0
	}
	return t
}()

// canonicalAddr is the host:port to dial; the usual URL already has the
// port and costs nothing.
func canonicalAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// getConn returns an idle connection to addr or dials one, once a slot
// is free (MaxConnsPerHost). fresh skips the idle ones. The connection is
// the caller's until its end.
func (t *Transport) getConn(ctx context.Context, addr string, fresh bool) (*conn, error) {
	t.mu.Lock()
	if t.hosts == nil {
		t.hosts = map[string]*hostPool{}
	}
	hp := t.hosts[addr]
	if hp == nil {
		hp = &hostPool{}
		if t.MaxConnsPerHost > 0 {
			hp.slots = gate.New(t.MaxConnsPerHost)
		}
		t.hosts[addr] = hp
	}
	hp.users++ // keeps hp in the map while this request needs it
	t.mu.Unlock()
	if hp.slots != nil {
		// Connections in use are what is bounded: an idle one counts as
		// free, so a request that waited takes it when a slot comes back.
		if _, err := hp.slots.Acquire(ctx, 0, time.Now); err != nil {
			t.mu.Lock()
			hp.users--
			t.mu.Unlock()
			return nil, context.Cause(ctx) // with no maxWait, only ctx ends a wait
		}
	}
	now := time.Now()
	var stale []*conn
	t.mu.Lock()
	for !fresh && len(hp.idle) > 0 {
		c := hp.idle[len(hp.idle)-1]
		hp.idle[len(hp.idle)-1] = nil
		hp.idle = hp.idle[:len(hp.idle)-1]
		t.idleTotal--
		if t.IdleConnTimeout > 0 && now.Sub(c.idleSince) >= t.IdleConnTimeout {
			hp.open--
			stale = append(stale, c)
			continue
		}
		t.mu.Unlock()
		closeAll(stale)
		c.reused, c.gotBytes, c.notAnswer = true, false, false
		return c, nil
	}
	hp.open++
	t.mu.Unlock()
	closeAll(stale)
	nc, err := t.dial(ctx, addr)
	if err != nil {
		t.end(hp, nil)
		return nil, err
	}
	return t.newConn(nc, hp), nil
}

func (t *Transport) dial(ctx context.Context, addr string) (net.Conn, error) {
	if t.DialContext != nil {
		return t.DialContext(ctx, "tcp", addr)
	}
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

func closeAll(cs []*conn) {
	for _, c := range cs {
		c.nc.Close()
	}
}

// end ends a request's use of hp: c (nil after a failed dial) goes back to
// the idle pool if it may, or is closed; then the request's slot goes to
// the next waiter, which finds c idle.
func (t *Transport) end(hp *hostPool, c *conn) {
	perHost := t.MaxIdleConnsPerHost
	if perHost == 0 {
		perHost = http.DefaultMaxIdleConnsPerHost
	}
	if c != nil {
		c.idleSince = time.Now()
	}
	t.mu.Lock()
	hp.users--
	keep := c != nil && len(hp.idle) < perHost && (t.MaxIdleConns <= 0 || t.idleTotal < t.MaxIdleConns)
	sweep := false
	if keep {
		hp.idle = append(hp.idle, c)
		t.idleTotal++
		sweep = t.IdleConnTimeout > 0 && !t.sweeping
		t.sweeping = t.sweeping || sweep
	} else {
		hp.open--
	}
	t.mu.Unlock()
	if c != nil && !keep {
		c.nc.Close()
	}
	if hp.slots != nil {
		hp.slots.Release()
	}
	if sweep {
		time.AfterFunc(t.IdleConnTimeout, t.sweep)
	}
}

// sweep closes connections idle past IdleConnTimeout, and runs again
// while any are idle: a backend that goes quiet does not keep
// connections open forever.
func (t *Transport) sweep() {
	now := time.Now()
	var stale []*conn
	t.mu.Lock()
	for addr, hp := range t.hosts {
		keep := hp.idle[:0]
		for _, c := range hp.idle {
			if now.Sub(c.idleSince) >= t.IdleConnTimeout {
				stale = append(stale, c)
				hp.open--
				t.idleTotal--
			} else {
				keep = append(keep, c)
			}
		}
		clear(hp.idle[len(keep):])
		hp.idle = keep
		if hp.open == 0 && hp.users == 0 {
			delete(t.hosts, addr)
		}
	}
	again := t.idleTotal > 0
	t.sweeping = again
	t.mu.Unlock()
	closeAll(stale)
	if again {
		time.AfterFunc(t.IdleConnTimeout, t.sweep)
	}
}

// CloseIdleConnections closes every idle connection, this Transport's and
// Fallback's.
func (t *Transport) CloseIdleConnections() {
	var idle []*conn
	t.mu.Lock()
	for _, hp := range t.hosts {
		idle = append(idle, hp.idle...)
		hp.open -= len(hp.idle)
		hp.idle = nil
	}
	t.idleTotal = 0
	t.mu.Unlock()
	closeAll(idle)
	if f, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

// conn is one backend connection. Only one request uses it at a time.
type conn struct {
	t         *Transport
	nc        net.Conn
	hp        *hostPool
	lr        limitedReader
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	reused    bool   // it served a request before this one
	gotBytes  bool   // the current request got some of a response
	notAnswer bool   // what the current request got cannot be its answer: no parsable head, or an idle 408
	interrupt func() // unblocks the connection's I/O; made once, not per request
}

func (t *Transport) newConn(nc net.Conn, hp *hostPool) *conn {
	rs, ws := t.ReadBufferSize, t.WriteBufferSize
	if rs <= 0 {
		rs = 4 << 10
	}
	if ws <= 0 {
		ws = 4 << 10
	}
	c := &conn{t: t, nc: nc, hp: hp}
	c.interrupt = func() { nc.SetDeadline(aLongTimeAgo) }
	c.lr.c = c
	c.br = bufio.NewReaderSize(&c.lr, rs)
	c.bw = bufio.NewWriterSize(nc, ws)
	return c
}

// limitedReader reads the connection, counting down the bytes a response
// header may still take while one is being read (limit > 0).
type limitedReader struct {
	c        *conn
	limit    int64
	exceeded bool
}

var errHeaderTooLarge = errors.New("h1: response header too large")

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.limit > 0 && int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	n, err := r.c.nc.Read(p)
	if n > 0 {
		r.c.gotBytes = true
	}
	if r.limit > 0 {
		r.limit -= int64(n)
		if r.limit <= 0 {
			r.exceeded = true
			return n, errHeaderTooLarge
		}
	}
	return n, err
}

// aLongTimeAgo is a deadline that makes blocked I/O return at once.
var aLongTimeAgo = time.Unix(1, 0)

// discard ends the request with the connection closed.
func (c *conn) discard() {
	c.nc.Close() // before its slot goes to a request that may dial anew
	c.t.end(c.hp, nil)
}

func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// Cancellation (the client leaving, a timeout) interrupts whatever
	// I/O is blocked on the connection, which then cannot be reused.
	stop := context.AfterFunc(ctx, c.interrupt)
	if !writeHead(c.bw, req) {
		if err := req.Write(c.bw); err != nil {
			return nil, failed(ctx, stop, err)
		}
	}
	if err := c.bw.Flush(); err != nil {
		return nil, failed(ctx, stop, err)
	}
	maxHeader := c.t.MaxResponseHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 1 << 20
	}
	for n := 0; ; n++ {
		c.lr.limit = maxHeader + int64(c.br.Buffered())
		var resp *http.Response
		var err error
		taken := false
		if n == 0 {
			// The usual response is parsed from the buffer by readHead;
			// anything else, and what follows a 1xx, by ReadResponse.
			if _, err = c.br.Peek(1); err == nil {
				resp, taken = readHead(c.br, req)
			} else if err == io.EOF {
				err = io.ErrUnexpectedEOF // as ReadResponse says it
			}
		}
		if !taken && err == nil {
			resp, err = http.ReadResponse(c.br, req)
		}
		c.lr.limit = 0
		if c.lr.exceeded {
			err = errHeaderTooLarge // whatever the parser made of the cut
		} else if err != nil {
			c.notAnswer = true
		}
		if err != nil {
			return nil, failed(ctx, stop, err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			// Informational responses (103 Early Hints) go to the
			// proxy's trace hook, as net/http's Transport does.
			if n >= 5 {
				return nil, failed(ctx, stop, errors.New("h1: too many 1xx responses"))
			}
			if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, failed(ctx, stop, err)
				}
			}
			continue
		}
		if resp.StatusCode == http.StatusRequestTimeout && c.reused {
			c.notAnswer = true
			return nil, failed(ctx, stop, errIdleTimeout)
		}
		reuse := !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols
		if resp.Body == http.NoBody || req.Method == http.MethodHead || resp.ContentLength == 0 && len(resp.TransferEncoding) == 0 {
			// Nothing to read: the connection is free now.
			resp.Body = http.NoBody
			c.finish(stop, reuse)
			return resp, nil
		}
		resp.Body = &body{rc: resp.Body, c: c, ctx: ctx, stop: stop, reuse: reuse}
		return resp, nil
	}
}

// failed ends a request that got no response: the error is the
// cancellation's cause when cancellation interrupted it.
func failed(ctx context.Context, stop func() bool, err error) error {
	if !stop() || ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
	}
	return err
}

// finish ends the request on c: back to the pool when the response was
// read whole, no bytes follow it, and cancellation did not touch the
// connection.
func (c *conn) finish(stop func() bool, reuse bool) {
	// Bytes past the response's end mean the backend and the gateway
	// disagree on where it ended: nothing more can be read here.
	if stop() && reuse && c.br.Buffered() == 0 {
		c.t.end(c.hp, c)
		return
	}
	c.discard()
}

// body is a response body; when it has been read to its end the
// connection goes back to the pool.
type body struct {
	rc    io.ReadCloser
	c     *conn
	ctx   context.Context
	stop  func() bool
	reuse bool
	state atomic.Int32 // bodyOpen until the connection is released
}

const (
	bodyOpen   int32 = iota
	bodyEOF          // read to its end; the connection went back to the pool
	bodyClosed       // closed early or failed; the connection was dropped
)

var errBodyClosed = errors.New("h1: read on closed response body")

func (b *body) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyEOF:
		// rc shares the connection's reader, which may now serve
		// another request: never touch it again.
		return 0, io.EOF
	case bodyClosed:
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		if b.state.CompareAndSwap(bodyOpen, bodyEOF) {
			b.c.finish(b.stop, b.reuse)
		}
	case err != nil:
		if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
			err = failed(b.ctx, b.stop, err)
			b.c.discard()
		}
	}
	return n, err
}

// Close drops the connection unless the body was read to its end:
// draining an unread remainder could take as long as the backend likes.
// Closing the connection also ends a Read blocked on it.
func (b *body) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		b.stop()
		b.c.discard()
	}
	return nil
}
