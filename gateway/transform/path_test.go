package transform

import (
	"net/http/httptest"
	"testing"
)

func TestPath(t *testing.T) {
	avatar := PathOps{Match: "/api/v1/users/{id}/avatar", Replace: "/avatars/{id}"}
	rest := PathOps{Match: "/api/{rest...}", Replace: "/v2/{rest...}"}
	tests := []struct {
		name    string
		ops     PathOps
		target  string // request target as a client sends it
		path    string // want URL.Path
		escaped string // want URL.EscapedPath(); "" means same as path
	}{
		{"strip", PathOps{StripPrefix: "/api"}, "/api/users", "/users", ""},
		{"strip exact", PathOps{StripPrefix: "/api"}, "/api", "/", ""},
		{"strip exact slash", PathOps{StripPrefix: "/api"}, "/api/", "/", ""},
		{"strip whole segments only", PathOps{StripPrefix: "/api"}, "/apix/y", "/apix/y", ""},
		{"strip no match", PathOps{StripPrefix: "/api"}, "/other/api", "/other/api", ""},
		{"strip trailing slash in config", PathOps{StripPrefix: "/api/v1/"}, "/api/v1/x", "/x", ""},
		{"strip multi", PathOps{StripPrefix: "/api/v1"}, "/api/v1/users/1", "/users/1", ""},
		{"strip keeps encoded slash", PathOps{StripPrefix: "/api"}, "/api/a%2Fb", "/a/b", "/a%2Fb"},
		{"strip compares decoded", PathOps{StripPrefix: "/api"}, "/%61pi/x", "/x", ""},
		{"strip not across encoded slash", PathOps{StripPrefix: "/a"}, "/a%2Fb/c", "/a/b/c", "/a%2Fb/c"},
		{"add", PathOps{AddPrefix: "/svc"}, "/x", "/svc/x", ""},
		{"add to root", PathOps{AddPrefix: "/svc/"}, "/", "/svc/", ""},
		{"add escaped", PathOps{AddPrefix: "/my svc"}, "/a%2Fb", "/my svc/a/b", "/my%20svc/a%2Fb"},
		{"swap prefix", PathOps{StripPrefix: "/api", AddPrefix: "/svc"}, "/api/x", "/svc/x", ""},
		{"swap prefix exact", PathOps{StripPrefix: "/api", AddPrefix: "/svc"}, "/api", "/svc", ""},
		{"swap prefix exact slash", PathOps{StripPrefix: "/api", AddPrefix: "/svc"}, "/api/", "/svc/", ""},
		{"swap prefix no strip", PathOps{StripPrefix: "/api", AddPrefix: "/svc"}, "/x", "/svc/x", ""},
		{"replace", avatar, "/api/v1/users/42/avatar", "/avatars/42", ""},
		{"replace too long", avatar, "/api/v1/users/42/avatar/x", "/api/v1/users/42/avatar/x", ""},
		{"replace too short", avatar, "/api/v1/users/42", "/api/v1/users/42", ""},
		{"replace trailing slash", avatar, "/api/v1/users/42/avatar/", "/api/v1/users/42/avatar/", ""},
		{"replace literal differs", avatar, "/api/v2/users/42/avatar", "/api/v2/users/42/avatar", ""},
		{"replace empty capture", avatar, "/api/v1/users//avatar", "/api/v1/users//avatar", ""},
		{"replace dot capture", avatar, "/api/v1/users/./avatar", "/api/v1/users/./avatar", ""},
		{"replace encoded dotdot", avatar, "/api/v1/users/%2E%2E/avatar", "/api/v1/users/../avatar", "/api/v1/users/%2E%2E/avatar"},
		{"replace encoded slash in capture", avatar, "/api/v1/users/a%2Fb/avatar", "/avatars/a/b", "/avatars/a%2Fb"},
		{"replace encoded literal", avatar, "/api/v1/us%65rs/42/avatar", "/avatars/42", ""},
		{"replace unicode", avatar, "/api/v1/users/%C3%A9/avatar", "/avatars/é", "/avatars/%C3%A9"},
		{"rest", rest, "/api/a/b/c", "/v2/a/b/c", ""},
		{"rest empty", rest, "/api/", "/v2/", ""},
		{"rest needs slash", rest, "/api", "/api", ""},
		{"rest dot", rest, "/api/a/../b", "/api/a/../b", ""},
		{"rest encoded", rest, "/api/a%2Fb/c%3Fd", "/v2/a/b/c?d", "/v2/a%2Fb/c%3Fd"},
		{"reorder and repeat", PathOps{Match: "/u/{a}/{b}", Replace: "/x/{b}/{a}/{b}"}, "/u/1/2", "/x/2/1/2", ""},
		{"root", PathOps{Match: "/", Replace: "/index"}, "/", "/index", ""},
		{"to root", PathOps{Match: "/health", Replace: "/"}, "/health", "/", ""},
		{"escaped literal in replace", PathOps{Match: "/f/{name}", Replace: "/files with space/{name}"}, "/f/a%2Fb", "/files with space/a/b", "/files%20with%20space/a%2Fb"},
		{"strip then match then add", PathOps{StripPrefix: "/api", Match: "/users/{id}", Replace: "/u/{id}", AddPrefix: "/v2"}, "/api/users/7", "/v2/u/7", ""},
		{"match after strip to root", PathOps{StripPrefix: "/api", Match: "/", Replace: "/home"}, "/api", "/home", ""},
		{"asterisk", PathOps{AddPrefix: "/svc", StripPrefix: "/api"}, "*", "*", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := mustCompile(t, Spec{Request: RequestSpec{Path: tt.ops}})
			method := "GET"
			if tt.target == "*" {
				method = "OPTIONS"
			}
			in := httptest.NewRequest(method, tt.target, nil)
			out := in.Clone(in.Context())
			tr.ApplyRequest(out, in, nil)
			if out.URL.Path != tt.path {
				t.Errorf("ApplyRequest(%s) Path = %q, want %q", tt.target, out.URL.Path, tt.path)
			}
			wantEsc := tt.escaped
			if wantEsc == "" {
				wantEsc = tt.path
			}
			if got := out.URL.EscapedPath(); got != wantEsc && tt.target != "*" {
				t.Errorf("ApplyRequest(%s) EscapedPath() = %q, want %q", tt.target, got, wantEsc)
			}
			if in.URL.Path == out.URL.Path && in.URL.RawPath != out.URL.RawPath {
				t.Errorf("ApplyRequest(%s) changed RawPath %q → %q without changing the path", tt.target, in.URL.RawPath, out.URL.RawPath)
			}
		})
	}
}
