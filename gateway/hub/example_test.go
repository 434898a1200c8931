package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/pyairtable/api-gateway/gateway/hub"
)

func ExampleDefaultAuthorize() {
	alice := hub.Identity{Subject: "alice", Roles: []string{"editor"}, Tenant: "acme"}
	for _, channel := range []string{
		"public:status",
		"user:alice",
		"user:bob",
		"tenant:acme:orders",
		"tenant:globex:orders",
		"role:editor:drafts",
		"role:admin:audit",
		"anything-else",
	} {
		fmt.Printf("%-22s %v\n", channel, hub.DefaultAuthorize(alice, channel))
	}
	// Output:
	// public:status          true
	// user:alice             true
	// user:bob               false
	// tenant:acme:orders     true
	// tenant:globex:orders   false
	// role:editor:drafts     true
	// role:admin:audit       false
	// anything-else          false
}

// A service publishes an event; a WebSocket client subscribed to the
// channel receives it.
func Example() {
	h, err := hub.New(hub.Settings{
		Verify: func(_ context.Context, token string) (hub.Identity, error) {
			if token != "good-token" { // a real gateway verifies a JWT here
				return hub.Identity{}, errors.New("invalid token")
			}
			return hub.Identity{Subject: "alice", Tenant: "acme"}, nil
		},
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Shutdown(context.Background())

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	c.WriteJSON(map[string]string{"type": "auth", "token": "good-token"})
	c.WriteJSON(map[string]string{"type": "subscribe", "channel": "tenant:acme:orders"})
	c.WriteJSON(map[string]string{"type": "subscribe", "channel": "tenant:globex:orders"})
	for range 3 {
		_, msg, _ := c.ReadMessage()
		fmt.Println(string(msg))
	}

	h.Publish(context.Background(), "tenant:acme:orders", json.RawMessage(`{"id":42}`))
	_, msg, _ := c.ReadMessage()
	fmt.Println(string(msg))
	// Output:
	// {"type":"auth_ok","subject":"alice"}
	// {"type":"subscribed","channel":"tenant:acme:orders"}
	// {"type":"error","code":"forbidden","message":"not allowed to subscribe","channel":"tenant:globex:orders"}
	// {"type":"message","channel":"tenant:acme:orders","data":{"id":42}}
}

// Services broadcast over HTTP through BroadcastHandler, which the gateway
// mounts behind its API-key check.
func ExampleHub_BroadcastHandler() {
	h, _ := hub.New(hub.Settings{Verify: func(context.Context, string) (hub.Identity, error) {
		return hub.Identity{}, errors.New("no clients in this example")
	}})
	defer h.Shutdown(context.Background())
	handler := h.BroadcastHandler(func(r *http.Request) bool {
		return r.Header.Get("X-API-Key") == "secret" // use a constant-time compare
	})

	for _, key := range []string{"secret", "wrong"} {
		r := httptest.NewRequest(http.MethodPost, "/broadcast",
			strings.NewReader(`{"channel":"public:status","data":{"up":true}}`))
		r.Header.Set("X-API-Key", key)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if w.Code >= 400 {
			fmt.Println(w.Code, w.Header().Get("Content-Type"))
		} else {
			fmt.Println(w.Code)
		}
	}
	// Output:
	// 202
	// 401 application/problem+json
}
