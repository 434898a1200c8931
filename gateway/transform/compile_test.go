package transform

import (
	"reflect"
	"strings"
	"testing"
)

func TestCompileProblems(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		key  string
		msg  string // substring of the message
	}{
		{"unknown variable", reqSet("X-A", "${user}"), "request.headers.set.X-A", "unknown variable ${user}"},
		{"unterminated variable", reqSet("X-A", "a ${subject"), "request.headers.set.X-A", "unterminated"},
		{"empty variable", reqSet("X-A", "${}"), "request.headers.set.X-A", "unknown variable ${}"},
		{"bad header variable", reqSet("X-A", "${header.X A}"), "request.headers.set.X-A", "not a valid header name"},
		{"empty header variable", reqSet("X-A", "${header.}"), "request.headers.set.X-A", "not a valid header name"},
		{"invalid header name", reqSet("X A", "1"), "request.headers.set.X A", "not a valid header name"},
		{"empty header name", reqSet("", "1"), "request.headers.set.", "not a valid header name"},
		{"reserved header", reqSet("host", "evil"), "request.headers.set.host", "Host is managed"},
		{"reserved content-length", Spec{Response: ResponseSpec{Headers: HeaderOps{Remove: []string{"content-length"}}}}, "response.headers.remove[0]", "Content-Length is managed"},
		{"CR in literal", reqSet("X-A", "a\r\nX-B: c"), "request.headers.set.X-A", "control character"},
		{"empty value", reqSet("X-A", ""), "request.headers.set.X-A", "empty value"},
		{"duplicate set", Spec{Request: RequestSpec{Headers: HeaderOps{Set: map[string]string{"X-A": "1", "x-a": "2"}}}}, "request.headers.set.x-a", `duplicate of "X-A"`},
		{"duplicate remove", Spec{Request: RequestSpec{Headers: HeaderOps{Remove: []string{"X-A", "x-a"}}}}, "request.headers.remove[1]", `duplicate of "X-A"`},
		{"rename to itself", reqRename("X-A", "x-a"), "request.headers.rename.X-A", "to itself"},
		{"rename bad target", reqRename("X-A", "X B"), "request.headers.rename.X-A", `"X B" is not a valid header name`},
		{"rename removed", Spec{Request: RequestSpec{Headers: HeaderOps{Remove: []string{"X-A"}, Rename: map[string]string{"X-A": "X-B"}}}}, "request.headers.rename.X-A", "also in remove"},
		{"rename same target", Spec{Request: RequestSpec{Headers: HeaderOps{Rename: map[string]string{"X-A": "X-C", "X-B": "X-C"}}}}, "request.headers.rename.X-B", "already the target"},
		{"rename chain", Spec{Request: RequestSpec{Headers: HeaderOps{Rename: map[string]string{"X-A": "X-B", "X-B": "X-C"}}}}, "request.headers.rename.X-A", "chains are ambiguous"},
		{"match without replace", reqPath(PathOps{Match: "/a/{id}"}), "request.path.match", "needs a replace"},
		{"replace without match", reqPath(PathOps{Replace: "/a"}), "request.path.replace", "needs a match"},
		{"match without slash", reqPath(PathOps{Match: "a/{id}", Replace: "/b"}), "request.path.match", "must start with /"},
		{"replace without slash", reqPath(PathOps{Match: "/a", Replace: "b"}), "request.path.replace", "must start with /"},
		{"unknown segment in replace", reqPath(PathOps{Match: "/a/{id}", Replace: "/b/{name}"}), "request.path.replace", "{name} is not a placeholder in match"},
		{"duplicate segment name", reqPath(PathOps{Match: "/a/{id}/{id}", Replace: "/b/{id}"}), "request.path.match", "{id} appears twice"},
		{"rest not last", reqPath(PathOps{Match: "/a/{rest...}/b", Replace: "/b"}), "request.path.match", "must be the last segment"},
		{"rest kind mismatch", reqPath(PathOps{Match: "/a/{rest...}", Replace: "/b/{rest}"}), "request.path.replace", "write {rest...}"},
		{"single kind mismatch", reqPath(PathOps{Match: "/a/{id}", Replace: "/b/{id...}"}), "request.path.replace", "write {id}"},
		{"bad segment name", reqPath(PathOps{Match: "/a/{1x}", Replace: "/b"}), "request.path.match", "placeholder name"},
		{"partial placeholder", reqPath(PathOps{Match: "/a/{id}", Replace: "/b/{id}.png"}), "request.path.replace", "whole segment"},
		{"empty segment", reqPath(PathOps{Match: "/a//b", Replace: "/b"}), "request.path.match", "empty segment"},
		{"dot segment", reqPath(PathOps{Match: "/a", Replace: "/b/../c"}), "request.path.replace", "dot segment"},
		{"escape in path", reqPath(PathOps{Match: "/a%20b", Replace: "/b"}), "request.path.match", "decoded"},
		{"query in path", reqPath(PathOps{Match: "/a", Replace: "/b?x=1"}), "request.path.replace", "decoded"},
		{"control in path", reqPath(PathOps{Match: "/a\nb", Replace: "/b"}), "request.path.match", "control character"},
		{"strip without slash", reqPath(PathOps{StripPrefix: "api"}), "request.path.strip_prefix", "must start with /"},
		{"strip root", reqPath(PathOps{StripPrefix: "/"}), "request.path.strip_prefix", "no effect"},
		{"add root", reqPath(PathOps{AddPrefix: "/"}), "request.path.add_prefix", "no effect"},
		{"placeholder in prefix", reqPath(PathOps{AddPrefix: "/t/{tenant}"}), "request.path.add_prefix", "only supported in match and replace"},
		{"variable in prefix", reqPath(PathOps{AddPrefix: "/t/${tenant}"}), "request.path.add_prefix", "only supported in match and replace"},
		{"query set and remove", Spec{Request: RequestSpec{Query: QueryOps{Set: map[string]string{"a": "1"}, Remove: []string{"a"}}}}, "request.query.set.a", "also in remove"},
		{"query empty name", Spec{Request: RequestSpec{Query: QueryOps{Remove: []string{""}}}}, "request.query.remove[0]", "empty parameter name"},
		{"query duplicate remove", Spec{Request: RequestSpec{Query: QueryOps{Remove: []string{"a", "a"}}}}, "request.query.remove[1]", "duplicate"},
		{"query unknown variable", Spec{Request: RequestSpec{Query: QueryOps{Set: map[string]string{"a": "${nope}"}}}}, "request.query.set.a", "unknown variable"},
		{"response unknown variable", Spec{Response: ResponseSpec{Headers: HeaderOps{Add: map[string]string{"X-A": "${status}"}}}}, "response.headers.add.X-A", "unknown variable ${status}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, probs := Compile(tt.spec)
			if tr != nil {
				t.Errorf("Compile() = %v, want nil with problems", tr)
			}
			if len(probs) != 1 {
				t.Fatalf("Compile() problems = %v, want exactly one", probs)
			}
			if probs[0].Key != tt.key || !strings.Contains(probs[0].Msg, tt.msg) {
				t.Errorf("Compile() problem = %q: %q, want %q: ...%q...", probs[0].Key, probs[0].Msg, tt.key, tt.msg)
			}
		})
	}
}

