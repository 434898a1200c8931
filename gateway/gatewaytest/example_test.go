package gatewaytest_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// A backend that fails every second request with 503, dies, and comes back
// on the same address. In a test, NewFaultBackend(t, ...) does the same and
// closes the backend when the test ends.
func ExampleStartFaultBackend() {
	b, err := gatewaytest.StartFaultBackend("users", gatewaytest.Fault{Status: 503, FailEvery: 2})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func() {
		resp, err := c.Get(b.URL() + "/api/v1/users")
		if err != nil {
			fmt.Println("refused:", gatewaytest.IsRefused(err))
			return
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode, resp.Header.Get("X-Backend"))
	}
	get()
	get()
	b.Kill()
	get()
	b.Revive()
	b.Set(gatewaytest.Fault{}) // healthy again
	get()
	fmt.Println("hits:", b.Hits())
	// Output:
	// 200 users
	// 503 users
	// refused: true
	// 200 users
	// hits: 3
}

// A hung backend is seen by the client as its own timeout.
func ExampleFault_hang() {
	b, err := gatewaytest.StartFaultBackend("reports", gatewaytest.Fault{Hang: true})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	c := &http.Client{Timeout: 50 * time.Millisecond}
	_, err = c.Get(b.URL())
	fmt.Println(err.(interface{ Timeout() bool }).Timeout())
	// Output: true
}
