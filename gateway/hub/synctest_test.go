package hub_test

// Timer-driven behaviour checked to the nanosecond: the hub runs in a
// testing/synctest bubble, reached over in-memory pipes (loopback sockets
// would keep the bubble from ever idling), so fake time advances only when
// every goroutine waits.

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyairtable/api-gateway/gateway/hub"
)

// pipeEnv serves a hub over a pipeListener until the bubble's test ends.
func pipeEnv(t *testing.T, s hub.Settings) (*hub.Hub, func(t *testing.T, token string) *websocket.Conn) {
	t.Helper()
	if s.Verify == nil {
		s.Verify = verify
	}
	h, err := hub.New(s)
	if err != nil {
		t.Fatal(err)
	}
	l := newPipeListener()
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() {
		h.Shutdown(context.Background())
		srv.Close()
	})
	d := &websocket.Dialer{NetDialContext: l.DialContext}
	dial := func(t *testing.T, token string) *websocket.Conn {
		t.Helper()
		c, _, err := d.Dial("ws://pipe/", nil)
		if err != nil {
			t.Fatalf("Dial() error = %v", err)
		}
		t.Cleanup(func() { c.Close() })
		if token != "" {
			send(t, c, map[string]string{"type": "auth", "token": token})
			if got := read(t, c); got.Type != "auth_ok" {
				t.Fatalf("reply to auth = %+v, want auth_ok", got)
			}
		}
		return c
	}
	return h, dial
}

func TestAuthTimeoutExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, dial := pipeEnv(t, hub.Settings{}) // AuthTimeout 10s
		c := dial(t, "")
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(time.Hour))
		_, _, err := c.ReadMessage()
		if !websocket.IsCloseError(err, hub.CloseAuthFailed) {
			t.Fatalf("read error = %v, want close %d", err, hub.CloseAuthFailed)
		}
		if got := time.Since(start); got != 10*time.Second {
			t.Errorf("closed after %v, want exactly 10s", got)
		}
	})
}

// TestPongTimeoutExact: pings go out every PingInterval; a client that
// reads them but never answers is cut off exactly 2×PingInterval after its
// last sign of life, while one that answers stays.
func TestPongTimeoutExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, dial := pipeEnv(t, hub.Settings{}) // PingInterval 30s
		live := dial(t, "tok-alice")
		mute := dial(t, "tok-bob")
		start := time.Now()
		mute.SetPingHandler(func(string) error { return nil }) // no pong
		pings := 0
		live.SetPingHandler(func(data string) error {
			pings++
			return live.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		muteErr := make(chan error, 1)
		for _, c := range []*websocket.Conn{live, mute} {
			c.SetReadDeadline(time.Time{})
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						if c == mute {
							muteErr <- err
						}
						return
					}
				}
			}()
		}
		time.Sleep(60*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := h.Stats().Connections; got != 2 {
			t.Fatalf("Stats().Connections = %d just before 2×PingInterval, want 2", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := h.Stats().Connections; got != 1 {
			t.Fatalf("Stats().Connections = %d at 2×PingInterval, want 1", got)
		}
		select {
		case <-muteErr:
		default:
			t.Error("mute client still connected")
		}
		if d := time.Since(start); d != 60*time.Second {
			t.Errorf("mute client cut off after %v, want 60s", d)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if got := h.Stats().Connections; got != 1 {
			t.Errorf("Stats().Connections = %d after 10 min, want the answering client to stay", got)
		}
		if pings != 22 {
			t.Errorf("answering client got %d pings in 11m, want 22 (one per 30s)", pings)
		}
	})
}

// TestShutdownWaitsForUnresponsiveClient: a client that never reads
// cannot take the close frame; Shutdown gives up on it after the 1s close
// wait, or earlier when its context ends.
func TestShutdownWaitsForUnresponsiveClient(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration // 0: none
		want    time.Duration
		wantErr error
	}{
		{"no deadline", 0, time.Second, nil},
		{"short deadline", 100 * time.Millisecond, 100 * time.Millisecond, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, dial := pipeEnv(t, hub.Settings{})
				dial(t, "tok-alice") // never reads again
				ctx := context.Background()
				if tt.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.timeout)
					defer cancel()
				}
				start := time.Now()
				err := h.Shutdown(ctx)
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Shutdown() = %v, want %v", err, tt.wantErr)
				}
				if got := time.Since(start); got != tt.want {
					t.Errorf("Shutdown() took %v, want exactly %v", got, tt.want)
				}
			})
		})
	}
}
