package transform

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestQuery(t *testing.T) {
	tests := []struct {
		name string
		ops  QueryOps
		raw  string
		want string
	}{
		{"remove", QueryOps{Remove: []string{"b"}}, "a=1&b=2&c=3", "a=1&c=3"},
		{"remove every occurrence", QueryOps{Remove: []string{"b"}}, "b=1&a=0&b=2", "a=0"},
		{"remove only param", QueryOps{Remove: []string{"b"}}, "b=1", ""},
		{"remove without value", QueryOps{Remove: []string{"b"}}, "a=1&b&c", "a=1&c"},
		{"remove encoded key", QueryOps{Remove: []string{"b"}}, "%62=2&a=1", "a=1"},
		{"remove key with space", QueryOps{Remove: []string{"a b"}}, "a+b=1&a%20b=2&ab=3", "ab=3"},
		{"remove absent keeps text", QueryOps{Remove: []string{"z"}}, "x=%7e&&y=a+b&", "x=%7e&&y=a+b&"},
		{"remove is case-sensitive", QueryOps{Remove: []string{"b"}}, "B=1&b=2", "B=1"},
		{"remove malformed escape kept", QueryOps{Remove: []string{"b"}}, "%6=1&b=2", "%6=1"},
		{"set existing keeps position", QueryOps{Set: map[string]string{"b": "X"}}, "a=1&b=2&c=3&b=4", "a=1&b=X&c=3"},
		{"set absent appends", QueryOps{Set: map[string]string{"b": "X"}}, "a=1", "a=1&b=X"},
		{"set on empty", QueryOps{Set: map[string]string{"b": "X"}}, "", "b=X"},
		{"set keeps others verbatim", QueryOps{Set: map[string]string{"b": "X"}}, "x=%7e&y=a+b", "x=%7e&y=a+b&b=X"},
		{"set escapes", QueryOps{Set: map[string]string{"a b": "1&2=3 ~é"}}, "a+b=0&z=1", "a+b=1%262%3D3+~%C3%A9&z=1"},
		{"set variable", QueryOps{Set: map[string]string{"who": "${subject} & co", "t": "${tenant}"}}, "who=mallory", "who=alice+%26+co&t=acme"},
		{"set sorted when appended", QueryOps{Set: map[string]string{"z": "1", "a": "2"}}, "", "a=2&z=1"},
		{"remove then set", QueryOps{Remove: []string{"debug"}, Set: map[string]string{"v": "2"}}, "debug=1&v=1&q=go", "v=2&q=go"},
		{"set empty variable removes", QueryOps{Set: map[string]string{"who": "${header.X-Absent}"}}, "who=spoof&a=1", "a=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := mustCompile(t, Spec{Request: RequestSpec{Query: tt.ops}})
			in := httptest.NewRequest("GET", "/", nil)
			in.URL.RawQuery = tt.raw
			out := in.Clone(in.Context())
			tr.ApplyRequest(out, in, newVars())
			if out.URL.RawQuery != tt.want {
				t.Errorf("ApplyRequest(%q) RawQuery = %q, want %q", tt.raw, out.URL.RawQuery, tt.want)
			}
			// Whatever we write must parse back.
			if _, err := url.ParseQuery(out.URL.RawQuery); err != nil && tt.name != "remove malformed escape kept" {
				t.Errorf("ParseQuery(%q) error = %v", out.URL.RawQuery, err)
			}
		})
	}
}

func TestQueryEscapeMatchesNetURL(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	for _, s := range []string{"", "plain", "a b+c&d=e", string(all)} {
		var sk sink
		sk.queryEscape(s)
		if got, want := sk.b.String(), url.QueryEscape(s); got != want {
			t.Errorf("queryEscape(%q) = %q, want %q", s, got, want)
		}
		cnt := sink{count: true}
		cnt.queryEscape(s)
		if cnt.n != len(url.QueryEscape(s)) {
			t.Errorf("queryEscape(%q) counted %d, want %d", s, cnt.n, len(url.QueryEscape(s)))
		}
	}
}
