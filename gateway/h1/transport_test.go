package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkGoroutines fails t unless the goroutine count is back to where it
// was once every later cleanup (servers, transports) has run.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines = %d after cleanup, want <= %d\n%s",
					runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// backend is a real loopback server that counts the connections it
// accepted and closed.
type backend struct {
	*httptest.Server
	opened, closed atomic.Int64
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewUnstartedServer(h)
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			b.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			b.closed.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// countingRT is a real http.Transport that counts the requests it got.
type countingRT struct {
	*http.Transport
	n atomic.Int64
}

func (c *countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.Transport.RoundTrip(r)
}

func newTransport(t *testing.T) (*Transport, *countingRT) {
	t.Helper()
	fb := &countingRT{Transport: &http.Transport{}}
	tr := &Transport{Fallback: fb, MaxIdleConnsPerHost: 8}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, fb
}

// rawBackend is a loopback backend that answers at the byte level, for
// what net/http's server will not send (stray bytes, chosen framings):
// serve handles one connection, reading requests from br. It returns the
// address and the count of connections accepted.
func rawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := new(atomic.Int64)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

func get(t *testing.T, rt http.RoundTripper, ctx context.Context, method, url string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func TestReusesOneConnection(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Query().Get("n"))
	})
	tr, fb := newTransport(t)
	for i := 0; i < 50; i++ {
		resp, body, err := get(t, tr, context.Background(), "GET", be.URL+"/x?n=7")
		if err != nil || resp.StatusCode != 200 || body != "hello 7" {
			t.Fatalf("request %d: %v %v %q", i, err, resp, body)
		}
	}
	if n := be.opened.Load(); n != 1 {
		t.Errorf("backend saw %d connections for 50 sequential requests, want 1", n)
	}
	if n := fb.n.Load(); n != 0 {
		t.Errorf("fallback got %d requests, want 0", n)
	}
}

func TestOtherRequestsGoToFallback(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+":"+string(b))
	})
	tr, fb := newTransport(t)
	cases := []struct {
		method, body string
		header       string
	}{
		{"POST", "payload", ""},
		{"PUT", "", ""},
		{"DELETE", "", ""},
		{"GET", "", "Upgrade"},
		{"GET", "", "Expect"},
	}
	for i, c := range cases {
		var rd io.Reader
		if c.body != "" {
			rd = strings.NewReader(c.body)
		}
		req, _ := http.NewRequest(c.method, be.URL, rd)
		if c.header != "" {
			req.Header.Set(c.header, "x")
		}
		if Takes(req) {
			t.Errorf("%s %s: taken by the direct path", c.method, c.header)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := c.method + ":" + c.body; c.header == "" && string(b) != want {
			t.Errorf("%s: body %q, want %q", c.method, b, want)
		}
		if n := fb.n.Load(); n != int64(i+1) {
			t.Errorf("%s %s: fallback count %d, want %d", c.method, c.header, n, i+1)
		}
	}
	req, _ := http.NewRequest("GET", strings.Replace(be.URL, "http:", "https:", 1), nil)
	if Takes(req) {
		t.Error("an https request is taken by the direct path")
	}
}

func TestStaleConnectionIsRetriedOnAFreshOne(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr, _ := newTransport(t)
	if _, body, err := get(t, tr, context.Background(), "GET", be.URL); err != nil || body != "ok" {
		t.Fatal(err, body)
	}
	// The backend drops its idle keep-alive connection, as backends do
	// after their idle timeout; the pooled one is now dead.
	be.CloseClientConnections()
	waitFor(t, func() bool { return be.closed.Load() == 1 })
	for i := 0; i < 3; i++ {
		if _, body, err := get(t, tr, context.Background(), "GET", be.URL); err != nil || body != "ok" {
			t.Fatalf("after the backend closed the idle connection: %v %q", err, body)
		}
	}
	if n := be.opened.Load(); n != 2 {
		t.Errorf("backend saw %d connections, want 2 (the first, then one fresh after the close)", n)
	}
}

