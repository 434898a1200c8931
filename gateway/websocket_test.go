package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyairtable/api-gateway/authn"
	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
	"github.com/pyairtable/api-gateway/gateway/hub"
	"github.com/pyairtable/api-gateway/gateway/hub/redisbackplane"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

// wsEcho is a WebSocket echo backend; a request without an upgrade gets a
// plain 200, like a backend that does not speak WebSocket on that path.
func wsEcho(t *testing.T) *gatewaytest.Backend {
	up := websocket.Upgrader{}
	return gatewaytest.NewBackend(t, "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/plain" || !websocket.IsWebSocketUpgrade(r) {
			w.Write([]byte("no upgrade here: " + r.Header.Get("Upgrade")))
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte(r.Header.Get("X-User-Id")+":"), msg...))
		}
	}))
}

func wsURL(base, path string) string { return "ws" + strings.TrimPrefix(base, "http") + path }

func TestWebSocketProxy(t *testing.T) {
	b := wsEcho(t)
	jwtAuth, _ := authn.NewJWT(authn.JWTSettings{Secret: []byte(testSecret)})
	_, base := newGateway(t, gateway.Config{
		Services: []gateway.Service{{Name: "ws", Instances: []*balancer.Instance{inst(t, b.URL)}, Timeout: 200 * time.Millisecond}},
		Routes: []gateway.Route{
			{Prefix: "/stream", Service: "ws", WebSocket: true},
			{Prefix: "/plain", Service: "ws"},
		},
		Auth:      jwtAuth,
		WebSocket: gateway.WebSocketSettings{MaxConnsPerIP: 2},
	})
	tok, _ := authn.MintHS256([]byte(testSecret), authn.MintClaims{Subject: "ada", TTL: time.Hour})
	hdr := http.Header{"Authorization": {"Bearer " + tok}}

	// Authenticated handshake, echo through the tunnel, past the service
	// timeout (tunnels are exempt), with the identity the gateway set.
	c, resp, err := websocket.DefaultDialer.Dial(wsURL(base, "/stream"), hdr)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	time.Sleep(300 * time.Millisecond)
	c.WriteMessage(websocket.TextMessage, []byte("hello"))
	_, msg, err := c.ReadMessage()
	if err != nil || string(msg) != "ada:hello" {
		t.Fatalf("echo = %q, %v", msg, err)
	}
	// No token: 401 at the handshake, nothing tunnelled.
	_, resp, err = websocket.DefaultDialer.Dial(wsURL(base, "/stream"), nil)
	if err == nil || resp.StatusCode != 401 {
		t.Errorf("unauthenticated handshake: %v %v", resp, err)
	}
	// Per-IP cap: one more is fine, the third is refused.
	c2, _, err := websocket.DefaultDialer.Dial(wsURL(base, "/stream"), hdr)
	if err != nil {
		t.Fatal(err)
	}
	_, resp, err = websocket.DefaultDialer.Dial(wsURL(base, "/stream"), hdr)
	if err == nil || resp.StatusCode != 429 {
		t.Errorf("third connection from one IP: %v %v, want 429", resp, err)
	}
	c2.Close()
	c.Close()
	// Foreign origin refused.
	h := hdr.Clone()
	h.Set("Origin", "https://evil.example.com")
	time.Sleep(50 * time.Millisecond) // let the closed tunnels release their slots
	_, resp, err = websocket.DefaultDialer.Dial(wsURL(base, "/stream"), h)
	if err == nil || resp.StatusCode != 403 {
		t.Errorf("foreign origin: %v %v, want 403", resp, err)
	}
	// A backend that answers the upgrade with 200 gets no tunnel: the
	// client sees a plain response. A route without WebSocket strips the
	// Upgrade header entirely.
	_, resp, err = websocket.DefaultDialer.Dial(wsURL(base, "/plain"), hdr)
	if err == nil || resp.StatusCode != 200 {
		t.Errorf("non-websocket route: %v %v", resp, err)
	}
	req, _ := http.NewRequest("GET", base+"/plain", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "h2c")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 200 || body.String() != "no upgrade here: " {
		t.Errorf("h2c upgrade: %d %q, want the Upgrade header stripped", r2.StatusCode, body)
	}
}

