package redisbackplane_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/pyairtable/api-gateway/gateway/hub"
	"github.com/pyairtable/api-gateway/gateway/hub/redisbackplane"
)

// Every replica builds its hub on the same Redis and prefix, and runs
// Hub.Run for as long as it serves.
func ExampleNew() {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"}) // dials lazily
	defer rc.Close()
	bp := redisbackplane.New(rc, "apigw:")
	h, err := hub.New(hub.Settings{
		Backplane: bp,
		Verify: func(context.Context, string) (hub.Identity, error) {
			return hub.Identity{}, errors.New("verify JWTs here")
		},
	})
	if err != nil {
		panic(err)
	}
	_ = h // go h.Run(ctx); mux.Handle("/ws", h)
	fmt.Println(bp.Channel())
	// Output: apigw:broadcast
}
