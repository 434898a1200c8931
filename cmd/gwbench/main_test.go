package main

import (
	"slices"
	"testing"
)

// The summary keeps the harness's one-line result of each run, in order,
// and nothing else of its output.
func TestSummaries(t *testing.T) {
	out := `target     conns  rps(med)
minproxy      64     31895
API-GATEWAY-BARE: c=64 34803 rps (x0.74 nginx, x1.09 minproxy) p99=5.18ms
# raw results: /tmp/gwbench.x/results
  r2 api-gateway-off c=512 rps=1
API-GATEWAY-OFF: c=64 28010 rps (x0.69 nginx, x0.98 minproxy) p99=6.13ms
`
	want := []string{
		"API-GATEWAY-BARE: c=64 34803 rps (x0.74 nginx, x1.09 minproxy) p99=5.18ms",
		"API-GATEWAY-OFF: c=64 28010 rps (x0.69 nginx, x0.98 minproxy) p99=6.13ms",
	}
	if got := summaries(out); !slices.Equal(got, want) {
		t.Errorf("summaries = %q, want %q", got, want)
	}
}
