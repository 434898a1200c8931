package transform

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode"
)

func TestRequestHeaders(t *testing.T) {
	tests := []struct {
		name string
		ops  HeaderOps
		in   http.Header
		want http.Header
	}{
		{
			name: "remove",
			ops:  HeaderOps{Remove: []string{"x-debug", "X-Absent"}},
			in:   http.Header{"X-Debug": {"1", "2"}, "Accept": {"*/*"}},
			want: http.Header{"Accept": {"*/*"}},
		},
		{
			name: "rename moves every value",
			ops:  HeaderOps{Rename: map[string]string{"X-Old": "x-new"}},
			in:   http.Header{"X-Old": {"a", "b"}},
			want: http.Header{"X-New": {"a", "b"}},
		},
		{
			name: "rename replaces the target",
			ops:  HeaderOps{Rename: map[string]string{"X-Old": "X-New"}},
			in:   http.Header{"X-Old": {"a"}, "X-New": {"spoof"}},
			want: http.Header{"X-New": {"a"}},
		},
		{
			name: "rename of an absent header leaves the target",
			ops:  HeaderOps{Rename: map[string]string{"X-Old": "X-New"}},
			in:   http.Header{"X-New": {"kept"}},
			want: http.Header{"X-New": {"kept"}},
		},
		{
			name: "set replaces and creates",
			ops:  HeaderOps{Set: map[string]string{"x-env": "prod", "X-Team": "core"}},
			in:   http.Header{"X-Env": {"dev", "test"}},
			want: http.Header{"X-Env": {"prod"}, "X-Team": {"core"}},
		},
		{
			name: "add appends and creates",
			ops:  HeaderOps{Add: map[string]string{"Via": "gw", "X-New": "1"}},
			in:   http.Header{"Via": {"1.1 edge"}},
			want: http.Header{"Via": {"1.1 edge", "gw"}, "X-New": {"1"}},
		},
		{
			name: "order remove rename set add",
			ops: HeaderOps{
				Remove: []string{"X-A"},
				Rename: map[string]string{"X-B": "X-A"},
				Set:    map[string]string{"X-C": "set"},
				Add:    map[string]string{"X-C": "added", "X-A": "more"},
			},
			in:   http.Header{"X-A": {"client"}, "X-B": {"b"}, "X-C": {"client"}},
			want: http.Header{"X-A": {"b", "more"}, "X-C": {"set", "added"}},
		},
		{
			name: "nil header map",
			ops:  HeaderOps{Set: map[string]string{"X-A": "1"}, Remove: []string{"X-B"}},
			in:   nil,
			want: http.Header{"X-A": {"1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := mustCompile(t, Spec{Request: RequestSpec{Headers: tt.ops}})
			in := httptest.NewRequest("GET", "/", nil)
			in.Header = tt.in
			out := in.Clone(in.Context())
			tr.ApplyRequest(out, in, nil)
			if !reflect.DeepEqual(out.Header, tt.want) {
				t.Errorf("ApplyRequest() headers = %v, want %v", out.Header, tt.want)
			}
		})
	}
}

func TestResponseHeaders(t *testing.T) {
	tr := mustCompile(t, Spec{Response: ResponseSpec{Headers: HeaderOps{
		Remove: []string{"Server", "X-Powered-By"},
		Rename: map[string]string{"X-Internal-Id": "X-Upstream-Id"},
		Set:    map[string]string{"X-Request-Id": "${request_id}", "Cache-Control": "no-store"},
		Add:    map[string]string{"Vary": "X-Tenant"},
	}}})
	h := http.Header{
		"Server":        {"nginx"},
		"X-Powered-By":  {"php"},
		"X-Internal-Id": {"42"},
		"Cache-Control": {"public"},
		"Vary":          {"Accept"},
		"Content-Type":  {"text/plain"},
	}
	tr.ApplyResponse(h, httptest.NewRequest("GET", "/", nil), newVars())
	want := http.Header{
		"X-Upstream-Id": {"42"},
		"X-Request-Id":  {"req-1"},
		"Cache-Control": {"no-store"},
		"Vary":          {"Accept", "X-Tenant"},
		"Content-Type":  {"text/plain"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("ApplyResponse() headers = %v, want %v", h, want)
	}
	// Request transforms do not touch responses and vice versa.
	in := httptest.NewRequest("GET", "/", nil)
	in.Header.Set("Server", "client")
	out := in.Clone(in.Context())
	tr.ApplyRequest(out, in, newVars())
	if got := out.Header.Get("Server"); got != "client" {
		t.Errorf("ApplyRequest() by a response-only transform: Server = %q, want %q", got, "client")
	}
	tr.ApplyResponse(nil, in, nil) // must not panic
}

func TestVariables(t *testing.T) {
	tests := []struct {
		tmpl string
		want string
	}{
		{"${request_id}", "req-1"},
		{"${client_ip}", "203.0.113.7"},
		{"${subject}", "alice"},
		{"${tenant}", "acme"},
		{"${route}", "users"},
		{"${method}", "PATCH"},
		{"${host}", "api.example.com"},
		{"${path}", "/users/a b"},
		{"${header.x-trace}", "t-9"},
		{"${header.X-Trace}", "t-9"},
		{"id=${request_id}; by ${subject}@${tenant}", "id=req-1; by alice@acme"},
		{"cost: $5 {not a var} $", "cost: $5 {not a var} $"},
		{"${subject}${subject}", "alicealice"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			tr := mustCompile(t, Spec{
				Request:  RequestSpec{Headers: HeaderOps{Set: map[string]string{"X-Out": tt.tmpl}}},
				Response: ResponseSpec{Headers: HeaderOps{Set: map[string]string{"X-Out": tt.tmpl}}},
			})
			in := httptest.NewRequest("PATCH", "http://api.example.com/users/a%20b", nil)
			in.Header.Set("X-Trace", "t-9")
			in.Header.Add("X-Trace", "second")
			v := newVars()
			out := in.Clone(in.Context())
			tr.ApplyRequest(out, in, v)
			if got := out.Header.Values("X-Out"); len(got) != 1 || got[0] != tt.want {
				t.Errorf("ApplyRequest() X-Out = %q, want [%q]", got, tt.want)
			}
			for name, n := range v.calls {
				if n != 1 {
					t.Errorf("Vars.%s called %d times, want 1", name, n)
				}
			}
			h := http.Header{}
			tr.ApplyResponse(h, in, v)
			if got := h.Get("X-Out"); got != tt.want {
				t.Errorf("ApplyResponse() X-Out = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNilVars(t *testing.T) {
	tr := mustCompile(t, Spec{Request: RequestSpec{Headers: HeaderOps{Set: map[string]string{
		"X-Subject": "${subject}",
		"X-Method":  "${method}",
	}}}})
	in := httptest.NewRequest("GET", "/", nil)
	in.Header.Set("X-Subject", "spoofed")
	out := in.Clone(in.Context())
	tr.ApplyRequest(out, in, nil)
	want := http.Header{"X-Method": {"GET"}}
	if !reflect.DeepEqual(out.Header, want) {
		t.Errorf("ApplyRequest(nil Vars) headers = %v, want %v", out.Header, want)
	}
}

// A value that cannot be emitted safely is dropped: set deletes the header
// (so the client's own value does not survive), add adds nothing.
func TestUnsafeValuesDropped(t *testing.T) {
	evil := []struct{ name, value string }{
		{"CRLF", "x\r\nX-Injected: 1"},
		{"LF", "x\nX-Injected: 1"},
		{"CR", "x\rX"},
		{"NUL", "x\x00y"},
		{"DEL", "x\x7fy"},
		{"empty", ""},
	}
	for _, e := range evil {
		t.Run(e.name, func(t *testing.T) {
			tr := mustCompile(t, Spec{
				Request: RequestSpec{
					Headers: HeaderOps{
						Set: map[string]string{"X-Copy": "${header.X-Evil}", "X-Mixed": "pre-${header.X-Evil}-post", "X-Ok": "ok"},
						Add: map[string]string{"X-Added": "${header.X-Evil}", "X-New": "v=${header.X-Evil}"},
					},
					Query: QueryOps{Set: map[string]string{"copy": "${header.X-Evil}"}},
				},
				Response: ResponseSpec{Headers: HeaderOps{Set: map[string]string{"X-Copy": "${header.X-Evil}"}}},
			})
			in := httptest.NewRequest("GET", "/?copy=spoof&a=1", nil)
			in.Header["X-Evil"] = []string{e.value}
			in.Header.Set("X-Copy", "spoof")
			in.Header.Set("X-Mixed", "spoof")
			in.Header.Set("X-Added", "client")
			out := in.Clone(in.Context())
			tr.ApplyRequest(out, in, nil)
			want := http.Header{
				"X-Evil":  {e.value},
				"X-Ok":    {"ok"},
				"X-Added": {"client"},
			}
			if e.name == "empty" {
				// An empty value is harmless, so the mixed ones stay.
				want["X-Mixed"] = []string{"pre--post"}
				want["X-New"] = []string{"v="}
			}
			if !reflect.DeepEqual(out.Header, want) {
				t.Errorf("ApplyRequest() headers = %q, want %q", out.Header, want)
			}
			if got := out.URL.RawQuery; got != "a=1" {
				t.Errorf("ApplyRequest() RawQuery = %q, want %q", got, "a=1")
			}
			h := http.Header{"X-Copy": {"backend"}}
			tr.ApplyResponse(h, in, nil)
			if len(h) != 0 {
				t.Errorf("ApplyResponse() headers = %q, want none", h)
			}
		})
	}
	t.Run("tab is allowed", func(t *testing.T) {
		tr := mustCompile(t, Spec{Request: RequestSpec{Headers: HeaderOps{Set: map[string]string{"X-Copy": "${header.X-Evil}"}}}})
		in := httptest.NewRequest("GET", "/", nil)
		in.Header.Set("X-Evil", "a\tb")
		out := in.Clone(in.Context())
		tr.ApplyRequest(out, in, nil)
		if got := out.Header.Get("X-Copy"); got != "a\tb" {
			t.Errorf("X-Copy = %q, want %q", got, "a\tb")
		}
	})
}

// ${path} is decoded, so an encoded CR LF in the URL must not reach a
// header.
func TestPathVariableInjection(t *testing.T) {
	tr := mustCompile(t, Spec{Request: RequestSpec{Headers: HeaderOps{Set: map[string]string{"X-Path": "${path}"}}}})
	in := httptest.NewRequest("GET", "/a%0D%0AX-Injected:%201", nil)
	out := in.Clone(in.Context())
	tr.ApplyRequest(out, in, nil)
	if vs, ok := out.Header["X-Path"]; ok {
		t.Errorf("X-Path = %q, want absent", vs)
	}
}

// Variables are read before anything changes, so applying to the incoming
// request itself reads the client's headers.
func TestApplyInPlace(t *testing.T) {
	tr := mustCompile(t, Spec{Request: RequestSpec{
		Headers: HeaderOps{
			Remove: []string{"X-Token"},
			Set:    map[string]string{"X-Had-Token": "${header.X-Token}", "X-Path": "${path}"},
		},
		Path: PathOps{StripPrefix: "/api"},
	}})
	r := httptest.NewRequest("GET", "/api/x", nil)
	r.Header.Set("X-Token", "abc")
	tr.ApplyRequest(r, r, nil)
	want := http.Header{"X-Had-Token": {"abc"}, "X-Path": {"/api/x"}}
	if !reflect.DeepEqual(r.Header, want) {
		t.Errorf("ApplyRequest(r, r) headers = %v, want %v", r.Header, want)
	}
	if r.URL.Path != "/x" {
		t.Errorf("ApplyRequest(r, r) path = %q, want %q", r.URL.Path, "/x")
	}
}

// The value slices handed out share one array; appending to one must not
// overwrite another.
func TestSetSlicesIndependent(t *testing.T) {
	tr := mustCompile(t, Spec{Request: RequestSpec{Headers: HeaderOps{Set: map[string]string{"X-A": "a", "X-B": "b", "X-C": "c"}}}})
	in := httptest.NewRequest("GET", "/", nil)
	out := in.Clone(in.Context())
	tr.ApplyRequest(out, in, nil)
	out.Header.Add("X-A", "a2")
	out.Header.Add("X-B", "b2")
	want := http.Header{"X-A": {"a", "a2"}, "X-B": {"b", "b2"}, "X-C": {"c"}}
	if !reflect.DeepEqual(out.Header, want) {
		t.Errorf("headers after Add = %v, want %v", out.Header, want)
	}
}

func TestEmpty(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want bool
	}{
		{"zero", Spec{}, true},
		{"empty maps", Spec{Request: RequestSpec{Headers: HeaderOps{Set: map[string]string{}}, Query: QueryOps{Remove: []string{}}}}, true},
		{"request header", Spec{Request: RequestSpec{Headers: HeaderOps{Remove: []string{"X"}}}}, false},
		{"path", Spec{Request: RequestSpec{Path: PathOps{AddPrefix: "/v2"}}}, false},
		{"query", Spec{Request: RequestSpec{Query: QueryOps{Remove: []string{"q"}}}}, false},
		{"response header", Spec{Response: ResponseSpec{Headers: HeaderOps{Add: map[string]string{"X": "1"}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustCompile(t, tt.spec).Empty(); got != tt.want {
				t.Errorf("Empty() = %v, want %v", got, tt.want)
			}
		})
	}
	// An empty transform leaves a request exactly as it was.
	in := httptest.NewRequest("GET", "/a%2Fb?x=1&&y", nil)
	in.Header.Set("X-A", "1")
	out := in.Clone(in.Context())
	mustCompile(t, Spec{}).ApplyRequest(out, in, nil)
	if out.URL.String() != in.URL.String() || !maps.EqualFunc(out.Header, in.Header, func(a, b []string) bool { return reflect.DeepEqual(a, b) }) {
		t.Errorf("ApplyRequest(empty) changed the request: %v %v", out.URL, out.Header)
	}
}

func TestNilTransform(t *testing.T) {
	var tr *Transform
	if !tr.Empty() {
		t.Errorf("nil Empty() = false, want true")
	}
	in := httptest.NewRequest("GET", "/a?b=c", nil)
	in.Header.Set("X-A", "1")
	tr.ApplyRequest(in, in, nil)
	tr.ApplyResponse(http.Header{}, in, nil)
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	if got := tr.Middleware(nil)(h); reflect.ValueOf(got).Pointer() != reflect.ValueOf(h).Pointer() {
		t.Errorf("nil Middleware(nil)(h) wraps h, want h itself")
	}
	if in.URL.String() != "/a?b=c" || in.Header.Get("X-A") != "1" {
		t.Errorf("nil transform changed the request: %v %v", in.URL, in.Header)
	}
}

// One Transform serves many requests at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	tr := mustCompile(t, Spec{
		Request: RequestSpec{
			Headers: HeaderOps{Set: map[string]string{"X-Who": "${subject}:${header.X-N}"}},
			Path:    PathOps{Match: "/u/{id}", Replace: "/users/{id}"},
			Query:   QueryOps{Set: map[string]string{"n": "${header.X-N}"}},
		},
		Response: ResponseSpec{Headers: HeaderOps{Set: map[string]string{"X-N": "${header.X-N}"}}},
	})
	const workers, each = 4, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				n := strconv.Itoa(w*each + i)
				in := httptest.NewRequest("GET", "/u/"+n, nil)
				in.Header.Set("X-N", n)
				out := in.Clone(in.Context())
				tr.ApplyRequest(out, in, fixedVars{})
				h := http.Header{}
				tr.ApplyResponse(h, in, fixedVars{})
				if out.URL.Path != "/users/"+n || out.URL.RawQuery != "n="+n || out.Header.Get("X-Who") != "bob:"+n || h.Get("X-N") != n {
					errs <- fmt.Errorf("request %s: got %s?%s X-Who=%q X-N=%q", n, out.URL.Path, out.URL.RawQuery, out.Header.Get("X-Who"), h.Get("X-N"))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Spec maps one to one onto YAML: every field has a snake_case yaml tag.
func TestYAMLTags(t *testing.T) {
	var walk func(typ reflect.Type)
	walk = func(typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			var want strings.Builder
			for j, r := range f.Name {
				if unicode.IsUpper(r) && j > 0 {
					want.WriteByte('_')
				}
				want.WriteRune(unicode.ToLower(r))
			}
			if got := f.Tag.Get("yaml"); got != want.String() {
				t.Errorf("%s.%s yaml tag = %q, want %q", typ.Name(), f.Name, got, want.String())
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeFor[Spec]())
}
