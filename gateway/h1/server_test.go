package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// servers runs h behind this package's Server and behind a bare
// http.Server, each on its own loopback listener.
type servers struct {
	fast, std string // addresses
	srv       *Server
	handedOff atomic.Int64 // connections Std got through the hand-over
}

func newServers(t testing.TB, h http.Handler, tune func(*http.Server)) *servers {
	t.Helper()
	if t, ok := t.(*testing.T); ok {
		// Not for a fuzz target: the fuzzing engine starts goroutines
		// of its own after this count.
		checkGoroutines(t)
	}
	ss := &servers{}
	std := &http.Server{Handler: h, ErrorLog: quietLog()}
	std.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if Unwrap(c) != c {
			ss.handedOff.Add(1)
		}
		return ctx
	}
	plain := &http.Server{Handler: h, ErrorLog: quietLog()}
	if tune != nil {
		tune(std)
		tune(plain)
	}
	ss.srv = &Server{Std: std, WatchDelay: 20 * time.Millisecond}
	ss.fast = listen(t, ss.srv.Serve, ss.srv.Close)
	ss.std = listen(t, plain.Serve, plain.Close)
	return ss
}

// listen runs serve on a new loopback listener and returns its address;
// when the test ends, close must make serve return ErrServerClosed.
func listen(t testing.TB, serve func(net.Listener) error, close func() error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ln) }()
	t.Cleanup(func() {
		close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

// exchange sends raw on a new connection and reads a response to each of
// methods (an informational one is followed by its final one), each as
// what a client can tell of it; a read error ends the list, as text.
// closed reports whether the server then closed the connection: one left
// open answers one more request.
func exchange(t testing.TB, addr, raw string, methods ...string) (got []string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	for i := 0; i < len(methods); i++ {
		resp, err := http.ReadResponse(br, &http.Request{Method: methods[i]})
		if err != nil {
			return append(got, "error: "+errText(err)), true
		}
		body, err := io.ReadAll(resp.Body)
		r := summarise(resp, body).String()
		if err != nil {
			return append(got, r+" [body: "+errText(err)+"]"), true
		}
		got = append(got, r)
		if resp.StatusCode < 200 {
			i-- // the final response follows
		}
	}
	io.WriteString(c, "GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		resp.Body.Close()
	}
	return got, err != nil
}

// errText is err without the addresses, which differ between servers.
func errText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return err.Error()
}

// response_ is what a client can tell of a response.
type response_ struct {
	Status        string
	Header        []string // "Name: value", sorted, Date's value blanked, no Content-Length
	TE            []string
	ContentLength int64
	Close         bool
	Body          string
	Trailer       http.Header
}

func summarise(resp *http.Response, body []byte) *response_ {
	r := &response_{Status: resp.Status, TE: resp.TransferEncoding, ContentLength: resp.ContentLength,
		Close: resp.Close, Body: string(body), Trailer: resp.Trailer}
	for k, vv := range resp.Header {
		if k == "Content-Length" {
			// Compared as read (ContentLength): this Server writes the
			// value WriteHeader parsed ("00" goes out as "0").
			continue
		}
		for _, v := range vv {
			if k == "Date" {
				v = "…"
			}
			r.Header = append(r.Header, k+": "+v)
		}
	}
	sort.Strings(r.Header)
	return r
}

func (r *response_) String() string { return fmt.Sprintf("%+v", *r) }

// responseCases are handlers that use every part of the ResponseWriter.
var responseCases = map[string]http.HandlerFunc{
	"empty": func(w http.ResponseWriter, r *http.Request) {},
	"sniffed text": func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello, world\n")
	},
	"sniffed html in two writes": func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<!DOCTYPE html>")
		io.WriteString(w, "<p>hi</p>")
	},
	"typed with length": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "11")
		io.WriteString(w, `{"ok":true}`)
	},
	"length without type": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "%PDF-")
	},
	"long body in one write": func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 3000)))
	},
	"long body in small writes": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for range 100 {
			io.WriteString(w, strings.Repeat("y", 50))
		}
	},
	"flushed": func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, "data: 2\n\n")
	},
	"flushed before writing": func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		http.NewResponseController(w).Flush()
	},
	"no content": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		w.WriteHeader(http.StatusNoContent)
		if _, err := io.WriteString(w, "abc"); err != http.ErrBodyNotAllowed {
			panic(fmt.Sprintf("write on 204: %v", err))
		}
	},
	"not modified": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "3")
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	},
	"error": func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusTeapot)
	},
	"unknown status": func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(599)
	},
	"declared trailers": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum, X-Unset")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	},
	"prefixed trailer": func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	},
	"early hints": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "after hints")
	},
	"connection token with a long s": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "clo\u017fe") // folds to "close" in Unicode, not in HTTP
		io.WriteString(w, "kept")
	},
	"handler closes": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	},
	"short body": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "12345")
	},
	"long body": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		if _, err := io.WriteString(w, "12345"); err != http.ErrContentLength {
			panic(fmt.Sprintf("overlong write: %v", err))
		}
	},
	"invalid length": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "-1")
		io.WriteString(w, "abc")
	},
	"identity": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Transfer-Encoding", "identity")
		io.WriteString(w, "streamed to the end")
	},
	"chunked by hand": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Transfer-Encoding", "chunked")
		io.WriteString(w, "abc")
	},
	"line breaks and bad names": func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Multi"] = []string{"a\r\nb", " padded\t"}
		w.Header()["Bad Name"] = []string{"dropped"}
		w.Header()["Date"] = nil
		io.WriteString(w, "ok")
	},
	"own date": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
	},
	"encoded": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Write([]byte{0x1f, 0x8b, 0, 0})
	},
	"superfluous status": func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "created")
	},
}