func TestCancellationInterruptsAndDropsTheConnection(t *testing.T) {
	checkGoroutines(t)
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		if r.URL.Path == "/stall-body" {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "part")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	})
	defer close(release)
	tr, _ := newTransport(t)
	if _, _, err := get(t, tr, context.Background(), "GET", be.URL); err != nil {
		t.Fatal(err)
	}
	// Waiting for headers: the cause of the cancellation comes back.
	cause := errors.New("service timeout")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
	start := time.Now()
	_, _, err := get(t, tr, ctx, "GET", be.URL+"/slow")
	if !errors.Is(err, cause) {
		t.Fatalf("err = %v, want the cancellation's cause", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cancellation took %v", d)
	}
	// Reading the body: the blocked Read returns.
	ctx2, cancel2 := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx2, "GET", be.URL+"/stall-body", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel2)
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Fatalf("blocked body read: err = %v, want context.Canceled", err)
	}
	resp.Body.Close()
	// Neither interrupted connection is reused.
	opened := be.opened.Load()
	if _, body, err := get(t, tr, context.Background(), "GET", be.URL); err != nil || body != "ok" {
		t.Fatal(err, body)
	}
	if be.opened.Load() != opened+1 {
		t.Errorf("a request after two interrupted ones reused a connection (opened %d, then %d)", opened, be.opened.Load())
	}
}

func TestEarlyCloseDropsTheConnectionWithoutDraining(t *testing.T) {
	checkGoroutines(t)
	stop := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/endless" {
			for {
				if _, err := w.Write(make([]byte, 32<<10)); err != nil {
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}
		io.WriteString(w, "ok")
	})
	defer close(stop)
	tr, _ := newTransport(t)
	req, _ := http.NewRequest("GET", be.URL+"/endless", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 1000))
	done := make(chan struct{})
	go func() { resp.Body.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close blocked on an endless body")
	}
	waitFor(t, func() bool { return be.closed.Load() == 1 })
	if _, body, err := get(t, tr, context.Background(), "GET", be.URL); err != nil || body != "ok" {
		t.Fatal(err, body)
	}
	if n := be.opened.Load(); n != 2 {
		t.Errorf("backend saw %d connections, want 2", n)
	}
}

func TestResponsesWithoutBodiesAndConnectionClose(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		case "/unsized":
			w.(http.Flusher).Flush() // chunked: length unknown up front
			io.WriteString(w, "streamed")
		default:
			w.Header().Set("Content-Length", "5")
			if r.Method != "HEAD" {
				io.WriteString(w, "hello")
			}
		}
	})
	tr, _ := newTransport(t)
	for _, c := range []struct{ method, path, body string }{
		{"HEAD", "/", ""}, {"GET", "/empty", ""}, {"OPTIONS", "/", "hello"}, {"GET", "/unsized", "streamed"}, {"GET", "/", "hello"},
	} {
		resp, body, err := get(t, tr, context.Background(), c.method, be.URL+c.path)
		if err != nil || body != c.body {
			t.Fatalf("%s %s: %v %q, want %q", c.method, c.path, err, body, c.body)
		}
		if c.method == "HEAD" && resp.ContentLength != 5 {
			t.Errorf("HEAD: Content-Length %d, want 5", resp.ContentLength)
		}
	}
	if n := be.opened.Load(); n != 1 {
		t.Fatalf("HEAD, 204, chunked and sized responses used %d connections, want 1", n)
	}
	if _, body, err := get(t, tr, context.Background(), "GET", be.URL+"/close"); err != nil || body != "bye" {
		t.Fatal(err, body)
	}
	if _, _, err := get(t, tr, context.Background(), "GET", be.URL); err != nil {
		t.Fatal(err)
	}
	if n := be.opened.Load(); n != 2 {
		t.Errorf("after Connection: close the backend saw %d connections, want 2", n)
	}
}

