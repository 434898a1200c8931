package config_test

import (
	"errors"
	"regexp"
	"testing"

	"github.com/pyairtable/api-gateway/gateway/config"
)

var problemLine = regexp.MustCompile(`^(fuzz\.yaml(:\d+)?|environment): `)

// FuzzConfigParse checks that any input either loads or fails with
// problems that each name the file (and line) — never a panic, never an
// unlocated error.
func FuzzConfigParse(f *testing.F) {
	f.Add(string(config.Default()))
	f.Add("server:\n  port: abc\n")
	f.Add("routes:\n  - prefix: /x\n    service: y\n")
	f.Add("services:\n  a:\n    url: http://127.0.0.1:1\nroutes:\n  - prefix: /a\n    service: a\n    public: true\n")
	f.Add("{")
	f.Add("services: &a {x: *a}")
	f.Fuzz(func(t *testing.T, data string) {
		_, err := config.Parse("fuzz.yaml", []byte(data), nil)
		if err == nil {
			return
		}
		var ce *config.Error
		if !errors.As(err, &ce) {
			return // a gateway build error after a valid parse
		}
		for _, p := range ce.Problems {
			if !problemLine.MatchString(p.String()) {
				t.Fatalf("problem without a location: %q", p.String())
			}
		}
	})
}