// TestResponsesMatchNetHTTP serves every case to GET, HEAD and a
// Connection: close request through both servers, and requires the same
// response and the same fate of the connection.
func TestResponsesMatchNetHTTP(t *testing.T) {
	mux := http.NewServeMux()
	for name, h := range responseCases {
		mux.Handle("/"+strings.ReplaceAll(name, " ", "-"), h)
	}
	ss := newServers(t, mux, nil)
	for name := range responseCases {
		path := "/" + strings.ReplaceAll(name, " ", "-")
		for _, req := range []struct{ method, extra string }{
			{"GET", ""}, {"HEAD", ""}, {"GET", "Connection: close\r\n"},
		} {
			if name == "invalid length" && req.method == "HEAD" {
				// net/http sends the invalid "Content-Length: -1" on;
				// this Server drops it.
				continue
			}
			raw := req.method + " " + path + " HTTP/1.1\r\nHost: example.com\r\n" + req.extra + "\r\n"
			mine, mineClosed := exchange(t, ss.fast, raw, req.method)
			want, wantClosed := exchange(t, ss.std, raw, req.method)
			if wantClose := name == "handler closes" || req.extra != ""; mineClosed != wantClose && !strings.HasSuffix(name, " body") && name != "identity" {
				t.Errorf("%s %s %q: connection closed %v, want %v", req.method, name, req.extra, mineClosed, wantClose)
			}
			if !slices.Equal(mine, want) || mineClosed != wantClosed {
				t.Errorf("%s %s %q:\n got  %.2000v (closed %v)\n want %.2000v (closed %v)",
					req.method, name, req.extra, mine, mineClosed, want, wantClosed)
			}
		}
	}
	if n := ss.handedOff.Load(); n != 0 {
		t.Errorf("%d connections handed to net/http; want none", n)
	}
}

// echo answers with what a handler can see of the request.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var hdr []string
	for k, vv := range r.Header {
		hdr = append(hdr, fmt.Sprintf("%s=%q", k, vv))
	}
	sort.Strings(hdr)
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	_, srv := r.Context().Value(http.ServerContextKey).(*http.Server)
	_, local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	fmt.Fprintf(w, "%s %q %#v host=%q %s/%d.%d len=%d te=%q close=%v body=%q err=%v remote=%s uri=%q ctx=%v,%v\n%s",
		r.Method, r.RequestURI, *r.URL, r.Host, r.Proto, r.ProtoMajor, r.ProtoMinor, r.ContentLength,
		r.TransferEncoding, r.Close, body, err, host, r.URL.RequestURI(), srv, local, strings.Join(hdr, "\n"))
}

