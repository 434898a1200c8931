package main

import (
	"strings"
	"testing"

	gwconfig "github.com/pyairtable/api-gateway/gateway/config"
)

const roundA = `goos: linux
goarch: amd64
pkg: github.com/pyairtable/api-gateway/gateway
cpu: AMD EPYC
BenchmarkProxy/bare-2         	   82551	     30000 ns/op	   12983 B/op	      99 allocs/op
BenchmarkProxy/gateway-2      	   71203	     33000 ns/op	   14687 B/op	     106 allocs/op
BenchmarkProxy/gateway_full_chain-2       	   61112	     40000 ns/op	   16688 B/op	     121 allocs/op
PASS
`

// roundB is a slower round (a noisy neighbour): every target slower, the
// ratios within it still comparable.
const roundB = `BenchmarkProxy/bare-2 100 45000 ns/op 12983 B/op 99 allocs/op
BenchmarkProxy/gateway-2 100 50000 ns/op 14687 B/op 106 allocs/op
BenchmarkProxy/gateway_full_chain-2 100 50000 ns/op 16688 B/op 121 allocs/op
`

const roundC = `BenchmarkProxy/bare 100 20000 ns/op
BenchmarkProxy/gateway 100 25000 ns/op
BenchmarkProxy/gateway_full_chain 100 40000 ns/op
`

func TestParseRound(t *testing.T) {
	r, err := parseRound(roundA)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.names, ","); got != "bare,gateway,gateway_full_chain" {
		t.Fatalf("names %s", got)
	}
	if r.ns["gateway"] != 33000 || r.allocs["gateway_full_chain"] != 121 {
		t.Fatalf("parsed %v %v", r.ns, r.allocs)
	}
	if _, err := parseRound("PASS\n"); err == nil {
		t.Fatal("output without benchmarks accepted")
	}
}

func TestReportTakesRatiosWithinRounds(t *testing.T) {
	var rounds []benchRound
	for _, s := range []string{roundA, roundB, roundC} {
		r, err := parseRound(s)
		if err != nil {
			t.Fatal(err)
		}
		rounds = append(rounds, r)
	}
	var b strings.Builder
	if err := report(rounds, &b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// gateway: 30/33 = 0.909, 45/50 = 0.900, 20/25 = 0.800 -> median 0.900.
	// Pooling ns/op across rounds instead would give 30000/33000 = 0.909.
	for _, want := range []string{
		"bare                        30000      99    1.000 (1.00-1.00, 3 rounds)",
		"gateway                     33000     106    0.900 (0.80-0.91, 3 rounds)",
		"gateway_full_chain          40000     121    0.750 (0.50-0.90, 3 rounds)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if err := report(nil, &b); err == nil {
		t.Error("empty report accepted")
	}
}

// TestModesLoad checks that every mode's configuration is one the gateway
// accepts, and that the modes differ as documented.
func TestModesLoad(t *testing.T) {
	for _, mode := range []string{"bare", "observed", "off", "full"} {
		cfg, _, err := config(mode, "HS256", 19080, 0, t.TempDir())
		if err != nil {
			t.Fatal(mode, err)
		}
		c, err := gwconfig.Parse(mode+".yaml", []byte(cfg), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		limited := c.Security.RateLimit.Enabled
		if want := mode == "off" || mode == "full"; limited != want {
			t.Errorf("%s: rate limit enabled %v, want %v", mode, limited, want)
		}
		if metricsOn := c.Metrics.Enabled == nil || *c.Metrics.Enabled; metricsOn != (mode != "bare") {
			t.Errorf("%s: metrics %v", mode, metricsOn)
		}
	}
	if _, _, err := config("everything", "HS256", 19080, 0, t.TempDir()); err == nil {
		t.Error("unknown mode accepted")
	}
}
