package redisstore_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/pyairtable/api-gateway/ratelimit"
	"github.com/pyairtable/api-gateway/ratelimit/redisstore"
)

// Every gateway replica builds the same limiter on a shared Redis; together
// they allow 100 requests per minute per API key. The example has no output
// because it needs a Redis server.
func Example() {
	client, err := redisstore.NewClient("redis://127.0.0.1:6379/0")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	limiter, err := redisstore.NewSlidingWindow(client, redisstore.Settings{
		Settings:    ratelimit.Settings{Limit: 100, Window: time.Minute},
		Prefix:      "gw:rl:",
		FailureMode: redisstore.FailOpen,
		OnError:     func(err error) { log.Printf("rate limit store: %v", err) },
	})
	if err != nil {
		log.Fatal(err)
	}

	var l ratelimit.Limiter = limiter // what the gateway consumes
	d, err := l.Allow(context.Background(), "api-key-42", 1)
	if err != nil {
		// Redis is down: d is the fail-open decision.
		log.Printf("deciding without Redis: %v", err)
	}
	fmt.Println(d.Allowed, d.Remaining)
}