// requestCases are raw requests; taken says whether this package's Server
// serves them itself rather than hand them to net/http.
var requestCases = []struct {
	name, raw string
	taken     bool
}{
	{"plain", "GET /api/v1/items HTTP/1.1\r\nHost: example.com\r\n\r\n", true},
	{"query and fields", "GET /a/b%20c?x=1&y=%2F HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\nX-Dup: 1\r\nX-Dup: 2\r\nAuthorization: Bearer abc.def\r\n\r\n", true},
	{"head", "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", true},
	{"lower-case names and padding", "GET / HTTP/1.1\r\nhost: h\r\nx-trace-id:   \t abc \t\r\nempty:\r\n\r\n", true},
	{"keep-alive", "GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n", true},
	{"close with a long s", "GET / HTTP/1.1\r\nHost: h\r\nConnection: clo\u017fe\r\n\r\n", false},
	{"close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", true},
	{"ipv6 host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", true},
	{"obs-text value", "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\r\n\r\n", true},
	{"post", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", false},
	{"get with length", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", false},
	{"chunked", "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
	{"http/1.0", "GET / HTTP/1.0\r\nHost: h\r\n\r\n", false},
	{"upgrade", "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
	{"expect", "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", false},
	{"pragma", "GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n", false},
	{"absolute form", "GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"options", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"head over the small buffer", "GET / HTTP/1.1\r\nHost: h\r\nCookie: " + strings.Repeat("c", 2000) + "\r\n\r\n", true},
	{"head at the large buffer's end", "GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("c", 4096-len("GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n")) + "\r\n\r\n", true},
	{"long head", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n", false},
	{"no host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", false},
	{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
	{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", false},
	{"bare LF", "GET / HTTP/1.1\nHost: h\n\n", false},
	{"folded", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", false},
	{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", false},
	{"bad escape", "GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"control in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", false},
	{"leading blank line", "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", false},
	{"lower-case method", "get / HTTP/1.1\r\nHost: h\r\n\r\n", false},
}

// TestRequestsMatchNetHTTP sends every case, followed by a plain request
// on the same connection, to both servers: handlers must see the same
// requests, clients the same answers, and the cases this Server does not
// take must reach net/http.
func TestRequestsMatchNetHTTP(t *testing.T) {
	ss := newServers(t, http.HandlerFunc(echo), nil)
	handed := int64(0)
	for _, tc := range requestCases {
		method := "GET"
		if strings.HasPrefix(tc.raw, "HEAD") {
			method = "HEAD"
		}
		raw := tc.raw + "GET /next HTTP/1.1\r\nHost: next\r\n\r\n"
		mine, mineClosed := exchange(t, ss.fast, raw, method, "GET")
		want, wantClosed := exchange(t, ss.std, raw, method, "GET")
		if !slices.Equal(mine, want) || mineClosed != wantClosed {
			t.Errorf("%s:\n got  %v (closed %v)\n want %v (closed %v)", tc.name, mine, mineClosed, want, wantClosed)
		}
		if !tc.taken {
			handed++
		}
		if got := ss.handedOff.Load(); got != handed {
			t.Errorf("%s: %d connections handed over so far, want %d", tc.name, got, handed)
			ss.handedOff.Store(handed)
		}
	}
}

// serveOne runs a Server with handler h on a loopback listener; the
// cleanup shuts it down.
func serveOne(t *testing.T, h http.Handler, tune func(*Server)) (*Server, string) {
	t.Helper()
	checkGoroutines(t)
	s := &Server{Std: &http.Server{Handler: h, ErrorLog: quietLog()}, WatchDelay: 20 * time.Millisecond}
	if tune != nil {
		tune(s)
	}
	return s, listen(t, s.Serve, s.Close)
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, bufio.NewReader(c)
}

func readBody(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestPipelinedRequestsAreAnsweredInOrder(t *testing.T) {
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}), nil)
	c, br := dial(t, addr)
	var raw strings.Builder
	for i := range 20 {
		fmt.Fprintf(&raw, "GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
	}
	// A POST in the middle goes to net/http with the rest of the stream.
	raw.WriteString("POST /post HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
	io.WriteString(c, raw.String())
	for i := range 20 {
		if _, body := readBody(t, br, "GET"); body != fmt.Sprint("/", i) {
			t.Fatalf("response %d: %q", i, body)
		}
	}
	for _, want := range []string{"/post", "/after"} {
		if _, body := readBody(t, br, "GET"); body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
}

func TestClientGoneCancelsTheRequest(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			cancelled <- r.Context().Err()
		case <-time.After(3 * time.Second):
			cancelled <- nil
		}
	}), nil)
	c, _ := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started
	time.Sleep(50 * time.Millisecond) // past WatchDelay
	c.Close()
	if err := <-cancelled; err != context.Canceled {
		t.Fatalf("handler's context: %v, want context.Canceled", err)
	}
}

// A request that arrives while a long one runs is kept for its turn: the
// watch reads its first byte and must not lose it.
func TestRequestArrivingDuringALongOneIsKept(t *testing.T) {
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(150 * time.Millisecond)
			if err := r.Context().Err(); err != nil {
				t.Errorf("slow request's context: %v", err)
			}
		}
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}), nil)
	c, br := dial(t, addr)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(60 * time.Millisecond) // the watch is reading by now
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
	for _, want := range []string{"GET /slow", "GET /next"} {
		if _, body := readBody(t, br, "GET"); body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
}

func TestRequestContextEndsWithTheHandler(t *testing.T) {
	ctxs := make(chan context.Context, 2)
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(http.ServerContextKey) == nil {
			t.Error("no ServerContextKey")
		}
		ctxs <- r.Context()
	}), nil)
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	readBody(t, br, "GET")
	select {
	case <-(<-ctxs).Done():
	case <-time.After(time.Second):
		t.Fatal("request context still live after the response")
	}
}

func TestPanicClosesOnlyItsConnection(t *testing.T) {
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		io.WriteString(w, "fine")
	}), nil)
	c, br := dial(t, addr)
	io.WriteString(c, "GET /panic HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatal("got a response from a panicking handler")
	}
	c2, br2 := dial(t, addr)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := readBody(t, br2, "GET"); body != "fine" {
		t.Fatalf("after a panic: %q", body)
	}
}

