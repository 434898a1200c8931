package redistest_test

import (
	"testing"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
)

// A test starts its own server, points a client at URL, and may stop and
// restart it to simulate an outage. The server is stopped when the test
// ends. This example has no output because it needs redis-server.
func Example() {
	_ = func(t *testing.T) {
		srv := redistest.Start(t)
		_ = srv.URL // e.g. redis.ParseURL(srv.URL)
		srv.Stop()  // Redis is down: exercise the failure path
		srv.Restart()
	}
}