// Every problem is reported in one go, in a stable order.
func TestCompileReportsAll(t *testing.T) {
	spec := Spec{
		Request: RequestSpec{
			Headers: HeaderOps{
				Set:    map[string]string{"X-B": "${nope}", "X-A": "${also_nope}", "Bad Name": "1", "X-Ok": "${subject}"},
				Add:    map[string]string{"Host": "x"},
				Remove: []string{"X-Fine", "bad\n"},
			},
			Path:  PathOps{Match: "/users/{id}", Replace: "/u/{uid}", StripPrefix: "nope"},
			Query: QueryOps{Set: map[string]string{"q": "${x}"}},
		},
		Response: ResponseSpec{Headers: HeaderOps{Rename: map[string]string{"X-A": "X-A"}}},
	}
	want := []string{
		"request.headers.remove[1]",
		"request.headers.set.Bad Name",
		"request.headers.set.X-A",
		"request.headers.set.X-B",
		"request.headers.add.Host",
		"request.path.strip_prefix",
		"request.path.replace",
		"request.query.set.q",
		"response.headers.rename.X-A",
	}
	for range 3 { // map order must not matter
		_, probs := Compile(spec)
		var got []string
		for _, p := range probs {
			got = append(got, p.Key)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Compile() problem keys = %q, want %q", got, want)
		}
	}
}

func TestCompileLimits(t *testing.T) {
	set := map[string]string{}
	for i := range maxHeaderVars + 1 {
		set["X-V"+string(rune('a'+i))] = "${header.X-" + string(rune('a'+i)) + "}"
	}
	_, probs := Compile(Spec{Request: RequestSpec{Headers: HeaderOps{Set: set}}})
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "distinct header variables") {
		t.Errorf("Compile(%d header variables) problems = %v, want one about the limit", len(set), probs)
	}
	// Request and response share the header variables.
	tr := mustCompile(t, Spec{
		Request:  RequestSpec{Headers: HeaderOps{Set: map[string]string{"X-A": "${header.X-Id}"}}},
		Response: ResponseSpec{Headers: HeaderOps{Set: map[string]string{"X-A": "${header.x-id}", "X-B": "${header.X-Other}"}}},
	})
	if want := []string{"X-Id", "X-Other"}; !reflect.DeepEqual(tr.headerVars, want) {
		t.Errorf("headerVars = %q, want %q", tr.headerVars, want)
	}
	var m strings.Builder
	for i := range maxCaptures + 1 {
		m.WriteString("/{p" + string(rune('a'+i)) + "}")
	}
	_, probs = Compile(reqPath(PathOps{Match: m.String(), Replace: "/x"}))
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "placeholders") {
		t.Errorf("Compile(%d placeholders) problems = %v, want one about the limit", maxCaptures+1, probs)
	}
}

func TestProblemError(t *testing.T) {
	p := Problem{Key: "request.headers.set.X-A", Msg: "unknown variable ${x}"}
	if got, want := p.Error(), "transform: request.headers.set.X-A: unknown variable ${x}"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func reqSet(name, value string) Spec {
	return Spec{Request: RequestSpec{Headers: HeaderOps{Set: map[string]string{name: value}}}}
}

func reqRename(from, to string) Spec {
	return Spec{Request: RequestSpec{Headers: HeaderOps{Rename: map[string]string{from: to}}}}
}

func reqPath(p PathOps) Spec { return Spec{Request: RequestSpec{Path: p}} }
