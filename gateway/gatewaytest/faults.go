package gatewaytest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Fault describes how a FaultBackend misbehaves. The zero value is a
// healthy echo backend.
//
// A misbehaving request first waits Latency, then, in this order of
// precedence: Reset, else Hang, else it is answered with Status (and
// StallBody). The request body is always read in full first, as a real
// backend would, so a fault never leaves an unread body behind.
type Fault struct {
	// Latency is added before answering (or resetting).
	Latency time.Duration
	// Status is the status of the answer, a final status from 200 to 599.
	// If zero, 200. The body is the Echo JSON whatever the status.
	Status int
	// Reset accepts and reads the request, then resets the TCP connection
	// (SO_LINGER 0, then close) without answering: the client reads
	// "connection reset by peer". A client that retries on a fresh
	// connection (net/http does so for idempotent requests on a reused
	// one) sends the request again, so Hits counts both.
	Reset bool
	// Hang never answers, until the client gives up or the backend is
	// killed; the connection is then closed without a response.
	Hang bool
	// StallBody sends the headers (with the full Content-Length) and the
	// first half of the body, then stalls this long before the rest.
	StallBody time.Duration
	// FailEvery makes only every n-th request misbehave, counted from the
	// NewFaultBackend or Set that installed the fault: with 3, requests 3,
	// 6, 9... misbehave and the others are healthy echoes. If zero (or 1),
	// every request misbehaves.
	FailEvery int
}

// FaultBackend is a real HTTP/1.1 server on 127.0.0.1 that answers like the
// echo backend (EchoHandler) but misbehaves as its Fault says. Its fault can
// be changed while it runs, and it can be killed (the listener and every
// connection close, as when a process dies) and revived on the same
// address.
//
// Responses carry an X-Backend header with the backend's name.
//
// All methods are safe for concurrent use. Kill and Close wait until every
// request the backend was serving has ended.
type FaultBackend struct {
	// Name identifies the backend in Echo bodies and X-Backend headers.
	// It must not be changed.
	Name string

	tb    testing.TB // nil for StartFaultBackend
	addr  string
	fault atomic.Pointer[faultState]
	hits  atomic.Int64

	mu     sync.Mutex // serialises Kill, Revive and Close
	cur    *life      // nil while dead
	closed bool
}

// faultState is an installed fault with its own request count, so that
// FailEvery counts from the Set that installed it.
type faultState struct {
	Fault
	n atomic.Int64
}

// life is one incarnation of the backend: a server on a listener, from
// start (or Revive) to Kill.
type life struct {
	srv    *http.Server
	served chan struct{} // closed when Serve has returned

	mu     sync.Mutex
	active int
	stop   chan struct{} // closed by die: handlers give up
	idle   chan struct{} // closed once stopped and no handler is active
}

// NewFaultBackend starts a fault backend on a fresh 127.0.0.1 port and
// closes it when the test ends. It fails the test if it cannot listen.
func NewFaultBackend(t testing.TB, name string, f Fault) *FaultBackend {
	t.Helper()
	b, err := StartFaultBackend(name, f)
	if err != nil {
		t.Fatalf("gatewaytest: %v", err)
	}
	b.tb = t
	t.Cleanup(b.Close)
	return b
}

// StartFaultBackend is NewFaultBackend outside a test, for programs that
// need a stand-in backend (the examples' demos): the caller must call
// Close.
func StartFaultBackend(name string, f Fault) (*FaultBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault backend %s: %w", name, err)
	}
	b := &FaultBackend{Name: name, addr: ln.Addr().String()}
	b.Set(f)
	b.cur = b.start(ln)
	return b, nil
}

// Set replaces the backend's fault; requests already being served keep the
// fault they started with. It restarts the FailEvery count.
func (b *FaultBackend) Set(f Fault) { b.fault.Store(&faultState{Fault: f}) }

// URL returns the backend's base URL, "http://127.0.0.1:port". It stays the
// same across Kill and Revive.
func (b *FaultBackend) URL() string { return "http://" + b.addr }

// Addr returns the backend's host:port.
func (b *FaultBackend) Addr() string { return b.addr }

// Hits returns how many requests the backend received (faulty ones
// included) since it started.
func (b *FaultBackend) Hits() int64 { return b.hits.Load() }

// Kill closes the listener and every connection, as when the instance's
// process dies: new connections are refused and requests in flight end
// without an answer. It returns once they have ended. Killing a dead
// backend does nothing.
func (b *FaultBackend) Kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.killLocked()
}