func TestInformationalResponsesReachTheTrace(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	tr, _ := newTransport(t)
	var got []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, http.StatusText(code)+" "+h.Get("Link"))
			return nil
		},
	})
	resp, body, err := get(t, tr, ctx, "GET", be.URL)
	if err != nil || resp.StatusCode != 200 || body != "final" {
		t.Fatal(err, resp, body)
	}
	if len(got) != 1 || got[0] != "Early Hints </app.css>; rel=preload" {
		t.Errorf("1xx seen by the trace: %q", got)
	}
}

func TestIdleConnectionsExpire(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr, _ := newTransport(t)
	tr.IdleConnTimeout = 30 * time.Millisecond
	if _, _, err := get(t, tr, context.Background(), "GET", be.URL); err != nil {
		t.Fatal(err)
	}
	// No further request: the sweep alone closes it.
	waitFor(t, func() bool { return be.closed.Load() == 1 })
	tr.mu.Lock()
	idle, hosts := tr.idleTotal, len(tr.hosts)
	tr.mu.Unlock()
	if idle != 0 || hosts != 0 {
		t.Errorf("after the sweep: %d idle, %d hosts tracked", idle, hosts)
	}
}

func TestBoundsOnConnections(t *testing.T) {
	checkGoroutines(t)
	var wg sync.WaitGroup
	hold := make(chan struct{})
	var arrived atomic.Int64
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		if r.URL.Path == "/hold" {
			<-hold
		}
		io.WriteString(w, "ok")
	})
	tr, fb := newTransport(t)
	tr.MaxConnsPerHost = 2
	tr.MaxIdleConnsPerHost = 1
	// Three at once: two on connections, the third waits for one of
	// them rather than opening a third or going to the fallback.
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, body, err := get(t, tr, context.Background(), "GET", be.URL+"/hold")
			if err == nil && body != "ok" {
				err = errors.New("body " + body)
			}
			errs <- err
		}()
	}
	waitFor(t, func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		hp := tr.hosts[canonicalAddr(mustURL(t, be.URL))]
		if hp == nil || arrived.Load() != 2 {
			return false
		}
		_, queued := hp.slots.Load()
		return queued == 1
	})
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := be.opened.Load(); n != 2 {
		t.Errorf("backend saw %d connections, want 2 (MaxConnsPerHost)", n)
	}
	if n := fb.n.Load(); n != 0 {
		t.Errorf("fallback got %d requests, want 0", n)
	}
	// Of the two connections one stays idle; the other is closed.
	waitFor(t, func() bool { return be.closed.Load() >= 1 })
	tr.mu.Lock()
	idle := tr.idleTotal
	tr.mu.Unlock()
	if idle != 1 {
		t.Errorf("idle connections %d, want 1 (MaxIdleConnsPerHost)", idle)
	}
}

func TestWaitingForAConnectionEndsWithItsContext(t *testing.T) {
	checkGoroutines(t)
	hold := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-hold
		}
		io.WriteString(w, "ok")
	})
	tr, _ := newTransport(t)
	tr.MaxConnsPerHost = 1
	first := make(chan error, 1)
	go func() {
		_, _, err := get(t, tr, context.Background(), "GET", be.URL+"/hold")
		first <- err
	}()
	waitFor(t, func() bool { return be.opened.Load() == 1 })
	cause := errors.New("queue timeout")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
	if _, _, err := get(t, tr, ctx, "GET", be.URL); !errors.Is(err, cause) {
		t.Fatalf("waiting request: err = %v, want its context's cause", err)
	}
	tr.mu.Lock()
	hp := tr.hosts[canonicalAddr(mustURL(t, be.URL))]
	tr.mu.Unlock()
	if _, waiting := hp.slots.Load(); waiting != 0 {
		t.Errorf("%d waiters left after the cancellation", waiting)
	}
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if _, body, err := get(t, tr, context.Background(), "GET", be.URL); err != nil || body != "ok" {
		t.Fatal(err, body)
	}
	if n := be.opened.Load(); n != 1 {
		t.Errorf("backend saw %d connections, want 1", n)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestOversizedResponseHeaderIsRefused(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("a", 256<<10))
		io.WriteString(w, "ok")
	})
	tr, _ := newTransport(t)
	tr.MaxResponseHeaderBytes = 64 << 10
	if _, _, err := get(t, tr, context.Background(), "GET", be.URL); !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("err = %.100v, want %v", err, errHeaderTooLarge)
	}
}

