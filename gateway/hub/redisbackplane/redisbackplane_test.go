package redisbackplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
	"github.com/pyairtable/api-gateway/gateway/hub"
	"github.com/pyairtable/api-gateway/gateway/hub/redisbackplane"
)

// checkGoroutines fails the test if, after every later cleanup has run,
// more goroutines remain than when it was called.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("NumGoroutine() = %d after cleanup, want <= %d\n%s", runtime.NumGoroutine(), before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func newClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1 // fail fast while Redis is down
	opt.DialTimeout = time.Second
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitSubscribers waits until n connections listen on channel.
func waitSubscribers(t *testing.T, c *redis.Client, channel string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := c.PubSubNumSub(context.Background(), channel).Result()
		if err == nil && got[channel] == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUBSUB NUMSUB %s = %v (%v), want %d", channel, got, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runBackplane runs b until the test ends, collecting deliveries.
func runBackplane(t *testing.T, b *redisbackplane.Backplane) <-chan [2]string {
	t.Helper()
	got := make(chan [2]string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Run(ctx, func(channel string, msg []byte) { got <- [2]string{channel, string(msg)} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run() did not return after cancel")
		}
	})
	return got
}

func expectDelivery(t *testing.T, got <-chan [2]string, channel, msg string) {
	t.Helper()
	select {
	case m := <-got:
		if m != [2]string{channel, msg} {
			t.Fatalf("delivered %q, want %q", m, [2]string{channel, msg})
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing delivered, want %s %s", channel, msg)
	}
}

func TestPublishAndRun(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	rc := newClient(t, srv)
	b := redisbackplane.New(rc, "test:")
	got := runBackplane(t, b)
	waitSubscribers(t, rc, b.Channel(), 1)
	ctx := context.Background()

	if err := b.Publish(ctx, "public:x", []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	expectDelivery(t, got, "public:x", `{"a":1}`)

	// A foreign publisher: malformed payloads are dropped, well-formed
	// ones delivered.
	rc.Publish(ctx, b.Channel(), "no separator")
	rc.Publish(ctx, b.Channel(), "public:y\n[1,2]")
	expectDelivery(t, got, "public:y", `[1,2]`)

	if err := b.Publish(ctx, "bad\nchannel", []byte(`1`)); !errors.Is(err, redisbackplane.ErrInvalidChannel) {
		t.Errorf("Publish() with a newline = %v, want ErrInvalidChannel", err)
	}
	select {
	case m := <-got:
		t.Errorf("unexpected delivery %q", m)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestPrefixesIsolate(t *testing.T) {
	srv := redistest.Start(t)
	rc := newClient(t, srv)
	a, b := redisbackplane.New(rc, "a:"), redisbackplane.New(rc, "")
	if b.Channel() != redisbackplane.DefaultPrefix+"broadcast" {
		t.Errorf("Channel() = %q, want the default prefix", b.Channel())
	}
	gotA, gotB := runBackplane(t, a), runBackplane(t, b)
	waitSubscribers(t, rc, a.Channel(), 1)
	waitSubscribers(t, rc, b.Channel(), 1)
	b.Publish(context.Background(), "public:x", []byte(`"for b"`))
	expectDelivery(t, gotB, "public:x", `"for b"`)
	select {
	case m := <-gotA:
		t.Errorf("backplane with another prefix got %q", m)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestRedisRestart(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	rc := newClient(t, srv)
	b := redisbackplane.NewWithSettings(newClient(t, srv), redisbackplane.Settings{MaxBackoff: 100 * time.Millisecond})
	got := runBackplane(t, b)
	waitSubscribers(t, rc, b.Channel(), 1)

	srv.Stop()
	if err := b.Publish(context.Background(), "public:x", []byte(`1`)); err == nil {
		t.Error("Publish() while Redis is down = nil, want an error")
	}
	time.Sleep(300 * time.Millisecond) // let Run fail and back off a few times
	srv.Restart()
	waitSubscribers(t, rc, b.Channel(), 1)
	if err := b.Publish(context.Background(), "public:x", []byte(`2`)); err != nil {
		t.Fatalf("Publish() after restart = %v", err)
	}
	expectDelivery(t, got, "public:x", `2`)
}

// pubsubIDs returns the ids of Redis's pub/sub client connections.
func pubsubIDs(t *testing.T, rc *redis.Client) []string {
	t.Helper()
	list, err := rc.Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	var ids []string
	for line := range strings.Lines(list) {
		if id, ok := strings.CutPrefix(strings.Fields(line)[0], "id="); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestHungRedis: while Redis is frozen, the subscription is declared stale
// after two quiet ping intervals and replaced by a new connection, which
// works once Redis answers again.
func TestHungRedis(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	rc := newClient(t, srv)
	b := redisbackplane.NewWithSettings(newClient(t, srv), redisbackplane.Settings{
		PingInterval: 50 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	got := runBackplane(t, b)
	waitSubscribers(t, rc, b.Channel(), 1)
	before := pubsubIDs(t, rc)

	srv.Pause()
	time.Sleep(300 * time.Millisecond) // several ping intervals without answers
	srv.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ids := pubsubIDs(t, rc)
		if len(ids) == 1 && ids[0] != before[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pub/sub connections = %v, want one new connection replacing %v", ids, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Publish(context.Background(), "public:x", []byte(`"after"`))
	expectDelivery(t, got, "public:x", `"after"`)
}

// TestRunStopsWhileRedisFrozen: a receive blocked on a frozen Redis does
// not delay Run's return when its context ends.
func TestRunStopsWhileRedisFrozen(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	rc := newClient(t, srv)
	b := redisbackplane.New(newClient(t, srv), "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, func(string, []byte) {}) }()
	waitSubscribers(t, rc, b.Channel(), 1)
	srv.Pause()
	defer srv.Resume() // before the cleanups that need Redis
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run() did not return after cancel while Redis was frozen")
	}
}

// replica is one gateway replica: a hub with its own Redis client and
// backplane, served on loopback.
type replica struct {
	hub *hub.Hub
	url string
}

func newReplica(t *testing.T, srv *redistest.Server) *replica {
	t.Helper()
	bp := redisbackplane.New(newClient(t, srv), "")
	h, err := hub.New(hub.Settings{
		Backplane: bp,
		Verify: func(_ context.Context, token string) (hub.Identity, error) {
			if token != "good" {
				return hub.Identity{}, errors.New("bad token")
			}
			return hub.Identity{Subject: "alice"}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := h.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown() = %v", err)
		}
		hs.Close()
	})
	return &replica{hub: h, url: "ws" + strings.TrimPrefix(hs.URL, "http")}
}

func (r *replica) subscriber(t *testing.T, channel string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(r.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.WriteJSON(map[string]string{"type": "auth", "token": "good"})
	c.WriteJSON(map[string]string{"type": "subscribe", "channel": channel})
	for _, want := range []string{"auth_ok", "subscribed"} {
		var m struct{ Type string }
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := c.ReadJSON(&m); err != nil || m.Type != want {
			t.Fatalf("got %+v (%v), want %s", m, err, want)
		}
	}
	return c
}

// TestTwoReplicas: broadcasts published on either of two hubs reach the
// subscribers of both, each exactly once.
func TestTwoReplicas(t *testing.T) {
	checkGoroutines(t)
	srv := redistest.Start(t)
	a, b := newReplica(t, srv), newReplica(t, srv)
	waitSubscribers(t, newClient(t, srv), redisbackplane.DefaultPrefix+"broadcast", 2)
	var subs []*websocket.Conn
	for range 3 {
		subs = append(subs, a.subscriber(t, "public:news"))
	}
	for range 2 {
		subs = append(subs, b.subscriber(t, "public:news"))
	}

	const each = 5
	var want []string
	for i := range each {
		for name, r := range map[string]*replica{"a": a, "b": b} {
			msg := fmt.Sprintf(`{"from":%q,"n":%d}`, name, i)
			want = append(want, msg)
			if err := r.hub.Publish(context.Background(), "public:news", json.RawMessage(msg)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	for i, c := range subs {
		wg.Go(func() {
			counts := map[string]int{}
			for range len(want) {
				var m struct{ Data json.RawMessage }
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if err := c.ReadJSON(&m); err != nil {
					t.Errorf("subscriber %d: %v after %d messages", i, err, len(counts))
					return
				}
				counts[string(m.Data)]++
			}
			// Duplicates would arrive within this wait.
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, data, err := c.ReadMessage(); err == nil {
				t.Errorf("subscriber %d: extra message %s", i, data)
			}
			for _, msg := range want {
				if counts[msg] != 1 {
					t.Errorf("subscriber %d got %s %d times, want once", i, msg, counts[msg])
				}
			}
		})
	}
	wg.Wait()
	if got, want := a.hub.Stats().MessagesOut, uint64(len(want)*3); got != want {
		t.Errorf("replica a: Stats().MessagesOut = %d, want %d", got, want)
	}
	if got, want := b.hub.Stats().MessagesOut, uint64(len(want)*2); got != want {
		t.Errorf("replica b: Stats().MessagesOut = %d, want %d", got, want)
	}
}