// Revive listens again on the same address and serves with the current
// fault. Reviving a live or closed backend does nothing. If the address
// cannot be bound again (another process took the port in between), the
// test is marked failed (t.Errorf); a backend from StartFaultBackend panics.
func (b *FaultBackend) Revive() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil || b.closed {
		return
	}
	ln, err := listenAgain(b.addr)
	if err != nil {
		err = fmt.Errorf("gatewaytest: revive %s on %s: %w", b.Name, b.addr, err)
		if b.tb == nil {
			panic(err)
		}
		b.tb.Errorf("%v", err)
		return
	}
	b.cur = b.start(ln)
}

// Close kills the backend for good: later Revives do nothing.
// NewFaultBackend registers it with t.Cleanup.
func (b *FaultBackend) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.killLocked()
}

func (b *FaultBackend) killLocked() {
	l := b.cur
	if l == nil {
		return
	}
	b.cur = nil
	// Close the connections before waking the handlers: a handler that
	// returned while its connection was still open would let net/http send
	// a response the dead process never sent.
	l.srv.Close()
	l.die()
	<-l.served
	<-l.idle
}

// listenAgain binds addr, retrying briefly: the port was ours a moment
// ago, and a racing bind by another process is the only expected failure.
func listenAgain(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func (b *FaultBackend) start(ln net.Listener) *life {
	l := &life{served: make(chan struct{}), stop: make(chan struct{}), idle: make(chan struct{})}
	l.srv = &http.Server{
		Handler:           b.handler(l),
		ReadHeaderTimeout: 10 * time.Second,
		// Faults make the server log about connections it broke on purpose.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(l.served)
		l.srv.Serve(ln)
	}()
	return l
}

// enter registers a handler; it reports false once the life is over.
func (l *life) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.stop:
		return false
	default:
	}
	l.active++
	return true
}

func (l *life) leave() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if l.active == 0 && isClosed(l.stop) {
		close(l.idle)
	}
}

func (l *life) die() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.stop)
	if l.active == 0 {
		close(l.idle)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// wait sleeps d, or until the client gives up or the backend dies; it
// reports whether the whole d elapsed. A negative d waits for ever.
func (l *life) wait(r *http.Request, d time.Duration) bool {
	var expired <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-expired:
		return true
	case <-r.Context().Done():
	case <-l.stop:
	}
	return false
}

func (b *FaultBackend) handler(l *life) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.enter() {
			panic(http.ErrAbortHandler)
		}
		defer l.leave()
		b.hits.Add(1)
		st := b.fault.Load()
		f := st.Fault
		if n := st.n.Add(1); f.FailEvery > 1 && n%int64(f.FailEvery) != 0 {
			f = Fault{}
		}
		// Reading the body to the end also lets net/http notice a client
		// that hangs up, which cancels r.Context() and ends the waits.
		io.Copy(io.Discard, r.Body)
		if f.Latency > 0 && !l.wait(r, f.Latency) {
			panic(http.ErrAbortHandler) // the client left or the backend died
		}
		switch {
		case f.Reset:
			reset(w)
		case f.Hang:
			l.wait(r, -1)
			// Abort rather than return, so that no response is written.
			panic(http.ErrAbortHandler)
		default:
			b.answer(w, r, l, f)
		}
	})
}

// reset closes the connection with an RST instead of a FIN.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

func (b *FaultBackend) answer(w http.ResponseWriter, r *http.Request, l *life, f Fault) {
	status := f.Status
	if status == 0 {
		status = http.StatusOK
	}
	h := w.Header()
	h.Set("X-Backend", b.Name)
	if !bodyAllowed(status) {
		w.WriteHeader(status)
		return
	}
	body, _ := json.Marshal(echoOf(b.Name, r))
	body = append(body, '\n')
	h.Set("Content-Type", "application/json")
	// The full length is announced so a client sees a stalled body as
	// unfinished, not as a short one.
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if f.StallBody <= 0 {
		w.Write(body)
		return
	}
	half := len(body) / 2
	w.Write(body[:half])
	http.NewResponseController(w).Flush()
	if !l.wait(r, f.StallBody) {
		panic(http.ErrAbortHandler)
	}
	w.Write(body[half:])
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// IsReset reports whether err is a connection reset by the peer, as a
// client of a backend with Fault.Reset sees.
func IsReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// IsRefused reports whether err is a refused connection, as a client of a
// killed backend sees.
func IsRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