func TestTimeouts(t *testing.T) {
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *Server) {
		s.Std.ReadHeaderTimeout = 100 * time.Millisecond
		s.Std.IdleTimeout = 200 * time.Millisecond
	})
	closedWithin := func(c net.Conn, br *bufio.Reader, min, max time.Duration) {
		t.Helper()
		start := time.Now()
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("the server sent something")
		}
		if d := time.Since(start); d < min || d > max {
			t.Errorf("closed after %v, want between %v and %v", d, min, max)
		}
	}
	// A head that never ends.
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n")
	closedWithin(c, br, 50*time.Millisecond, 2*time.Second)
	// An idle keep-alive connection.
	c, br = dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	readBody(t, br, "GET")
	closedWithin(c, br, 150*time.Millisecond, 2*time.Second)
}

func TestShutdownWaitsForRequestsAndClosesIdleConnections(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}), nil)
	idle, idleBR := dial(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	readBody(t, idleBR, "GET")
	busy, busyBR := dial(t, addr)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if _, err := idleBR.ReadByte(); err == nil {
		t.Fatal("idle connection got bytes, want closed")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	resp, body := readBody(t, busyBR, "GET")
	if body != "done" || !resp.Close {
		t.Fatalf("in-flight request: %q, Connection: close %v", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("listener still open")
	}
}

func TestResponseController(t *testing.T) {
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
			t.Errorf("SetWriteDeadline: %v", err)
		}
		if _, _, err := rc.Hijack(); !errors.Is(err, http.ErrNotSupported) {
			t.Errorf("Hijack: %v, want ErrNotSupported", err)
		}
		io.WriteString(w, "x")
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
	}), nil)
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := readBody(t, br, "GET"); body != "x" || resp.TransferEncoding == nil {
		t.Fatalf("%q %v", body, resp.TransferEncoding)
	}
}

// A client that stops reading cannot hold a response write past
// Std.WriteTimeout.
func TestWriteTimeoutCutsAStalledClient(t *testing.T) {
	done := make(chan error, 1)
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
		}
	}), func(s *Server) { s.Std.WriteTimeout = 200 * time.Millisecond })
	c, _ := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("write error %v, want a timeout", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("handler still writing after 3s")
	}
}

