package transform

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// benchSpecs are the transforms measured. The acceptance bound is on
// three_headers_and_path minus none: at most 3 allocations.
var benchSpecs = []struct {
	name string
	spec Spec
}{
	{"none", Spec{}},
	{"three_headers_and_path", Spec{Request: RequestSpec{
		Headers: HeaderOps{
			Remove: []string{"Authorization"},
			Set: map[string]string{
				"X-Request-Id": "${request_id}",
				"X-Principal":  "sub=${subject}; tenant=${tenant}",
			},
		},
		Path: PathOps{Match: "/api/v1/users/{id}/avatar", Replace: "/avatars/{id}"},
	}}},
	{"everything", Spec{Request: RequestSpec{
		Headers: HeaderOps{
			Remove: []string{"Authorization", "X-Debug"},
			Rename: map[string]string{"X-Client-Trace": "X-Trace-Id"},
			Set: map[string]string{
				"X-Request-Id": "${request_id}",
				"X-Principal":  "sub=${subject}; tenant=${tenant}",
				"X-Client":     "${client_ip} ${header.User-Agent}",
				"X-Env":        "prod",
			},
			Add: map[string]string{"Via": "1.1 gw", "X-Route": "route=${route}"},
		},
		Path:  PathOps{StripPrefix: "/api", Match: "/v1/users/{id}/{rest...}", Replace: "/users/{id}/{rest...}", AddPrefix: "/svc"},
		Query: QueryOps{Remove: []string{"token"}, Set: map[string]string{"tenant": "${tenant}"}},
	}}},
}

func benchRequest() *http.Request {
	r := httptest.NewRequest("GET", "http://api.example.com/api/v1/users/42/avatar?size=large&token=abc", nil)
	r.Header.Set("Authorization", "Bearer x")
	r.Header.Set("User-Agent", "bench/1.0")
	r.Header.Set("X-Client-Trace", "t-1")
	r.Header.Set("Accept", "*/*")
	return r
}

// BenchmarkTransform clones the request each iteration, as a
// ReverseProxy does, then applies the transform: compare with none for
// the transform's own cost.
func BenchmarkTransform(b *testing.B) {
	for _, bs := range benchSpecs {
		b.Run(bs.name, func(b *testing.B) {
			tr := mustCompile(b, bs.spec)
			in := benchRequest()
			v := fixedVars{}
			b.ReportAllocs()
			for b.Loop() {
				out := in.Clone(in.Context())
				tr.ApplyRequest(out, in, v)
			}
		})
	}
}

func BenchmarkApplyResponse(b *testing.B) {
	tr := mustCompile(b, Spec{Response: ResponseSpec{Headers: HeaderOps{
		Remove: []string{"Server"},
		Set:    map[string]string{"X-Request-Id": "${request_id}", "Cache-Control": "no-store"},
	}}})
	in := benchRequest()
	v := fixedVars{}
	h := http.Header{"Content-Type": {"application/json"}, "Server": {"backend"}}
	b.ReportAllocs()
	for b.Loop() {
		h["Server"] = nil
		tr.ApplyResponse(h, in, v)
	}
}

// TestAllocs holds the allocation bounds the benchmarks show, so that a
// regression fails the ordinary test run.
func TestAllocs(t *testing.T) {
	in := benchRequest()
	v := fixedVars{}
	// cloned is what BenchmarkTransform does. roomy gives the copy's
	// header map room to grow, isolating the transform's own allocations
	// from the map growth any added header may cause.
	cloned := func() *http.Request { return in.Clone(in.Context()) }
	roomy := func() *http.Request {
		out := *in
		u := *in.URL
		out.URL = &u
		out.Header = make(http.Header, 64)
		for k, vs := range in.Header {
			out.Header[k] = vs
		}
		return &out
	}
	allocs := func(s Spec, copyReq func() *http.Request) float64 {
		tr := mustCompile(t, s)
		return testing.AllocsPerRun(200, func() {
			tr.ApplyRequest(copyReq(), in, v)
		})
	}
	tests := []struct {
		name string
		spec Spec
		copy func() *http.Request
		max  float64
	}{
		{"three_headers_and_path", benchSpecs[1].spec, cloned, 3},
		{"three_headers_and_path", benchSpecs[1].spec, roomy, 2},
		{"everything", benchSpecs[2].spec, roomy, 2},
		// Removing an absent query parameter and stripping a prefix need
		// no new string at all.
		{"strip_and_absent_remove", Spec{Request: RequestSpec{Path: PathOps{StripPrefix: "/api"}, Query: QueryOps{Remove: []string{"absent"}}}}, cloned, 0},
	}
	for _, tt := range tests {
		if d := allocs(tt.spec, tt.copy) - allocs(Spec{}, tt.copy); d > tt.max {
			t.Errorf("%s: ApplyRequest allocs/op = %v more than none, want <= %v", tt.name, d, tt.max)
		}
	}
	tr := mustCompile(t, Spec{Response: ResponseSpec{Headers: HeaderOps{Remove: []string{"Server"}, Set: map[string]string{"X-Request-Id": "${request_id}"}}}})
	h := http.Header{"Server": {"backend"}}
	if n := testing.AllocsPerRun(200, func() { tr.ApplyResponse(h, in, v) }); n > 1 {
		t.Errorf("ApplyResponse allocs/op = %v, want <= 1", n)
	}
}
