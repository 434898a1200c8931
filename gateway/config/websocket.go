package config

import (
	"context"
	"net/http"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/hub"
	"github.com/pyairtable/api-gateway/gateway/hub/redisbackplane"
	"github.com/pyairtable/api-gateway/gateway/metrics"
)

// WebSocket configures proxied WebSocket routes and the built-in hub.
type WebSocket struct {
	IdleTimeout     Duration `yaml:"idle_timeout"`
	MaxConnsPerIP   int      `yaml:"max_conns_per_ip"`
	MaxConnsPerUser int      `yaml:"max_conns_per_user"`
	Hub             Hub      `yaml:"hub"`
}

// Hub configures the WebSocket hub at /ws.
type Hub struct {
	Enabled          bool     `yaml:"enabled"`
	Path             string   `yaml:"path"`
	BroadcastPath    string   `yaml:"broadcast_path"`
	BroadcastRoles   []string `yaml:"broadcast_roles"`
	AuthTimeout      Duration `yaml:"auth_timeout"`
	PingInterval     Duration `yaml:"ping_interval"`
	SendQueue        int      `yaml:"send_queue"`
	MaxSubscriptions int      `yaml:"max_subscriptions"`
	MaxConnsPerIP    int      `yaml:"max_conns_per_ip"`
	MaxConnsPerUser  int      `yaml:"max_conns_per_user"`
}

func (c *Config) validateWebSocket(v *validator) {
	h := c.WebSocket.Hub
	for _, f := range []struct{ key, p string }{{"websocket.hub.path", h.Path}, {"websocket.hub.broadcast_path", h.BroadcastPath}} {
		if f.p != "" && !strings.HasPrefix(f.p, "/") {
			v.add(f.key, "%q must start with /", f.p)
		}
	}
	if h.Enabled && !c.hasAuthenticator() {
		v.add("websocket.hub.enabled", "the hub authenticates clients with JWTs: configure auth.jwt_secret, public_keys or jwks_url")
	}
}

// NewHub builds the hub the configuration describes (nil when disabled).
// verify authenticates the token of a client's auth message — the binary
// passes the gateway's VerifyToken so that reloaded keys apply. With a
// Redis client, broadcasts reach the subscribers of every replica.
func (c *Config) NewHub(verify func(ctx context.Context, token string) (hub.Identity, error), origin func(*http.Request) bool, clientIP func(*http.Request) string, client redis.UniversalClient, onEvent func(hub.Event)) (*hub.Hub, error) {
	h := c.WebSocket.Hub
	if !h.Enabled {
		return nil, nil
	}
	s := hub.Settings{
		Verify: verify, CheckOrigin: origin, ClientIP: clientIP, OnEvent: onEvent,
		AuthTimeout: h.AuthTimeout.D(), PingInterval: h.PingInterval.D(), SendQueue: h.SendQueue,
		MaxSubscriptions: h.MaxSubscriptions, MaxConnsPerIP: h.MaxConnsPerIP, MaxConnsPerUser: h.MaxConnsPerUser,
	}
	if client != nil {
		s.Backplane = redisbackplane.New(client, "gw:hub:")
	}
	return hub.New(s)
}

func (c *Config) webSocketSettings(h *hub.Hub) gateway.WebSocketSettings {
	w := c.WebSocket
	return gateway.WebSocketSettings{
		IdleTimeout: w.IdleTimeout.D(), MaxConnsPerIP: w.MaxConnsPerIP, MaxConnsPerUser: w.MaxConnsPerUser,
		Hub: h, HubPath: w.Hub.Path, BroadcastPath: w.Hub.BroadcastPath, BroadcastRoles: w.Hub.BroadcastRoles,
	}
}

// HubMetrics turns hub events into the WebSocket metrics.
func HubMetrics(m *metrics.Metrics) func(hub.Event) {
	if m == nil {
		return nil
	}
	return func(ev hub.Event) {
		switch ev.Kind {
		case hub.EventConnected:
			m.WebSocket(metrics.WSConnect, 1)
		case hub.EventDisconnected:
			m.WebSocket(metrics.WSDisconnect, 1)
			m.WebSocket(metrics.WSSubscribe, -ev.Count)
		case hub.EventSubscribed:
			m.WebSocket(metrics.WSSubscribe, 1)
		case hub.EventUnsubscribed:
			m.WebSocket(metrics.WSSubscribe, -1)
		case hub.EventMessageIn:
			m.WebSocket(metrics.WSMessageIn, 1)
		case hub.EventBroadcast:
			m.WebSocket(metrics.WSMessageOut, ev.Count)
		case hub.EventDropped:
			m.WebSocket(metrics.WSDrop, 1)
		}
	}
}