// BenchmarkServer compares this Server with net/http's alone, both in
// front of the same handler (a 100-byte JSON answer with the dozen
// header fields a gateway sets), with keep-alive clients on loopback.
// ns/op and allocs/op include the client, the same for both.
func BenchmarkServer(b *testing.B) {
	body := []byte(`{"id":"rec123","fields":{"Name":"benchmark","Status":"ok","Count":42,"Tags":["a","b","c"]}}` + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		for _, k := range []string{"X-Request-Id", "Traceparent", "X-Content-Type-Options", "X-Frame-Options",
			"Referrer-Policy", "Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset", "Content-Type"} {
			hd[k] = []string{"value-" + k}
		}
		hd["Content-Length"] = []string{fmt.Sprint(len(body))}
		w.Write(body)
	})
	for _, name := range []string{"net_http", "h1"} {
		b.Run(name, func(b *testing.B) {
			std := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			var srv interface {
				Serve(net.Listener) error
				Close() error
			} = std
			if name == "h1" {
				srv = &Server{Std: std}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Close()
			client := &http.Transport{MaxIdleConnsPerHost: 1000}
			defer client.CloseIdleConnections()
			url := "http://" + ln.Addr().String() + "/api/v1/records/rec123"
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				for pb.Next() {
					resp, err := client.RoundTrip(req)
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

// TLS connections go to Std untouched, so it can negotiate HTTP/2 and
// set Request.TLS.
func TestTLSConnectionsGoToStd(t *testing.T) {
	checkGoroutines(t)
	ts := httptest.NewUnstartedServer(nil) // for its certificate
	ts.EnableHTTP2 = true
	ts.StartTLS()
	cfg := ts.TLS.Clone()
	client := ts.Client()
	ts.Close()

	seen := make(chan string, 1)
	std := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- fmt.Sprint(r.Proto, " ", r.TLS != nil)
	}), ErrorLog: quietLog(), TLSConfig: cfg}
	srv := &Server{Std: std}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(ln, cfg)) }()
	defer func() {
		client.CloseIdleConnections()
		srv.Close()
		<-done
	}()
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-seen; got != "HTTP/2.0 true" {
		t.Fatalf("handler saw %q, want HTTP/2.0 over TLS", got)
	}
}

// rawAll sends raw on a new connection and returns every byte the server
// sends until it closes or goes quiet for 300ms.
func rawAll(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, raw)
	var out []byte
	buf := make([]byte, 8192)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return string(out)
		}
	}
}

// The length a handler declared at WriteHeader frames the body, whatever
// it does to the header afterwards; net/http copies the header there.
func TestLengthChangedAfterWriteHeaderKeepsFraming(t *testing.T) {
	cases := map[string]func(w http.ResponseWriter){
		"changed": func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(200)
			w.Header().Set("Content-Length", "40")
			io.WriteString(w, "hello")
		},
		"deleted": func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(200)
			w.Header().Del("Content-Length")
			io.WriteString(w, "hello")
		},
		"set late, flushed": func(w http.ResponseWriter) {
			w.WriteHeader(200)
			w.Header().Set("Content-Length", "3")
			w.(http.Flusher).Flush()
			io.WriteString(w, "abc")
		},
		"set late": func(w http.ResponseWriter) {
			w.WriteHeader(200)
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "abc")
		},
	}
	mux := http.NewServeMux()
	for name, f := range cases {
		mux.HandleFunc("/"+strings.ReplaceAll(name, " ", "-"), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			f(w)
		})
	}
	mux.HandleFunc("/next", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "next") })
	ss := newServers(t, mux, nil)
	for name := range cases {
		raw := "GET /" + strings.ReplaceAll(name, " ", "-") + " HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"
		mine, _ := exchange(t, ss.fast, raw, "GET", "GET")
		want, _ := exchange(t, ss.std, raw, "GET", "GET")
		if !slices.Equal(mine, want) {
			t.Errorf("%s:\n got  %v\n want %v", name, mine, want)
		}
		if out := rawAll(t, ss.fast, raw); strings.Count(out, "Content-Length:")+strings.Count(out, "Transfer-Encoding:") != 2 {
			t.Errorf("%s: each response must have exactly one framing field:\n%q", name, out)
		}
	}
}