func TestDialFailure(t *testing.T) {
	checkGoroutines(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	tr, _ := newTransport(t)
	tr.MaxConnsPerHost = 4 // a failed dial must give its slot back
	_, _, err := get(t, tr, context.Background(), "GET", "http://"+addr+"/")
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("err = %v, want a dial *net.OpError (the gateway retries those elsewhere)", err)
	}
	tr.mu.Lock()
	open, users := tr.hosts[addr].open, tr.hosts[addr].users
	tr.mu.Unlock()
	if inUse, _ := tr.hosts[addr].slots.Load(); open != 0 || users != 0 || inUse != 0 {
		t.Errorf("a failed dial left %d connections, %d users, %d slots counted", open, users, inUse)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 3s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkRoundTrip compares this Transport with net/http's on the same
// loopback backend, 100-byte responses, one request in flight per CPU.
func BenchmarkRoundTrip(b *testing.B) {
	body := strings.Repeat("x", 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	defer srv.Close()
	std := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	defer std.CloseIdleConnections()
	direct := &Transport{Fallback: std, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	defer direct.CloseIdleConnections()
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{{"net_http", std}, {"h1", direct}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
				for pb.Next() {
					resp, err := c.rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

func TestInvalidHeadersAreRefusedUnsent(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr, fb := newTransport(t)
	for _, h := range []http.Header{
		{"X-User-Id": {"alice\x00admin"}},
		{"X-Bad": {"a\rb"}},
		{"Bad Name": {"v"}},
		{"": {"v"}},
	} {
		req, _ := http.NewRequest("GET", be.URL, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		if _, err := tr.RoundTrip(req); err == nil || strings.Contains(err.Error(), "admin") {
			t.Errorf("header %q: err = %v, want a refusal that does not quote the value", h, err)
		}
	}
	if be.opened.Load() != 0 || fb.n.Load() != 0 {
		t.Errorf("refused requests reached the backend (%d connections) or the fallback (%d)", be.opened.Load(), fb.n.Load())
	}
	req, _ := http.NewRequest("GET", be.URL, nil)
	req.Header.Set("X-Fine", "tab\tand spaces, ünïcode")
	if resp, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
}

// TestBytesPastTheResponseEndDropTheConnection: a backend that sends more
// than its Content-Length announced leaves the connection unusable.
func TestBytesPastTheResponseEndDropTheConnection(t *testing.T) {
	checkGoroutines(t)
	addr, accepted := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			extra := ""
			if req.URL.Path == "/extra" {
				extra = "GARBAGE"
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+extra); err != nil {
				return
			}
		}
	})
	tr, _ := newTransport(t)
	base := "http://" + addr
	for _, p := range []string{"/extra", "/", "/"} {
		if _, body, err := get(t, tr, context.Background(), "GET", base+p); err != nil || body != "ok" {
			t.Fatalf("%s: %v %q", p, err, body)
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2 (the one with stray bytes dropped)", n)
	}
}

// TestReadsAfterTheEndStayAtTheEnd: once a body is read whole its
// connection serves other requests; further reads of the old body must
// not consume their bytes.
func TestReadsAfterTheEndStayAtTheEnd(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) })
	tr, _ := newTransport(t)
	req, _ := http.NewRequest("GET", be.URL+"/first", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "/first" {
		t.Fatal(err, string(b))
	}
	if _, body, err := get(t, tr, context.Background(), "GET", be.URL+"/second"); err != nil || body != "/second" {
		t.Fatal(err, body)
	}
	if n, err := resp.Body.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("read after the end: %d, %v; want 0, EOF", n, err)
	}
	resp.Body.Close()
	if be.opened.Load() != 1 {
		t.Errorf("%d connections, want 1", be.opened.Load())
	}
}

// TestBoundUnderLoad: many requests, some giving up while they wait,
// never have more than the bound of connections open at once, and leave
// the books balanced. (A cancelled request's connection closes at once,
// while the backend may still be working on it: the bound is on the
// gateway's connections, as net/http's MaxConnsPerHost is.)
func TestBoundUnderLoad(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Microsecond)
		io.WriteString(w, "ok")
	})
	tr, fb := newTransport(t)
	tr.MaxConnsPerHost = 4
	var live, peak atomic.Int64
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		n := live.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		return &countedConn{Conn: c, live: &live}, nil
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%7 == 0 {
					time.AfterFunc(time.Duration(i%3)*100*time.Microsecond, cancel)
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", be.URL, nil)
				resp, err := tr.RoundTrip(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil && ctx.Err() == nil {
					failed.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed without being cancelled", n)
	}
	if p := peak.Load(); p > 4 || p < 2 {
		t.Errorf("%d connections open at once, want 2 to 4 (the bound)", p)
	}
	if fb.n.Load() != 0 {
		t.Errorf("fallback used %d times", fb.n.Load())
	}
	tr.mu.Lock()
	hp := tr.hosts[canonicalAddr(mustURL(t, be.URL))]
	open, idle, users := hp.open, len(hp.idle), hp.users
	tr.mu.Unlock()
	inUse, waiting := hp.slots.Load()
	if waiting != 0 || inUse != 0 || users != 0 || open != idle {
		t.Errorf("after the load: %d open, %d idle, %d users, %d slots in use, %d waiting; want open == idle and nothing else", open, idle, users, inUse, waiting)
	}
}

// countedConn counts itself out of live when closed.
type countedConn struct {
	net.Conn
	live *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.live.Add(-1) })
	return c.Conn.Close()
}

