package gateway_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"testing"

	"github.com/pyairtable/api-gateway/gateway"
)

type slogLogger = slog.Logger

var discardLogger = slog.New(slog.DiscardHandler)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// serveGateway runs g.Serve on a loopback listener until the test ends.
func serveGateway(t *testing.T, g *gateway.Gateway) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Serve(ctx, ln) }()
	t.Cleanup(func() { stop(); <-done })
	return "http://" + ln.Addr().String()
}