// Trailer names a handler sets are checked as header names are: no
// response can be smuggled through one.
func TestTrailerNamesAreValidated(t *testing.T) {
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Ok, X-Bad\r\nInjected")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header()[http.TrailerPrefix+"X\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"] = []string{"v"}
		w.Header().Set("X-Ok", "fine")
	}), nil)
	out := rawAll(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if strings.Contains(out, "evil") || strings.Contains(out, "\r\nInjected") || !strings.Contains(out, "\r\nX-Ok: fine\r\n") {
		t.Fatalf("trailers:\n%q", out)
	}
}

// A pipelined request whose head arrives in parts, after a request that
// outran IdleTimeout, gets a fresh header deadline, not the stale one.
func TestPipelinedHeadAfterALongRequest(t *testing.T) {
	for _, next := range []string{"GET /next HTTP/1.1\r\nHo|st: h\r\n\r\n", "POST /next HTTP/1.1\r\nHost: h\r\nContent-Le|ngth: 2\r\n\r\nhi"} {
		_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				time.Sleep(300 * time.Millisecond)
			}
			io.WriteString(w, r.Method+" "+r.URL.Path)
		}), func(s *Server) { s.Std.IdleTimeout = 150 * time.Millisecond })
		c, br := dial(t, addr)
		// A first request, so that the wait for the next one has the
		// idle deadline.
		io.WriteString(c, "GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
		readBody(t, br, "GET")
		first, rest, _ := strings.Cut(next, "|")
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"+first)
		readBody(t, br, "GET")
		io.WriteString(c, rest)
		if _, body := readBody(t, br, "GET"); body != strings.Fields(next)[0]+" /next" {
			t.Fatalf("pipelined request: %q", body)
		}
	}
}

// A handler's own write deadline ends with its response.
func TestHandlerWriteDeadlineEndsWithItsResponse(t *testing.T) {
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			http.NewResponseController(w).SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		}
		io.WriteString(w, r.URL.Path)
	}), nil)
	c, br := dial(t, addr)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
	readBody(t, br, "GET")
	time.Sleep(150 * time.Millisecond)
	io.WriteString(c, "GET /second HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := readBody(t, br, "GET"); body != "/second" {
		t.Fatalf("second request: %q", body)
	}
}

// abortConn gives the watch the next request's first byte only once the
// request ended and stopWatch set its past deadline: the race where the
// byte and the abort meet.
type abortConn struct {
	net.Conn
	mu   sync.Mutex
	cond *sync.Cond
	dl   time.Time
	gave bool
}

func (f *abortConn) SetReadDeadline(t time.Time) error {
	f.mu.Lock()
	f.dl = t
	f.cond.Broadcast()
	f.mu.Unlock()
	return nil
}

func (f *abortConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		past := !f.dl.IsZero() && time.Now().After(f.dl)
		switch {
		case past && !f.gave:
			f.gave = true
			p[0] = 'G'
			return 1, nil
		case past:
			return 0, os.ErrDeadlineExceeded
		case f.gave:
			return copy(p, "ET / HTTP/1.1\r\nHost: h\r\n\r\n"), nil
		}
		f.cond.Wait()
	}
}

func TestByteReadAsTheWatchIsAbortedIsKept(t *testing.T) {
	fc := &abortConn{}
	fc.cond = sync.NewCond(&fc.mu)
	c := &serverConn{s: &Server{Std: &http.Server{}}, nc: fc, ctx: context.Background()}
	c.state.Store(stateActive)
	_, cancel := context.WithCancel(context.Background())
	c.armWatch(cancel)
	c.startWatch()
	time.Sleep(20 * time.Millisecond) // the watch is blocked in Read
	c.stopWatch()
	c.state.Store(stateIdle)
	req, _, ok := c.readRequest(false)
	if !ok || req == nil || req.Method != "GET" {
		t.Fatalf("next request: %v, %v", req, ok)
	}
	c.releaseIn()
}

