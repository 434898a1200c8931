package config_test

import (
	"fmt"

	"github.com/pyairtable/api-gateway/gateway/config"
)

// Parse reports every problem of a configuration at once, each with its
// file, line and key.
func ExampleParse() {
	_, err := config.Parse("gateway.yaml", []byte(`server:
  port: 80800
services:
  users:
    url: "htp//x"
routes:
  - prefix: /api/v1/users
    service: user
`), nil)
	fmt.Println(err)
	// Output:
	// gateway.yaml:2: server.port: 80800 is not a port (1-65535)
	// gateway.yaml:5: services.users.url: "htp//x" is not an absolute http(s) URL
	// gateway.yaml:8: routes[0].service: "user" is not a defined service
}

// The embedded default configuration serves the 14 platform services.
func ExampleDefault() {
	c, err := config.Parse("default.yaml", config.Default(), nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(c.Services), "services,", len(c.Routes), "routes, port", c.Server.Port)
	// Output: 14 services, 15 routes, port 8080
}
