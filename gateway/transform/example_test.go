package transform_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"

	"github.com/pyairtable/api-gateway/gateway/transform"
)

// vars is how an embedder exposes per-request values; the gateway has its
// own.
type vars struct{}

func (vars) RequestID(*http.Request) string { return "7f3c" }
func (vars) ClientIP(*http.Request) string  { return "203.0.113.9" }
func (vars) Subject(*http.Request) string   { return "alice" }
func (vars) Tenant(*http.Request) string    { return "acme" }
func (vars) Route(*http.Request) string     { return "avatars" }

func ExampleCompile() {
	t, problems := transform.Compile(transform.Spec{
		Request: transform.RequestSpec{
			Headers: transform.HeaderOps{
				Remove: []string{"Cookie"},
				Set:    map[string]string{"X-User": "${subject}@${tenant}"},
			},
			Path:  transform.PathOps{Match: "/api/v1/users/{id}/avatar", Replace: "/avatars/{id}"},
			Query: transform.QueryOps{Set: map[string]string{"size": "128"}},
		},
	})
	if problems != nil {
		fmt.Println(problems)
		return
	}
	in := httptest.NewRequest("GET", "/api/v1/users/42/avatar?fmt=png", nil)
	in.Header.Set("Cookie", "session=secret")
	in.Header.Set("X-User", "mallory")
	out := in.Clone(context.Background())
	t.ApplyRequest(out, in, vars{})
	fmt.Println(out.URL)
	fmt.Println(out.Header)
	// Output:
	// /avatars/42?fmt=png&size=128
	// map[X-User:[alice@acme]]
}

func ExampleCompile_problems() {
	_, problems := transform.Compile(transform.Spec{
		Request: transform.RequestSpec{
			Headers: transform.HeaderOps{Set: map[string]string{"X-User": "${user}"}},
			Path:    transform.PathOps{Match: "/users/{id}", Replace: "/u/{uid}"},
		},
	})
	for _, p := range problems {
		fmt.Println(p.Key+":", p.Msg)
	}
	// Output:
	// request.headers.set.X-User: unknown variable ${user} (known: request_id, client_ip, subject, tenant, route, method, host, path, header.<Name>)
	// request.path.replace: {uid} is not a placeholder in match
}

// A reverse proxy applies request transforms in Rewrite and response
// transforms in ModifyResponse, where it needs the inbound request: here
// it travels in the context.
func ExampleTransform_ApplyRequest() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "backend/1.2")
		fmt.Fprintf(w, "backend got %s tenant=%s", r.URL.Path, r.Header.Get("X-Tenant"))
	}))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)

	t, _ := transform.Compile(transform.Spec{
		Request: transform.RequestSpec{
			Headers: transform.HeaderOps{Set: map[string]string{"X-Tenant": "${tenant}"}},
			Path:    transform.PathOps{StripPrefix: "/api", AddPrefix: "/internal"},
		},
		Response: transform.ResponseSpec{Headers: transform.HeaderOps{
			Remove: []string{"Server"},
			Set:    map[string]string{"X-Request-Id": "${request_id}"},
		}},
	})
	type inbound struct{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			t.ApplyRequest(pr.Out, pr.In, vars{})
		},
		ModifyResponse: func(resp *http.Response) error {
			in := resp.Request.Context().Value(inbound{}).(*http.Request)
			t.ApplyResponse(resp.Header, in, vars{})
			return nil
		},
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), inbound{}, r)))
	}))
	defer proxy.Close()

	resp, err := http.Get(proxy.URL + "/api/users")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	fmt.Println(string(body))
	fmt.Printf("Server=%q X-Request-Id=%q\n", resp.Header.Get("Server"), resp.Header.Get("X-Request-Id"))
	// Output:
	// backend got /internal/users tenant=acme
	// Server="" X-Request-Id="7f3c"
}

func ExampleTransform_Middleware() {
	t, _ := transform.Compile(transform.Spec{
		Request:  transform.RequestSpec{Path: transform.PathOps{StripPrefix: "/v1"}},
		Response: transform.ResponseSpec{Headers: transform.HeaderOps{Rename: map[string]string{"X-Internal-Id": "X-Id"}}},
	})
	h := t.Middleware(vars{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal-Id", "n1")
		fmt.Fprintln(w, r.URL.Path, r.RequestURI)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/items?page=2", nil))
	fmt.Print(rec.Body.String())
	fmt.Println(rec.Header())
	// Output:
	// /items /items?page=2
	// map[Content-Type:[text/plain; charset=utf-8] X-Id:[n1]]
}
