package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyairtable/api-gateway/gateway/hub"
)

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		s    hub.Settings
	}{
		{"no Verify", hub.Settings{}},
		{"negative timeout", hub.Settings{Verify: verify, AuthTimeout: -1}},
		{"negative queue", hub.Settings{Verify: verify, SendQueue: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := hub.New(tt.s); err == nil {
				t.Errorf("New(%+v) error = nil, want an error", tt.s)
			}
		})
	}
}

func TestAuthSuccess(t *testing.T) {
	e := newEnv(t, hub.Settings{})
	c := e.dial(t)
	send(t, c, map[string]string{"type": "auth", "token": "tok-alice"})
	got := read(t, c)
	if got.Type != "auth_ok" || got.Subject != "alice" {
		t.Fatalf("reply to auth = %+v, want auth_ok for alice", got)
	}
	send(t, c, map[string]string{"type": "ping"})
	if got := read(t, c); got.Type != "pong" {
		t.Fatalf("reply to ping = %+v, want pong", got)
	}
	if got := e.hub.Stats(); got.Connections != 1 || got.MessagesIn != 2 {
		t.Errorf("Stats() = %+v, want 1 connection and 2 messages in", got)
	}
}

func TestAuthFailures(t *testing.T) {
	tests := []struct {
		name   string
		first  func(c *websocket.Conn) error // nil: send nothing
		reason string
	}{
		{"bad token", func(c *websocket.Conn) error {
			return c.WriteJSON(map[string]string{"type": "auth", "token": "tok-mallory"})
		}, "invalid"},
		{"empty token", func(c *websocket.Conn) error {
			return c.WriteJSON(map[string]string{"type": "auth"})
		}, "protocol"},
		{"subscribe first", func(c *websocket.Conn) error {
			return c.WriteJSON(map[string]string{"type": "subscribe", "channel": "public:news"})
		}, "protocol"},
		{"not JSON", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, []byte("hello"))
		}, "protocol"},
		{"binary auth", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"auth","token":"tok-alice"}`))
		}, "protocol"},
		{"timeout", nil, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var reasons []string
			const authTimeout = 100 * time.Millisecond
			e := newEnv(t, hub.Settings{AuthTimeout: authTimeout, OnEvent: func(ev hub.Event) {
				if ev.Kind == hub.EventAuthFailed {
					mu.Lock()
					reasons = append(reasons, ev.Reason)
					mu.Unlock()
				}
			}})
			c := e.dial(t)
			start := time.Now()
			if tt.first != nil {
				if err := tt.first(c); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			expectClose(t, c, hub.CloseAuthFailed)
			elapsed := time.Since(start)
			if tt.first == nil && (elapsed < authTimeout || elapsed > authTimeout+time.Second) {
				t.Errorf("closed after %v, want just after %v", elapsed, authTimeout)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := []string{tt.reason}; !slices.Equal(reasons, want) {
				t.Errorf("auth_failed reasons = %v, want %v", reasons, want)
			}
		})
	}
}

func TestSecondAuthIsAnError(t *testing.T) {
	e := newEnv(t, hub.Settings{})
	c := e.connect(t, "tok-alice")
	send(t, c, map[string]string{"type": "auth", "token": "tok-bob"})
	if got := read(t, c); got.Type != "error" || got.Code != hub.CodeBadRequest {
		t.Fatalf("reply to second auth = %+v, want error %s", got, hub.CodeBadRequest)
	}
	send(t, c, map[string]string{"type": "dance"})
	if got := read(t, c); got.Type != "error" || got.Code != hub.CodeBadRequest {
		t.Fatalf("reply to unknown type = %+v, want error %s", got, hub.CodeBadRequest)
	}
}

// TestSubscribePermissions subscribes alice (tenant acme, role editor) to
// channels of every kind, publishes to all of them, and checks both the
// replies and that only the allowed channels deliver.
func TestSubscribePermissions(t *testing.T) {
	events := &eventLog{}
	e := newEnv(t, hub.Settings{OnEvent: events.record})
	c := e.connect(t, "tok-alice")
	tests := []struct {
		channel string
		code    string // "" = subscribed
	}{
		{"public:news", ""},
		{"user:alice", ""},
		{"user:bob", hub.CodeForbidden},
		{"user:alice:extra", hub.CodeForbidden},
		{"tenant:acme:orders", ""},
		{"tenant:globex:orders", hub.CodeForbidden},
		{"tenant:acme", hub.CodeForbidden},
		{"role:editor:drafts", ""},
		{"role:admin:audit", hub.CodeForbidden},
		{"private", hub.CodeForbidden},
		{"admin:everything", hub.CodeForbidden},
		{"has space", hub.CodeInvalidChannel},
		{"", hub.CodeInvalidChannel},
	}
	var allowed []string
	for _, tt := range tests {
		send(t, c, map[string]string{"type": "subscribe", "channel": tt.channel})
		got := read(t, c)
		if tt.code == "" {
			if got.Type != "subscribed" || got.Channel != tt.channel {
				t.Errorf("subscribe %q: reply = %+v, want subscribed", tt.channel, got)
			}
			allowed = append(allowed, tt.channel)
			continue
		}
		if got.Type != "error" || got.Code != tt.code {
			t.Errorf("subscribe %q: reply = %+v, want error %s", tt.channel, got, tt.code)
		}
		if tt.code == hub.CodeForbidden && got.Channel != tt.channel {
			t.Errorf("subscribe %q: error channel = %q, want %q", tt.channel, got.Channel, tt.channel)
		}
	}
	for _, tt := range tests {
		if hub.ValidChannel(tt.channel) {
			if err := e.hub.Publish(context.Background(), tt.channel, json.RawMessage(`{"n":1}`)); err != nil {
				t.Fatalf("Publish(%q) error = %v", tt.channel, err)
			}
		}
	}
	if err := e.hub.Publish(context.Background(), "public:news", json.RawMessage(`"end"`)); err != nil {
		t.Fatalf("Publish() error = %v", err)
	}
	var delivered []string
	for {
		m := read(t, c)
		if m.Type != "message" {
			t.Fatalf("got %+v, want a message", m)
		}
		if string(m.Data) == `"end"` {
			break
		}
		delivered = append(delivered, m.Channel)
	}
	if !slices.Equal(delivered, allowed) {
		t.Errorf("delivered on %v, want exactly %v", delivered, allowed)
	}
	if got, want := e.hub.Stats().Subscriptions, int64(len(allowed)); got != want {
		t.Errorf("Stats().Subscriptions = %d, want %d", got, want)
	}
	if got, want := events.count(hub.EventForbidden), 7; got != want {
		t.Errorf("forbidden events = %d, want %d", got, want)
	}
}

func TestDefaultAuthorize(t *testing.T) {
	alice := hub.Identity{Subject: "alice", Roles: []string{"editor", "ops"}, Tenant: "acme"}
	tests := []struct {
		id      hub.Identity
		channel string
		want    bool
	}{
		{alice, "public:news", true},
		{hub.Identity{}, "public:news", true},
		{alice, "public", false},
		{alice, "user:alice", true},
		{alice, "user:alicex", false},
		{alice, "user:", false},
		{hub.Identity{}, "user:", false},
		{alice, "tenant:acme:orders", true},
		{alice, "tenant:acme:", true},
		{alice, "tenant:acmex:orders", false},
		{alice, "tenant:acme", false},
		{hub.Identity{}, "tenant::orders", false},
		{hub.Identity{Tenant: "a:b"}, "tenant:a:b:orders", false},
		{hub.Identity{Tenant: "a"}, "tenant:a:b:orders", true},
		{alice, "role:ops:pager", true},
		{alice, "role:admin:pager", false},
		{hub.Identity{Roles: []string{"a:b"}}, "role:a:b:x", false},
		{hub.Identity{Roles: []string{""}}, "role::x", false},
		{alice, "news", false},
		{alice, "Public:news", false},
	}
	for _, tt := range tests {
		if got := hub.DefaultAuthorize(tt.id, tt.channel); got != tt.want {
			t.Errorf("DefaultAuthorize(%+v, %q) = %v, want %v", tt.id, tt.channel, got, tt.want)
		}
	}
}

func TestValidChannel(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"public:news", true},
		{"user:auth0|123@x.y", true},
		{strings.Repeat("a", hub.MaxChannelLen), true},
		{strings.Repeat("a", hub.MaxChannelLen+1), false},
		{"", false},
		{"a b", false},
		{`a"b`, false},
		{`a\b`, false},
		{"a\nb", false},
		{"caf\u00e9", false},
		{"a\x7f", false},
	}
	for _, tt := range tests {
		if got := hub.ValidChannel(tt.name); got != tt.want {
			t.Errorf("ValidChannel(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestUnsubscribe(t *testing.T) {
	e := newEnv(t, hub.Settings{})
	c := e.connect(t, "tok-alice")
	subscribe(t, c, "public:a")
	subscribe(t, c, "public:a") // idempotent
	subscribe(t, c, "public:b")
	if got := e.hub.Stats().Subscriptions; got != 2 {
		t.Fatalf("Stats().Subscriptions = %d, want 2", got)
	}
	send(t, c, map[string]string{"type": "unsubscribe", "channel": "public:a"})
	if got := read(t, c); got.Type != "unsubscribed" || got.Channel != "public:a" {
		t.Fatalf("reply to unsubscribe = %+v, want unsubscribed", got)
	}
	ctx := context.Background()
	if err := e.hub.Publish(ctx, "public:a", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Publish(ctx, "public:b", json.RawMessage(`2`)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got.Channel != "public:b" || string(got.Data) != "2" {
		t.Fatalf("got %+v, want only the message on public:b", got)
	}
	if got := e.hub.Stats().Subscriptions; got != 1 {
		t.Errorf("Stats().Subscriptions = %d, want 1", got)
	}
	c.Close()
	waitFor(t, "the subscription to go with the connection", func() bool {
		s := e.hub.Stats()
		return s.Subscriptions == 0 && s.Connections == 0
	})
}

func TestMaxSubscriptions(t *testing.T) {
	e := newEnv(t, hub.Settings{MaxSubscriptions: 2})
	c := e.connect(t, "tok-alice")
	subscribe(t, c, "public:1")
	subscribe(t, c, "public:2")
	send(t, c, map[string]string{"type": "subscribe", "channel": "public:3"})
	if got := read(t, c); got.Type != "error" || got.Code != hub.CodeTooManySubscriptions {
		t.Fatalf("third subscribe: reply = %+v, want error %s", got, hub.CodeTooManySubscriptions)
	}
	subscribe(t, c, "public:2") // already held: still fine
}

func TestPublishValidates(t *testing.T) {
	e := newEnv(t, hub.Settings{})
	ctx := context.Background()
	tests := []struct {
		channel string
		data    string
		want    error
	}{
		{"public:x", `{"ok":true}`, nil},
		{"bad channel", `{}`, hub.ErrInvalidChannel},
		{"public:x", `{"unterminated":`, hub.ErrInvalidData},
		{"public:x", ``, hub.ErrInvalidData},
	}
	for _, tt := range tests {
		if err := e.hub.Publish(ctx, tt.channel, json.RawMessage(tt.data)); !errors.Is(err, tt.want) {
			t.Errorf("Publish(%q, %q) = %v, want %v", tt.channel, tt.data, err, tt.want)
		}
	}
}

// TestBroadcastReachesAll: one broadcast reaches each of 1,000 real
// WebSocket clients exactly once.
func TestBroadcastReachesAll(t *testing.T) {
	const n = 1000
	raiseFileLimit(t, 2*n+200)
	e := newEnv(t, hub.Settings{})
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, _, err := dialer.Dial(e.url, nil)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			c.WriteJSON(map[string]string{"type": "auth", "token": "tok-alice"})
			c.WriteJSON(map[string]string{"type": "subscribe", "channel": "public:load"})
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for _, want := range []string{"auth_ok", "subscribed"} {
				var m envelope
				if err := c.ReadJSON(&m); err != nil || m.Type != want {
					errs <- fmt.Errorf("client %d: got %+v, %v; want %s", i, m, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := e.hub.Publish(context.Background(), "public:load", json.RawMessage(`{"seq":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Publish(context.Background(), "public:end", json.RawMessage(`{}`)); err != nil {
		t.Fatal(err) // nobody listens: must not reach anyone
	}
	var got atomic.Int64
	for i, c := range conns {
		wg.Go(func() {
			var m envelope
			if err := c.ReadJSON(&m); err != nil || m.Type != "message" || string(m.Data) != `{"seq":1}` {
				t.Errorf("client %d: got %+v, %v; want the broadcast", i, m, err)
				return
			}
			got.Add(1)
			// Nothing else may follow.
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, data, err := c.ReadMessage(); err == nil {
				t.Errorf("client %d: extra message %s", i, data)
			}
		})
	}
	wg.Wait()
	if got.Load() != n {
		t.Errorf("%d clients received the broadcast, want %d", got.Load(), n)
	}
	if s := e.hub.Stats(); s.MessagesOut != n || s.Connections != n || s.Subscriptions != n {
		t.Errorf("Stats() = %+v, want %d of MessagesOut, Connections, Subscriptions", s, n)
	}
}

// TestSlowClientDropped: a client that stops reading is dropped once its
// queue overflows, while the others keep getting every message promptly.
func TestSlowClientDropped(t *testing.T) {
	events := &eventLog{}
	e := newEnv(t, hub.Settings{SendQueue: 2, WriteTimeout: 2 * time.Second, OnEvent: events.record})
	const good = 4
	var readers []*websocket.Conn
	for range good {
		c := e.connect(t, "tok-alice")
		subscribe(t, c, "public:firehose")
		readers = append(readers, c)
	}
	// The stalled client asks for a tiny receive buffer so the server's
	// writes block after little data.
	small := &websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}).DialContext}
	stalled, _, err := small.Dial(e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stalled.Close() })
	send(t, stalled, map[string]string{"type": "auth", "token": "tok-bob"})
	read(t, stalled)
	subscribe(t, stalled, "public:firehose")

	payload := json.RawMessage(`{"pad":"` + strings.Repeat("x", 256<<10) + `"}`)
	var worst time.Duration
	published, droppedAt := 0, 0
	// Keep publishing for 10 messages after the drop: the others must not
	// notice it.
	for droppedAt == 0 || published < droppedAt+10 {
		if published == 400 {
			t.Fatalf("stalled client not dropped after %d messages of %d KiB", published, len(payload)>>10)
		}
		start := time.Now()
		if err := e.hub.Publish(context.Background(), "public:firehose", payload); err != nil {
			t.Fatal(err)
		}
		published++
		for i, c := range readers {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, data, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("reader %d, message %d: %v", i, published, err)
			}
			if len(data) < len(payload) {
				t.Fatalf("reader %d got %d bytes, want %d", i, len(data), len(payload))
			}
			worst = max(worst, time.Since(start))
		}
		if droppedAt == 0 && e.hub.Stats().Dropped > 0 {
			droppedAt = published
		}
	}
	t.Logf("dropped after %d messages; slowest delivery to a reading client %v", droppedAt, worst)
	if worst > 100*time.Millisecond {
		t.Errorf("slowest delivery to a reading client = %v, want <= 100ms", worst)
	}
	waitFor(t, "the stalled connection to close", func() bool { return e.hub.Stats().Connections == good })
	if s := e.hub.Stats(); s.Dropped != 1 {
		t.Errorf("Stats().Dropped = %d, want 1", s.Dropped)
	}
	if got := events.count(hub.EventDropped); got != 1 {
		t.Errorf("dropped events = %d, want 1", got)
	}
}

func TestBroadcastHandler(t *testing.T) {
	e := newEnv(t, hub.Settings{})
	c := e.connect(t, "tok-alice")
	subscribe(t, c, "public:news")
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	tests := []struct {
		name   string
		method string
		key    string
		body   string
		want   int
	}{
		{"accepted", http.MethodPost, testAPIKey, `{"channel":"public:news","data":{"title":"hi"}}`, http.StatusAccepted},
		{"no key", http.MethodPost, "", `{"channel":"public:news","data":{}}`, http.StatusUnauthorized},
		{"wrong key", http.MethodPost, "nope", `{"channel":"public:news","data":{}}`, http.StatusUnauthorized},
		{"GET", http.MethodGet, testAPIKey, ``, http.StatusMethodNotAllowed},
		{"bad JSON", http.MethodPost, testAPIKey, `{"channel":`, http.StatusBadRequest},
		{"unknown field", http.MethodPost, testAPIKey, `{"channel":"public:news","data":{},"x":1}`, http.StatusBadRequest},
		{"trailing data", http.MethodPost, testAPIKey, `{"channel":"public:news","data":{}} {}`, http.StatusBadRequest},
		{"invalid channel", http.MethodPost, testAPIKey, `{"channel":"a b","data":{}}`, http.StatusBadRequest},
		{"no data", http.MethodPost, testAPIKey, `{"channel":"public:news"}`, http.StatusBadRequest},
		{"too large", http.MethodPost, testAPIKey,
			`{"channel":"public:news","data":"` + strings.Repeat("x", hub.MaxBroadcastBody) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, e.srv.URL+"/broadcast", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.key != "" {
				req.Header.Set("X-API-Key", tt.key)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.want, body.Bytes())
			}
			if tt.want == http.StatusAccepted {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			var p struct {
				Type   string
				Status int
			}
			if err := json.Unmarshal(body.Bytes(), &p); err != nil || p.Status != tt.want || !strings.HasPrefix(p.Type, "https://") {
				t.Errorf("problem = %s (%v), want status %d and a type URI", body.Bytes(), err, tt.want)
			}
		})
	}
	// Only the accepted request was delivered.
	if got := read(t, c); got.Type != "message" || string(got.Data) != `{"title":"hi"}` {
		t.Fatalf("got %+v, want the accepted broadcast", got)
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, data, err := c.ReadMessage(); err == nil {
		t.Errorf("extra message %s", data)
	}
}

func TestShutdown(t *testing.T) {
	checkGoroutines(t)
	h, err := hub.New(hub.Settings{Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{hub: h}
	srv := newServer(t, h)
	e.url = srv
	authed := []*websocket.Conn{e.connect(t, "tok-alice"), e.connect(t, "tok-bob")}
	subscribe(t, authed[0], "public:x")
	pending := e.dial(t) // not yet authenticated

	start := time.Now()
	results := make(chan error, 3)
	for _, c := range append(authed, pending) {
		go func() {
			// Like a browser: read until the close frame; gorilla answers it.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, _, err := c.ReadMessage()
				if err != nil {
					results <- err
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown() = %v, want nil", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("Shutdown() took %v with cooperative clients, want well under the 1s close wait", d)
	}
	for range 3 {
		err := <-results
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("client read error = %v, want close 1001", err)
		}
	}
	if s := h.Stats(); s.Connections != 0 || s.Subscriptions != 0 {
		t.Errorf("Stats() after Shutdown = %+v, want no connections or subscriptions", s)
	}
	if err := h.Publish(context.Background(), "public:x", json.RawMessage(`1`)); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Publish() after Shutdown = %v, want ErrClosed", err)
	}
	_, resp, err := dialer.Dial(e.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Dial() after Shutdown: resp %v, err %v; want 503", resp, err)
	}
}

// newServer serves h at /ws until the test ends and returns its ws:// URL.
func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// TestShutdownDeadline: clients that never answer the close frame are cut
// off when the Shutdown context ends, and nothing leaks.
func TestShutdownDeadline(t *testing.T) {
	checkGoroutines(t)
	h, err := hub.New(hub.Settings{Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{hub: h, url: newServer(t, h)}
	c := e.connect(t, "tok-alice") // never reads again
	_ = c
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := h.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown() = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Shutdown() took %v, want about 100ms", d)
	}
	if s := h.Stats(); s.Connections != 0 {
		t.Errorf("Stats().Connections = %d after Shutdown, want 0", s.Connections)
	}
}

func TestPerIPCap(t *testing.T) {
	events := &eventLog{}
	e := newEnv(t, hub.Settings{MaxConnsPerIP: 2, OnEvent: events.record})
	first := e.connect(t, "tok-alice")
	e.connect(t, "tok-bob")
	_, resp, err := dialer.Dial(e.url, nil)
	if err == nil {
		t.Fatal("third Dial() succeeded, want 429")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third Dial(): resp %v, err %v; want 429", resp, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	if got := events.count(hub.EventRefused); got != 1 {
		t.Errorf("refused events = %d, want 1", got)
	}
	first.Close()
	waitFor(t, "the first connection to end", func() bool { return e.hub.Stats().Connections == 1 })
	e.connect(t, "tok-carol") // a slot is free again
}

func TestPerIPCapUsesClientIP(t *testing.T) {
	e := newEnv(t, hub.Settings{MaxConnsPerIP: 1, ClientIP: func(r *http.Request) string {
		return r.Header.Get("X-Test-IP")
	}})
	hdr := func(ip string) http.Header { return http.Header{"X-Test-IP": {ip}} }
	c1, _, err := dialer.Dial(e.url, hdr("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, _, err := dialer.Dial(e.url, hdr("10.0.0.2"))
	if err != nil {
		t.Fatalf("Dial() from another IP error = %v, want success", err)
	}
	defer c2.Close()
	if _, resp, err := dialer.Dial(e.url, hdr("10.0.0.1")); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second Dial() from 10.0.0.1: err %v; want 429", err)
	}
}

func TestPerUserCap(t *testing.T) {
	e := newEnv(t, hub.Settings{MaxConnsPerUser: 1})
	e.connect(t, "tok-alice")
	c := e.dial(t)
	send(t, c, map[string]string{"type": "auth", "token": "tok-alice"})
	expectClose(t, c, hub.CloseTooManyConns)
	e.connect(t, "tok-bob") // other users are unaffected
}

func TestReadLimit(t *testing.T) {
	e := newEnv(t, hub.Settings{ReadLimit: 256})
	c := e.connect(t, "tok-alice")
	send(t, c, map[string]string{"type": "subscribe", "channel": "public:" + strings.Repeat("x", 1000)})
	expectClose(t, c, websocket.CloseMessageTooBig)
}

func TestOrigin(t *testing.T) {
	tests := []struct {
		name   string
		check  func(*http.Request) bool
		origin string // "" = same as the server; "-" = none
		want   int
	}{
		{"same origin", nil, "", http.StatusSwitchingProtocols},
		{"no origin", nil, "-", http.StatusSwitchingProtocols},
		{"cross origin", nil, "https://evil.example", http.StatusForbidden},
		{"allow-listed", func(r *http.Request) bool { return r.Header.Get("Origin") == "https://app.example" },
			"https://app.example", http.StatusSwitchingProtocols},
		{"not allow-listed", func(r *http.Request) bool { return r.Header.Get("Origin") == "https://app.example" },
			"https://evil.example", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, hub.Settings{CheckOrigin: tt.check})
			hdr := http.Header{}
			switch tt.origin {
			case "":
				hdr.Set("Origin", e.srv.URL)
			case "-":
			default:
				hdr.Set("Origin", tt.origin)
			}
			c, resp, err := dialer.Dial(e.url, hdr)
			if c != nil {
				c.Close()
			}
			if resp == nil {
				t.Fatalf("Dial() error = %v, no response", err)
			}
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	events := &eventLog{}
	e := newEnv(t, hub.Settings{OnEvent: events.record})
	c := e.connect(t, "tok-alice")
	subscribe(t, c, "public:a")
	send(t, c, map[string]string{"type": "unsubscribe", "channel": "public:a"})
	read(t, c)
	subscribe(t, c, "public:a")
	e.hub.Publish(context.Background(), "public:a", json.RawMessage(`1`))
	read(t, c)
	c.Close()
	waitFor(t, "disconnect", func() bool { return events.count(hub.EventDisconnected) == 1 })
	want := map[hub.EventKind]int{
		hub.EventConnected: 1, hub.EventAuthenticated: 1, hub.EventSubscribed: 2,
		hub.EventUnsubscribed: 1, hub.EventMessageIn: 4, hub.EventBroadcast: 1, hub.EventDisconnected: 1,
	}
	for k, n := range want {
		if got := events.count(k); got != n {
			t.Errorf("%v events = %d, want %d", k, got, n)
		}
	}
	if got := hub.EventDropped.String(); got != "dropped" {
		t.Errorf("EventDropped.String() = %q, want dropped", got)
	}
}

// wrapper hides the server's ResponseWriter behind Unwrap, as logging
// middleware does.
type wrapper struct{ w http.ResponseWriter }

func (w *wrapper) Header() http.Header         { return w.w.Header() }
func (w *wrapper) Write(b []byte) (int, error) { return w.w.Write(b) }
func (w *wrapper) WriteHeader(code int)        { w.w.WriteHeader(code) }
func (w *wrapper) Unwrap() http.ResponseWriter { return w.w }

func TestUpgradeThroughMiddleware(t *testing.T) {
	checkGoroutines(t)
	h, err := hub.New(hub.Settings{Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	url := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&wrapper{w}, r)
	}))
	e := &env{hub: h, url: url}
	e.connect(t, "tok-alice")
}

// memBackplane is an in-process Backplane that connects hubs in one
// process: Publish hands the message to every running subscriber.
type memBackplane struct {
	mu   sync.Mutex
	subs map[*chan [2]string]struct{}
}

func (b *memBackplane) Publish(_ context.Context, channel string, msg []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		*ch <- [2]string{channel, string(msg)}
	}
	return nil
}

func (b *memBackplane) Run(ctx context.Context, deliver func(string, []byte)) error {
	ch := make(chan [2]string, 16)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*chan [2]string]struct{}{}
	}
	b.subs[&ch] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, &ch)
		b.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			deliver(m[0], []byte(m[1]))
		}
	}
}

// TestBackplaneExactlyOnce: with a backplane, Publish does not deliver
// locally by itself; the backplane's echo does, once.
func TestBackplaneExactlyOnce(t *testing.T) {
	bp := &memBackplane{}
	e := newEnv(t, hub.Settings{Backplane: bp})
	c := e.connect(t, "tok-alice")
	subscribe(t, c, "public:x")
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- e.hub.Run(ctx) }()
	waitFor(t, "Run to subscribe", func() bool { bp.mu.Lock(); defer bp.mu.Unlock(); return len(bp.subs) == 1 })
	// Garbage from a foreign publisher never reaches clients.
	bp.Publish(context.Background(), "public:x", []byte(`{not json`))
	if err := e.hub.Publish(context.Background(), "public:x", json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); string(got.Data) != `{"n":1}` {
		t.Fatalf("got %+v, want the broadcast", got)
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, data, err := c.ReadMessage(); err == nil {
		t.Errorf("duplicate delivery %s", data)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Errorf("Run() = %v after cancel, want nil", err)
	}
}
