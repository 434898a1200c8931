package connguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// guarded is a real http.Server on 127.0.0.1 behind a guarded listener,
// with a handler that does what the gateway does: Check first, and on an
// error answer 400 and close.
type guarded struct {
	ts *httptest.Server
	l  *Listener

	mu  sync.Mutex
	log []string // one line per handler call
}

func newGuarded(t *testing.T, s Settings, extra http.HandlerFunc) *guarded {
	t.Helper()
	g := &guarded{}
	g.ts = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Check(r.Context()); err != nil {
			if !errors.Is(err, ErrBadFraming) {
				t.Errorf("Check() = %v, want an error wrapping ErrBadFraming", err)
			}
			g.add("bad: " + strings.TrimPrefix(err.Error(), ErrBadFraming.Error()+": "))
			w.Header().Set("Connection", "close")
			http.Error(w, "bad request framing", http.StatusBadRequest)
			return
		}
		if extra != nil && r.URL.Path == "/extra" {
			extra(w, r)
			return
		}
		n, err := io.Copy(io.Discard, r.Body)
		line := fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, n)
		if err != nil {
			line += " body error"
		}
		g.add(line)
		io.WriteString(w, "ok")
	}))
	g.l = Listen(g.ts.Listener, s)
	g.ts.Listener = g.l
	g.ts.Config.ConnContext = ConnContext
	g.ts.Config.ErrorLog = nil
	g.ts.Start()
	t.Cleanup(g.ts.Close)
	return g
}

func (g *guarded) add(line string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.log = append(g.log, line)
}

func (g *guarded) lines() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.log)
}

// exchange sends in over a new connection, in one write or dribbled a byte
// at a time, reads nResp responses and reports their status codes and
// whether the server then closed the connection.
func (g *guarded) exchange(t *testing.T, in string, dribble bool, nResp int) (statuses []int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", g.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if dribble {
		for i := range len(in) {
			// The server may close the connection after a refusal while
			// the rest is still on its way.
			if _, err := io.WriteString(c, in[i:i+1]); err != nil {
				break
			}
		}
	} else if _, err := io.WriteString(c, in); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for range nResp {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after %d responses (%v): %v", len(statuses), statuses, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	// A closed connection reads EOF at once; an open one times out.
	c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	closed = !(errors.As(err, &ne) && ne.Timeout())
	return statuses, closed
}

type rawCase struct {
	name       string
	in         string
	wantLog    []string // handler calls, in order
	wantStatus []int
	wantClosed bool
}

