package transform

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzPathReplace compiles arbitrary match/replace templates (alone, and
// with a strip and an add prefix) and applies them to arbitrary request
// paths. It checks that nothing panics and that every result is a valid,
// self-consistent path that introduces no empty, dot or control-character
// segments the input did not have. It also checks that working on the
// escaped path (the slow path taken when a URL has a RawPath) agrees with
// working on the decoded one.
func FuzzPathReplace(f *testing.F) {
	seeds := []struct{ match, replace, path string }{
		{"/api/v1/users/{id}/avatar", "/avatars/{id}", "/api/v1/users/42/avatar"},
		{"/api/v1/users/{id}/avatar", "/avatars/{id}", "/api/v1/users/a%2Fb/avatar"},
		{"/api/v1/users/{id}/avatar", "/avatars/{id}", "/api/v1/users/%2E%2E/avatar"},
		{"/api/{rest...}", "/v2/{rest...}", "/api/a/b/c"},
		{"/api/{rest...}", "/v2/{rest...}", "/api/"},
		{"/api/{rest...}", "/v2/{rest...}", "/api/a%2F..%2Fb/./c"},
		{"/u/{a}/{b}", "/x/{b}/{a}/{b}", "/u/1/2"},
		{"/", "/index", "/"},
		{"/{x}", "/a b/{x}", "/%C3%A9"},
		{"/a/", "/b/", "/a/"},
		{"/{x}/{y...}", "/{y...}", "/a//b"},
		{"/us%65rs", "/x", "/us%65rs"},
		{"/{x}", "/{x}", "/%zz"},
	}
	for _, s := range seeds {
		f.Add(s.match, s.replace, s.path)
	}
	f.Fuzz(func(t *testing.T, match, replace, target string) {
		u, err := url.Parse(target)
		if err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return
		}
		var trs []*Transform
		for _, p := range []PathOps{
			{Match: match, Replace: replace},
			{StripPrefix: "/api", Match: match, Replace: replace, AddPrefix: "/svc x"},
		} {
			tr, probs := Compile(Spec{Request: RequestSpec{Path: p}})
			if (tr == nil) == (len(probs) == 0) {
				t.Fatalf("Compile(%+v) = %v, %v: want exactly one of them", p, tr, probs)
			}
			if tr != nil {
				trs = append(trs, tr)
			}
		}
		for _, tr := range trs {
			out := apply(tr, *u)
			checkPath(t, u, out)
			if u.RawPath == "" {
				// Same path, forced through the escaped-path code.
				forced := *u
				forced.RawPath = u.EscapedPath()
				if o2 := apply(tr, forced); o2.Path != out.Path || o2.EscapedPath() != out.EscapedPath() {
					t.Errorf("decoded and escaped paths disagree: %q (%q) vs %q (%q)", out.Path, out.EscapedPath(), o2.Path, o2.EscapedPath())
				}
			}
		}
	})
}

func apply(tr *Transform, u url.URL) *url.URL {
	r := &http.Request{Method: "GET", URL: &u, Header: http.Header{}}
	tr.ApplyRequest(r, r, nil)
	return r.URL
}

func checkPath(t *testing.T, in, out *url.URL) {
	t.Helper()
	if !strings.HasPrefix(out.Path, "/") {
		t.Fatalf("Path = %q, want a leading /", out.Path)
	}
	esc := out.EscapedPath()
	if out.Path == in.Path && out.RawPath == in.RawPath {
		return // untouched: whatever the input was
	}
	if out.RawPath != "" && out.RawPath != esc {
		t.Errorf("RawPath %q is not a valid encoding of Path %q", out.RawPath, out.Path)
	}
	back, err := url.PathUnescape(esc)
	if err != nil || back != out.Path {
		t.Errorf("EscapedPath() = %q unescapes to %q (%v), want Path %q", esc, back, err, out.Path)
	}
	inSegs := segFlags(in.EscapedPath())
	outSegs := segFlags(esc)
	if outSegs.empty && !inSegs.empty {
		t.Errorf("%q → %q: introduced an empty segment", in.EscapedPath(), esc)
	}
	if outSegs.dot && !inSegs.dot {
		t.Errorf("%q → %q: introduced a dot segment", in.EscapedPath(), esc)
	}
	if !validValue(out.Path) && validValue(in.Path) {
		t.Errorf("%q → %q: introduced a control character", in.Path, out.Path)
	}
}

type flags struct{ empty, dot bool }

// segFlags looks at the segments of an escaped path, as a backend would
// split them. A trailing slash is not an empty segment.
func segFlags(esc string) flags {
	var f flags
	segs := strings.Split(strings.TrimPrefix(esc, "/"), "/")
	for i, s := range segs {
		if s == "" && i != len(segs)-1 {
			f.empty = true
		}
		if d, err := url.PathUnescape(s); err == nil && (d == "." || d == "..") {
			f.dot = true
		}
	}
	return f
}
