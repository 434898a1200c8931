package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyairtable/api-gateway/gateway/hub"
)

// Test identities, keyed by token.
var identities = map[string]hub.Identity{
	"tok-alice": {Subject: "alice", Roles: []string{"editor"}, Tenant: "acme"},
	"tok-bob":   {Subject: "bob", Roles: []string{"admin"}, Tenant: "globex"},
	"tok-carol": {Subject: "carol", Tenant: "acme"},
}

var errBadToken = errors.New("bad token")

func verify(_ context.Context, token string) (hub.Identity, error) {
	id, ok := identities[token]
	if !ok {
		return hub.Identity{}, errBadToken
	}
	return id, nil
}

const testAPIKey = "test-key"

// keyCheck is the BroadcastHandler check used by tests.
func keyCheck(r *http.Request) bool { return r.Header.Get("X-API-Key") == testAPIKey }

// env is a hub served on loopback at /ws, with BroadcastHandler at
// /broadcast.
type env struct {
	hub *hub.Hub
	srv *httptest.Server
	url string // ws://…/ws
}

// newEnv starts a hub with s (Verify defaults to the test verifier) and
// shuts it down when the test ends, checking that no goroutine outlives it.
func newEnv(t *testing.T, s hub.Settings) *env {
	t.Helper()
	checkGoroutines(t)
	if s.Verify == nil {
		s.Verify = verify
	}
	h, err := hub.New(s)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	mux.Handle("/broadcast", h.BroadcastHandler(keyCheck))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() = %v, want nil", err)
		}
		srv.Close()
	})
	return &env{hub: h, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
}

// checkGoroutines fails the test if, after every later cleanup has run,
// more goroutines remain than when it was called.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("NumGoroutine() = %d after cleanup, want <= %d\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

var dialer = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}

// dial connects to the hub and closes the connection when the test ends.
func (e *env) dial(t testing.TB) *websocket.Conn {
	t.Helper()
	c, resp, err := dialer.Dial(e.url, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("Dial() error = %v (status %d)", err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// envelope is any server message.
type envelope struct {
	Type    string          `json:"type"`
	Subject string          `json:"subject"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

func send(t testing.TB, c *websocket.Conn, v any) {
	t.Helper()
	if err := c.WriteJSON(v); err != nil {
		t.Fatalf("WriteJSON(%v) error = %v", v, err)
	}
}

// read reads the next message, failing after 5s.
func read(t testing.TB, c *websocket.Conn) envelope {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var e envelope
	if err := c.ReadJSON(&e); err != nil {
		t.Fatalf("ReadJSON() error = %v", err)
	}
	return e
}

// connect dials and authenticates with token.
func (e *env) connect(t testing.TB, token string) *websocket.Conn {
	t.Helper()
	c := e.dial(t)
	send(t, c, map[string]string{"type": "auth", "token": token})
	if got := read(t, c); got.Type != "auth_ok" {
		t.Fatalf("reply to auth = %+v, want auth_ok", got)
	}
	return c
}

func subscribe(t testing.TB, c *websocket.Conn, channel string) {
	t.Helper()
	send(t, c, map[string]string{"type": "subscribe", "channel": channel})
	if got := read(t, c); got.Type != "subscribed" || got.Channel != channel {
		t.Fatalf("reply to subscribe %q = %+v, want subscribed", channel, got)
	}
}

// expectClose reads until the connection fails and checks the close code.
func expectClose(t testing.TB, c *websocket.Conn, code int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read error = %v, want close %d", err, code)
		}
		if ce.Code != code {
			t.Fatalf("close code = %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// raiseFileLimit raises the soft open-files limit to at least n (up to the
// hard limit) for tests that open many sockets, restoring it afterwards.
func raiseFileLimit(t testing.TB, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("Getrlimit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("open-files hard limit %d < %d", lim.Max, n)
	}
	old := lim
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("Setrlimit: %v", err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// eventLog records events for assertions.
type eventLog struct {
	mu     sync.Mutex
	counts map[hub.EventKind]int
}

func (l *eventLog) record(ev hub.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[hub.EventKind]int{}
	}
	l.counts[ev.Kind]++
}

func (l *eventLog) count(k hub.EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[k]
}