// When Std does not serve HTTP/1 at all (unencrypted HTTP/2 only), every
// connection is Std's.
func TestStdWithoutHTTP1GetsEveryConnection(t *testing.T) {
	var std atomic.Int64
	_, addr := serveOne(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), func(s *Server) {
		s.Std.Protocols = new(http.Protocols)
		s.Std.Protocols.SetUnencryptedHTTP2(true)
		s.Std.ConnState = func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				std.Add(1)
			}
		}
	})
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	br.ReadByte() // whatever net/http makes of it
	if std.Load() != 1 {
		t.Fatalf("Std saw %d connections, want 1", std.Load())
	}
}

// FuzzResponses has a handler built from the input answer through both
// servers and requires the same response, or the same client error, and
// the same fate of the connection.
func FuzzResponses(f *testing.F) {
	f.Add(uint8(0), uint8(0), "text/plain", "X-Id", "1", uint16(13), uint8(0), false, false)
	f.Add(uint8(2), uint8(1), "5", "X-A", "a\r\nb", uint16(5), uint8(2), true, false)
	f.Add(uint8(1), uint8(3), "X-Sum", "x-sum", "42", uint16(3000), uint8(7), false, true)
	f.Add(uint8(5), uint8(4), "close", "Date", "", uint16(0), uint8(1), true, true)
	codes := []int{200, 201, 204, 206, 301, 304, 400, 404, 500, 599, 999, 103}
	names := []string{"Content-Type", "Content-Length", "Transfer-Encoding", "Trailer", "Connection", "Date", "Content-Encoding", "X-Id"}
	type spec struct {
		code       int
		name, val  string
		name2, v2  string
		body       int
		pieces     int
		flush      bool
		explicitWH bool
	}
	var mu sync.Mutex
	specs := map[string]spec{}
	var seq atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sp := specs[r.URL.Path]
		mu.Unlock()
		w.Header()[sp.name] = []string{sp.val}
		if sp.name2 != "" {
			w.Header()[sp.name2] = append(w.Header()[sp.name2], sp.v2)
		}
		// Nothing changes the header after WriteHeader: that is a
		// documented difference.
		if sp.explicitWH {
			w.WriteHeader(sp.code)
		}
		body := []byte(strings.Repeat("<html>abcdefgh", sp.body/14+1))[:sp.body]
		n := max(sp.pieces, 1)
		for i := range n {
			w.Write(body[i*len(body)/n : (i+1)*len(body)/n])
			if sp.flush && i == 0 {
				w.(http.Flusher).Flush()
			}
		}
	})
	ss := newServers(f, h, nil)
	f.Fuzz(func(t *testing.T, code, name uint8, val, name2, v2 string, body uint16, pieces uint8, flush, explicit bool) {
		sp := spec{code: codes[int(code)%len(codes)], name: names[int(name)%len(names)], val: val,
			name2: name2, v2: v2, body: int(body) % 5000, pieces: int(pieces) % 8, flush: flush, explicitWH: explicit}
		if sp.name2 == "" {
			sp.v2 = ""
		}
		path := fmt.Sprintf("/%d", seq.Add(1))
		mu.Lock()
		specs[path] = sp
		mu.Unlock()
		for _, method := range []string{"GET", "HEAD"} {
			if _, err := strconv.ParseUint(sp.val, 10, 63); method == "HEAD" && sp.name == "Content-Length" && err != nil {
				// An invalid length on a HEAD answer: net/http sends it
				// on, this Server drops it (documented in
				// TestResponsesMatchNetHTTP).
				continue
			}
			raw := method + " " + path + " HTTP/1.1\r\nHost: h\r\n\r\n"
			mine, mineClosed := exchange(t, ss.fast, raw, method)
			want, wantClosed := exchange(t, ss.std, raw, method)
			if strings.HasPrefix(want[len(want)-1], "error: ") {
				// net/http sent something a client cannot read: a value
				// with control bytes the handler set (both servers pass
				// those on; which field the client trips on first
				// depends on field order), a Transfer-Encoding of the
				// handler's beside its own chunked or an invalid
				// Content-Length on a HEAD answer (this Server writes
				// the framing itself).
				continue
			}
			if !slices.Equal(mine, want) || mineClosed != wantClosed {
				t.Fatalf("%s %+v:\n got  %.2000v (closed %v)\n want %.2000v (closed %v)", method, sp, mine, mineClosed, want, wantClosed)
			}
		}
	})
}