var rawCases = []rawCase{
	{"clean GET", get, []string{"GET / 0"}, []int{200}, false},
	{"clean POST with Content-Length", post5, []string{"POST /p 5"}, []int{200}, false},
	{"clean chunked POST with trailers", chunked, []string{"POST /c 11"}, []int{200}, false},
	{"clean Transfer-Encoding: Chunked", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		[]string{"POST /c 3"}, []int{200}, false},
	{"Content-Length with leading zeros", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 03\r\n\r\nabc",
		[]string{"POST /p 3"}, []int{200}, false},
	{"Expect 100-continue", "POST /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		[]string{"POST /p 3"}, []int{100, 200}, false},

	{"CL then TE", clte, []string{"bad: " + reason(errCLTE)}, []int{400}, true},
	{"TE then CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		[]string{"bad: " + reason(errCLTE)}, []int{400}, true},
	{"CL and TE: Chunked, odd case", "POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\nTRANSFER-ENCODING: Chunked\r\n\r\n0\r\n\r\n",
		[]string{"bad: " + reason(errCLTE)}, []int{400}, true},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n",
		[]string{"bad: " + reason(errTE10)}, []int{400}, true},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", []string{"bad: " + reason(errObsFold)}, []int{400}, true},
	{"bare LF line endings", "GET / HTTP/1.1\nHost: x\n\n", []string{"bad: " + reason(errBareLF)}, []int{400}, true},
	{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\n", []string{"bad: " + reason(errBareLF)}, []int{400}, true},
	{"duplicate equal CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		[]string{"bad: " + reason(errMultiCL)}, []int{400}, true},

	// Go refuses these itself; the handler never runs.
	{"space before colon (Go: 400)", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", nil, []int{400}, true},
	{"conflicting CL (Go: 400)", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", nil, []int{400}, true},
	{"CL with sign (Go: 400)", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", nil, []int{400}, true},
	{"TE gzip (Go: 501)", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", nil, []int{501}, true},
	{"TE gzip, chunked (Go: 501)", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", nil, []int{501}, true},

	{"pipelined clean, CL+TE, clean", "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" + clte + "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
		[]string{"GET /1 0", "bad: " + reason(errCLTE)}, []int{200, 400}, true},
	{"pipelined clean requests", get + post5 + chunked + get,
		[]string{"GET / 0", "POST /p 5", "POST /c 11", "GET / 0"}, []int{200, 200, 200, 200}, false},
	{"request head inside a chunked body", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(clte), clte) + "GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
		[]string{fmt.Sprintf("POST /c %d", len(clte)), "GET /next 0"}, []int{200, 200}, false},
	{"request head inside a Content-Length body", fmt.Sprintf("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(clte), clte) +
		"GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
		[]string{fmt.Sprintf("POST /p %d", len(clte)), "GET /next 0"}, []int{200, 200}, false},
	// Go ends the trailer at the bare LF blank line and serves the
	// request hidden behind it; a strict front end would not see it.
	{"request smuggled behind a bare LF trailer", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: a\n\n" +
		"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		[]string{"POST /c 3", "bad: " + reason(errBareLF)}, []int{200, 400}, true},
	// Go answers "OPTIONS *" without calling the handler, so it must not
	// take a verdict the next request needs.
	{"OPTIONS * then CL+TE", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + clte,
		[]string{"bad: " + reason(errCLTE)}, []int{200, 400}, true},
	{"OPTIONS * then clean", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + get,
		[]string{"GET / 0"}, []int{200, 200}, false},
	// An upgrade the handler does not perform leaves the connection in
	// HTTP/1: what follows is still judged.
	{"refused upgrade then CL+TE", "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + clte,
		[]string{"GET /ws 0", "bad: " + reason(errCLTE)}, []int{200, 400}, true},
}

func TestRawRequests(t *testing.T) {
	checkNoGoroutineLeak(t)
	for _, mode := range []string{"one write", "dribbled"} {
		for _, tt := range rawCases {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				g := newGuarded(t, Settings{}, nil)
				statuses, closed := g.exchange(t, tt.in, mode == "dribbled", len(tt.wantStatus))
				if !slices.Equal(statuses, tt.wantStatus) {
					t.Errorf("statuses = %v, want %v", statuses, tt.wantStatus)
				}
				if closed != tt.wantClosed {
					t.Errorf("connection closed = %v, want %v", closed, tt.wantClosed)
				}
				if got := g.lines(); !slices.Equal(got, tt.wantLog) {
					t.Errorf("handler log = %q, want %q", got, tt.wantLog)
				}
				bad := uint64(0)
				for _, l := range tt.wantLog {
					if strings.HasPrefix(l, "bad: ") {
						bad++
					}
				}
				if got := g.l.Stats().BadFraming; got != bad {
					t.Errorf("Stats().BadFraming = %d, want %d", got, bad)
				}
			})
		}
	}
}

func TestLargeHeads(t *testing.T) {
	checkNoGoroutineLeak(t)
	const limit = 8 << 10
	g := newGuarded(t, Settings{MaxHeadBytes: limit}, nil)
	// withHead builds a request head of exactly n bytes.
	withHead := func(n int) string {
		const pre, post = "GET /big HTTP/1.1\r\nHost: x\r\nX-Pad: ", "\r\n\r\n"
		return pre + strings.Repeat("p", n-len(pre)-len(post)) + post
	}
	tests := []struct {
		name    string
		in      string
		wantLog []string
		status  int
	}{
		{"at the limit", withHead(limit), []string{"GET /big 0"}, 200},
		{"one byte over", withHead(limit + 1), []string{"bad: " + reason(errHeadTooLarge)}, 400},
	}
	for _, tt := range tests {
		for _, dribble := range []bool{false, true} {
			g.mu.Lock()
			g.log = nil
			g.mu.Unlock()
			statuses, _ := g.exchange(t, tt.in, dribble, 1)
			if statuses[0] != tt.status {
				t.Errorf("%s (dribble %v): status = %d, want %d", tt.name, dribble, statuses[0], tt.status)
			}
			if got := g.lines(); !slices.Equal(got, tt.wantLog) {
				t.Errorf("%s (dribble %v): handler log = %q, want %q", tt.name, dribble, got, tt.wantLog)
			}
		}
	}
}

func TestHijackedConnection(t *testing.T) {
	checkNoGoroutineLeak(t)
	upgrade := func(w http.ResponseWriter, r *http.Request) {
		c, ok := FromContext(r.Context())
		if !ok {
			t.Error("FromContext() found no *Conn")
			return
		}
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer nc.Close()
		c.Hijacked()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		// Echo one line of the new protocol, which looks like a smuggled
		// request but is nobody's business now.
		line, err := brw.ReadString('\n')
		if err != nil {
			t.Error(err)
			return
		}
		io.WriteString(nc, line)
	}
	g := newGuarded(t, Settings{}, upgrade)
	c, err := net.Dial("tcp", g.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /extra HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", resp.StatusCode)
	}
	const msg = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n"
	io.WriteString(c, msg)
	echo, err := br.ReadString('\n')
	if err != nil || echo != msg[:strings.IndexByte(msg, '\n')+1] {
		t.Fatalf("echo = %q, %v; want the first line back", echo, err)
	}
	if got := g.l.Stats().BadFraming; got != 0 {
		t.Errorf("Stats().BadFraming = %d, want 0", got)
	}
}

func TestCheckWithoutConn(t *testing.T) {
	if err := Check(context.Background()); err != nil {
		t.Errorf("Check(no conn) = %v, want nil", err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	if got := ConnContext(ctx, a); got != ctx {
		t.Errorf("ConnContext(non-*Conn) returned a new context, want ctx unchanged")
	}
	if _, ok := FromContext(ctx); ok {
		t.Errorf("FromContext(empty) ok = true, want false")
	}
}

// TestCheckTooOften shows the fail-closed side of the contract: a Check
// with no request behind it is refused.
func TestCheckTooOften(t *testing.T) {
	checkNoGoroutineLeak(t)
	var second error
	g := newGuarded(t, Settings{}, func(w http.ResponseWriter, r *http.Request) {
		second = Check(r.Context())
	})
	statuses, _ := g.exchange(t, "GET /extra HTTP/1.1\r\nHost: x\r\n\r\n", false, 1)
	if statuses[0] != 200 {
		t.Fatalf("status = %d, want 200", statuses[0])
	}
	if second != errNoVerdict {
		t.Errorf("second Check() = %v, want %v", second, errNoVerdict)
	}
}

// acceptOne runs l.Accept in a goroutine and returns a channel of its
// result.
func acceptOne(l *Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantAccepted(t *testing.T, ch <-chan net.Conn, from string) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatalf("Accept failed, want a connection from %s", from)
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(2 * time.Second):
		t.Fatalf("Accept did not return a connection from %s", from)
		return nil
	}
}

// wantClosedAtOnce checks that the server closed c without sending
// anything.
func wantClosedAtOnce(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("Read on a refused connection = %d, %v; want 0 and EOF", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("refused connection still open: %v", err)
	}
}

func TestMaxConnsPerIP(t *testing.T) {
	checkNoGoroutineLeak(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln, Settings{MaxConnsPerIP: 2})
	t.Cleanup(func() { l.Close() })
	addr := l.Addr().String()

	ch := acceptOne(l)
	dialFrom(t, "127.0.0.1", addr)
	s1 := wantAccepted(t, ch, "127.0.0.1")
	ch = acceptOne(l)
	dialFrom(t, "127.0.0.1", addr)
	wantAccepted(t, ch, "127.0.0.1")

	// The third from the same IP is closed inside Accept, which then
	// goes on waiting.
	ch = acceptOne(l)
	wantClosedAtOnce(t, dialFrom(t, "127.0.0.1", addr))

	// Another loopback address has its own count.
	dialFrom(t, "127.0.0.2", addr)
	o1 := wantAccepted(t, ch, "127.0.0.2")
	ch = acceptOne(l)
	dialFrom(t, "127.0.0.2", addr)
	wantAccepted(t, ch, "127.0.0.2")

	if got, want := l.Stats(), (Stats{Accepted: 4, RefusedPerIP: 1, Open: 4}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}

	// Closing one frees its place, once, however often it is closed.
	s1.Close()
	s1.Close()
	ch = acceptOne(l)
	dialFrom(t, "127.0.0.1", addr)
	wantAccepted(t, ch, "127.0.0.1")
	ch = acceptOne(l)
	wantClosedAtOnce(t, dialFrom(t, "127.0.0.1", addr))

	o1.Close()
	dialFrom(t, "127.0.0.2", addr)
	wantAccepted(t, ch, "127.0.0.2")

	if got, want := l.Stats(), (Stats{Accepted: 6, RefusedPerIP: 2, Open: 4}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestPerIPEntriesDeleted(t *testing.T) {
	checkNoGoroutineLeak(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln, Settings{MaxConnsPerIP: 3})
	t.Cleanup(func() { l.Close() })
	var conns []net.Conn
	for range 3 {
		ch := acceptOne(l)
		dialFrom(t, "127.0.0.1", l.Addr().String())
		conns = append(conns, wantAccepted(t, ch, "127.0.0.1"))
	}
	for _, c := range conns {
		c.Close()
	}
	l.mu.Lock()
	n := len(l.perIP)
	l.mu.Unlock()
	if n != 0 {
		t.Errorf("per-IP entries after closing everything = %d, want 0", n)
	}
	if got := l.Stats().Open; got != 0 {
		t.Errorf("Stats().Open = %d, want 0", got)
	}
}

// TestMaxConnsPerIPWithServer runs the cap under a real http.Server: a
// connection held by the server counts until the client goes away.
func TestMaxConnsPerIPWithServer(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := newGuarded(t, Settings{MaxConnsPerIP: 1}, nil)
	addr := g.l.Addr().String()
	first := dialFrom(t, "127.0.0.1", addr)
	first.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(first, get)
	if resp, err := http.ReadResponse(bufio.NewReader(first), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first connection: %v, %v", resp, err)
	}
	wantClosedAtOnce(t, dialFrom(t, "127.0.0.1", addr))

	first.Close()
	deadline := time.Now().Add(2 * time.Second)
	for g.l.Stats().Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Stats().Open = %d after the client left, want 0", g.l.Stats().Open)
		}
		time.Sleep(5 * time.Millisecond)
	}
	statuses, _ := g.exchange(t, get, false, 1)
	if statuses[0] != 200 {
		t.Errorf("status after the first connection closed = %d, want 200", statuses[0])
	}
}

// TestOptionsAsteriskToHandler runs a server whose handler sees "OPTIONS *"
// itself: the guard must then queue a verdict for it.
func TestOptionsAsteriskToHandler(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := &guarded{}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Check(r.Context()); err != nil {
			g.add("bad: " + err.Error())
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		g.add(r.Method + " " + r.RequestURI)
	}))
	ts.Config.DisableGeneralOptionsHandler = true
	ts.Config.ConnContext = ConnContext
	g.l = Listen(ts.Listener, Settings{DisableGeneralOptionsHandler: true})
	ts.Listener = g.l
	ts.Start()
	t.Cleanup(ts.Close)
	statuses, _ := g.exchange(t, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"+get, false, 2)
	if want := []int{200, 200}; !slices.Equal(statuses, want) {
		t.Errorf("statuses = %v, want %v", statuses, want)
	}
	if got, want := g.lines(), []string{"OPTIONS *", "GET /"}; !slices.Equal(got, want) {
		t.Errorf("handler log = %q, want %q", got, want)
	}
}

// countingListener counts the write deadlines set on the connections it
// accepted.
type countingListener struct {
	net.Listener
	sets *int64
	mu   *sync.Mutex
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.sets, l.mu}, nil
}

type countingConn struct {
	net.Conn
	sets *int64
	mu   *sync.Mutex
}

func (c countingConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	*c.sets++
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// Keep-alive requests move the write deadline once per half timeout, not
// once per request.
func TestWriteDeadlineIsLazy(t *testing.T) {
	var sets int64
	var mu sync.Mutex
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Check(r.Context())
		io.WriteString(w, "ok")
	}))
	ts.Listener = Listen(countingListener{ts.Listener, &sets, &mu}, Settings{WriteTimeout: time.Hour})
	ts.Config.ConnContext = ConnContext
	ts.Start()
	defer ts.Close()
	client := ts.Client()
	for i := 0; i < 50; i++ {
		resp, err := client.Get(ts.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if sets != 1 {
		t.Errorf("%d write deadlines set for 50 requests on one connection, want 1", sets)
	}
}

// A keep-alive connection idle for longer than the write timeout must not
// carry its old, passed deadline into the next request: the first request
// sets a deadline (as the gateway does when it answers), the second is
// served by a plain handler that never touches deadlines, after the first
// deadline passed; only the guard moving it on the new request's bytes
// lets that answer out.
func TestWriteDeadlineNotStaleAfterIdle(t *testing.T) {
	g := newGuarded(t, Settings{WriteTimeout: 100 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		c, _ := FromContext(r.Context())
		c.ExtendWriteDeadline(time.Now())
		io.WriteString(w, "ok")
	})
	conn, err := net.Dial("tcp", g.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i, path := range []string{"/extra", "/plain"} {
		if i == 1 {
			time.Sleep(300 * time.Millisecond) // the first deadline passes
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
}

// A client that stops reading is cut after the write timeout instead of
// holding the response write for ever.
func TestWriteTimeoutCutsStalledReader(t *testing.T) {
	werr := make(chan error, 1)
	g := newGuarded(t, Settings{WriteTimeout: 200 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 4096; i++ { // 256 MiB: far more than socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	})
	conn, err := net.Dial("tcp", g.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /extra HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("256 MiB written to a client that reads nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled write was not cut within 10s")
	}
}

// A hijacked connection (a WebSocket tunnel) must not inherit the write
// deadline the guard kept for its HTTP requests.
func TestHijackDropsWriteDeadline(t *testing.T) {
	done := make(chan error, 1)
	g := newGuarded(t, Settings{WriteTimeout: 100 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		time.Sleep(300 * time.Millisecond) // the guard's deadline would have passed
		_, err = c.Write([]byte("late"))
		done <- err
	})
	conn, err := net.Dial("tcp", g.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /extra HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	if err := <-done; err != nil {
		t.Fatalf("write on the hijacked connection after the guard's timeout: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(io.LimitReader(conn, 200))
	if !strings.HasSuffix(string(b), "late") {
		t.Errorf("client read %q", b)
	}
}