// newHubGateway serves a gateway with the hub, optionally sharing a Redis
// backplane.
func newHubGateway(t *testing.T, redisURL string) string {
	t.Helper()
	jwtAuth, _ := authn.NewJWT(authn.JWTSettings{Secret: []byte(testSecret)})
	keys, _ := authn.NewAPIKeys([]authn.APIKey{{Name: "notifier", KeySHA256: authn.HashAPIKey("svc-key"), Roles: []string{"service"}}}, "")
	hs := hub.Settings{
		Verify: func(ctx context.Context, token string) (hub.Identity, error) {
			r, _ := http.NewRequestWithContext(ctx, "GET", "/", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			p, err := jwtAuth.Authenticate(r)
			if err != nil {
				return hub.Identity{}, err
			}
			return hub.Identity{Subject: p.Subject, Roles: p.Roles, Tenant: p.Tenant}, nil
		},
	}
	if redisURL != "" {
		client, err := redisstore.NewClient(redisURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		hs.Backplane = redisbackplane.New(client, "test:")
	}
	h, err := hub.New(hs)
	if err != nil {
		t.Fatal(err)
	}
	b := gatewaytest.NewBackend(t, "svc", nil)
	g, err := gateway.New(gateway.Config{
		Services:  []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:    []gateway.Route{{Prefix: "/api", Service: "svc"}},
		Auth:      authn.Chain(jwtAuth, keys),
		WebSocket: gateway.WebSocketSettings{Hub: h},
		Server:    gateway.ServerSettings{ShutdownDelay: -1},
		Logger:    discardLogger,
	})
	if err != nil {
		t.Fatal(err)
	}
	return serveGateway(t, g)
}

func subscribe(t *testing.T, base, subject, channel string) *websocket.Conn {
	t.Helper()
	tok, _ := authn.MintHS256([]byte(testSecret), authn.MintClaims{Subject: subject, TTL: time.Hour})
	c, _, err := websocket.DefaultDialer.Dial(wsURL(base, "/ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.WriteJSON(map[string]string{"type": "auth", "token": tok})
	var m map[string]any
	c.ReadJSON(&m)
	if m["type"] != "auth_ok" {
		t.Fatalf("auth reply %v", m)
	}
	c.WriteJSON(map[string]string{"type": "subscribe", "channel": channel})
	c.ReadJSON(&m)
	if m["type"] != "subscribed" {
		t.Fatalf("subscribe reply %v", m)
	}
	return c
}

func broadcast(t *testing.T, base, key, channel string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": map[string]string{"text": "hi"}})
	req, _ := http.NewRequest("POST", base+"/internal/broadcast", bytes.NewReader(body))
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestHubThroughGateway(t *testing.T) {
	base := newHubGateway(t, "")
	c := subscribe(t, base, "u1", "public:news")
	if s := broadcast(t, base, "", "public:news"); s != 401 {
		t.Errorf("broadcast without a key = %d, want 401", s)
	}
	if s := broadcast(t, base, "svc-key", "public:news"); s != 202 {
		t.Fatalf("broadcast = %d, want 202", s)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var m map[string]any
	if err := c.ReadJSON(&m); err != nil || m["type"] != "message" || m["channel"] != "public:news" {
		t.Errorf("message = %v, %v", m, err)
	}
}

// TestHubAcrossReplicas: two gateways share one real redis-server; a
// broadcast published on one reaches subscribers on both, once each.
func TestHubAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newHubGateway(t, srv.URL), newHubGateway(t, srv.URL)
	subs := []*websocket.Conn{subscribe(t, a, "u1", "public:x"), subscribe(t, a, "u2", "public:x"), subscribe(t, b, "u3", "public:x")}
	time.Sleep(200 * time.Millisecond) // both backplanes subscribed
	if s := broadcast(t, a, "svc-key", "public:x"); s != 202 {
		t.Fatalf("broadcast = %d", s)
	}
	var wg sync.WaitGroup
	counts := make([]int, len(subs))
	for i, c := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
			for {
				var m map[string]any
				if err := c.ReadJSON(&m); err != nil {
					return
				}
				if m["type"] == "message" {
					counts[i]++
				}
			}
		}()
	}
	wg.Wait()
	for i, n := range counts {
		if n != 1 {
			t.Errorf("subscriber %d got the broadcast %d times, want exactly once", i, n)
		}
	}
}

// Upgraded tunnels leave the upstream connection count (net/http hands the
// connection over), so max_conns_per_host limits requests, not how many
// WebSockets an instance can hold.
func TestWebSocketsDoNotCountAgainstUpstreamCap(t *testing.T) {
	b := wsEcho(t)
	_, base := newGateway(t, gateway.Config{
		Services:  []gateway.Service{{Name: "ws", Instances: []*balancer.Instance{inst(t, b.URL)}, Timeout: 2 * time.Second}},
		Routes:    []gateway.Route{{Prefix: "/stream", Service: "ws", WebSocket: true, Public: true}},
		Transport: gateway.TransportSettings{MaxConnsPerHost: 1},
	})
	var conns []*websocket.Conn
	for i := 0; i < 3; i++ {
		c, resp, err := websocket.DefaultDialer.Dial(wsURL(base, "/stream"), nil)
		if err != nil {
			t.Fatalf("tunnel %d with one upstream connection allowed: %v (%v)", i, err, resp)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for i, c := range conns {
		c.WriteMessage(websocket.TextMessage, []byte("hi"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, msg, err := c.ReadMessage(); err != nil || !strings.HasSuffix(string(msg), "hi") {
			t.Errorf("tunnel %d echo = %q, %v", i, msg, err)
		}
	}
	// Plain requests still get through the one connection.
	if res := get(t, base+"/stream"); res.status != 200 {
		t.Errorf("plain request: %d", res.status)
	}
}