// TestBadIdleConnectionIsRetried: bytes a backend leaves on a connection
// while it sits idle in the pool (the 408 of its idle timeout, or
// garbage) are met by the next request on that reused connection, which
// must get its own answer from a fresh one instead.
func TestBadIdleConnectionIsRetried(t *testing.T) {
	for name, stray := range map[string]string{
		"408":     "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
		"garbage": "\x00\x01 not a response\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			checkGoroutines(t)
			addr, accepted := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
						return
					}
					if req.URL.Path == "/then-stray" {
						// Later, so the connection is idle in the pool by
						// then rather than still being read.
						time.Sleep(20 * time.Millisecond)
						io.WriteString(c, stray)
						return
					}
				}
			})
			tr, _ := newTransport(t)
			base := "http://" + addr
			if _, body, err := get(t, tr, context.Background(), "GET", base+"/then-stray"); err != nil || body != "ok" {
				t.Fatalf("first request: %v %q", err, body)
			}
			time.Sleep(80 * time.Millisecond) // the stray bytes and the close reach the idle connection
			resp, body, err := get(t, tr, context.Background(), "GET", base+"/")
			if err != nil || resp.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("second request: %v %v %q, want 200 ok", resp, err, body)
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("backend accepted %d connections, want 2", n)
			}
		})
	}
}

// TestAnswersOnFreshConnectionsAreNotRetried: a 408 or a malformed
// response on a fresh connection is the backend's answer.
func TestAnswersOnFreshConnectionsAreNotRetried(t *testing.T) {
	checkGoroutines(t)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusRequestTimeout) })
	tr, _ := newTransport(t)
	if resp, _, err := get(t, tr, context.Background(), "GET", be.URL); err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("408 on a fresh connection: %v %v, want the 408", resp, err)
	}
	if n := be.opened.Load(); n != 1 {
		t.Errorf("backend saw %d connections, want 1", n)
	}
}
