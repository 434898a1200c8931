package transform

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"testing"
	"time"
)

// seen is what the echo backend received.
type seen struct {
	Method     string      `json:"method"`
	RequestURI string      `json:"request_uri"` // as on the wire
	Path       string      `json:"path"`
	RawQuery   string      `json:"raw_query"`
	Header     http.Header `json:"header"`
}

// echo answers with what it received, plus headers a response transform
// should act on.
func echo(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Backend-Secret", "s3cr3t")
	h.Set("X-Internal-Id", "node-7")
	h.Set("Cache-Control", "public, max-age=60")
	hdr := r.Header.Clone()
	// Transport details that depend on the client, not on the transform.
	for _, k := range []string{"Accept-Encoding", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(hdr, k)
	}
	json.NewEncoder(w).Encode(seen{Method: r.Method, RequestURI: r.RequestURI, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: hdr})
}

func e2eSpec() Spec {
	return Spec{
		Request: RequestSpec{
			Headers: HeaderOps{
				Remove: []string{"Authorization", "X-Debug"},
				Rename: map[string]string{"X-Client-Trace": "X-Trace-Id"},
				Set: map[string]string{
					"X-Request-Id": "${request_id}",
					"X-Principal":  "${subject}@${tenant}",
					"X-Origin":     "${method} ${host}${path} via ${route} from ${client_ip}",
					"X-Via-Header": "${header.X-Client-Trace}",
				},
				Add: map[string]string{"X-Tags": "gw"},
			},
			Path:  PathOps{Match: "/api/v1/users/{id}/avatar", Replace: "/avatars/{id}", AddPrefix: "/svc"},
			Query: QueryOps{Remove: []string{"token"}, Set: map[string]string{"size": "large", "t": "${tenant}"}},
		},
		Response: ResponseSpec{Headers: HeaderOps{
			Remove: []string{"X-Backend-Secret"},
			Rename: map[string]string{"X-Internal-Id": "X-Served-By"},
			Set:    map[string]string{"Cache-Control": "no-store", "X-Echo-Trace": "${header.X-Client-Trace}"},
			Add:    map[string]string{"Vary": "X-Tenant"},
		}},
	}
}

// send makes the request every end-to-end test sends, with headers the
// transform should remove, rename, replace and add to.
func send(t *testing.T, base string) (*http.Response, seen) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/users/a%2Fb/avatar?token=abc&x=%7e1&size=small&x=2", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer secret")
	req.Header.Set("X-Debug", "1")
	req.Header.Set("X-Client-Trace", "trace-1")
	req.Header.Set("X-Principal", "spoofed")
	req.Header.Add("X-Tags", "client")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s seen
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decoding the echo: %v", err)
	}
	return resp, s
}

func checkSeen(t *testing.T, got seen, host string, wantRequestURI string) {
	t.Helper()
	if got.RequestURI != wantRequestURI {
		t.Errorf("backend RequestURI = %q, want %q", got.RequestURI, wantRequestURI)
	}
	if want := "/svc/avatars/a/b"; got.Path != want {
		t.Errorf("backend Path = %q, want %q", got.Path, want)
	}
	if want := "x=%7e1&size=large&x=2&t=globex"; got.RawQuery != want {
		t.Errorf("backend RawQuery = %q, want %q", got.RawQuery, want)
	}
	want := http.Header{
		"X-Trace-Id":   {"trace-1"},
		"X-Request-Id": {"req-e2e"},
		"X-Principal":  {"bob@globex"},
		"X-Origin":     {"GET " + host + "/api/v1/users/a/b/avatar via avatars from 198.51.100.1"},
		"X-Via-Header": {"trace-1"},
		"X-Tags":       {"client", "gw"},
	}
	if !reflect.DeepEqual(got.Header, want) {
		t.Errorf("backend headers = %q, want %q", got.Header, want)
	}
}

func checkResponse(t *testing.T, resp *http.Response) {
	t.Helper()
	h := resp.Header
	checks := []struct{ name, want string }{
		{"X-Backend-Secret", ""},
		{"X-Internal-Id", ""},
		{"X-Served-By", "node-7"},
		{"Cache-Control", "no-store"},
		{"X-Echo-Trace", "trace-1"},
		{"Vary", "X-Tenant"},
		{"Content-Type", "application/json"},
	}
	for _, c := range checks {
		if got := h.Get(c.name); got != c.want {
			t.Errorf("response %s = %q, want %q", c.name, got, c.want)
		}
	}
}

type inboundKey struct{}

// TestReverseProxy runs the transform the way the gateway does: request
// transforms in Rewrite, response transforms in ModifyResponse.
func TestReverseProxy(t *testing.T) {
	checkLeaks(t)
	backend := httptest.NewServer(http.HandlerFunc(echo))
	t.Cleanup(backend.Close)
	target, _ := url.Parse(backend.URL)
	tr := mustCompile(t, e2eSpec())
	v := fixedVars{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			tr.ApplyRequest(pr.Out, pr.In, v)
		},
		ModifyResponse: func(resp *http.Response) error {
			in := resp.Request.Context().Value(inboundKey{}).(*http.Request)
			tr.ApplyResponse(resp.Header, in, v)
			return nil
		},
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), inboundKey{}, r)))
	}))
	t.Cleanup(proxy.Close)
	t.Cleanup(http.DefaultClient.CloseIdleConnections)

	resp, got := send(t, proxy.URL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	host := proxy.Listener.Addr().String()
	checkSeen(t, got, host, "/svc/avatars/a%2Fb?x=%7e1&size=large&x=2&t=globex")
	checkResponse(t, resp)
}

// TestMiddleware runs the same transform as plain middleware.
func TestMiddleware(t *testing.T) {
	checkLeaks(t)
	tr := mustCompile(t, e2eSpec())
	var original *http.Request
	var originalURI string
	keep := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			original, originalURI = r, r.URL.String()
			next.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(keep(tr.Middleware(fixedVars{})(http.HandlerFunc(echo))))
	t.Cleanup(srv.Close)
	t.Cleanup(http.DefaultClient.CloseIdleConnections)

	resp, got := send(t, srv.URL)
	host := srv.Listener.Addr().String()
	// In process nobody strips Accept-Encoding or adds X-Forwarded-*, and
	// the handler sees the updated RequestURI.
	checkSeen(t, got, host, "/svc/avatars/a%2Fb?x=%7e1&size=large&x=2&t=globex")
	checkResponse(t, resp)
	if original.URL.String() != originalURI || original.Header.Get("Authorization") == "" {
		t.Errorf("Middleware modified the caller's request: %v %v", original.URL, original.Header)
	}
}

func TestMiddlewareResponsePaths(t *testing.T) {
	tr := mustCompile(t, Spec{Response: ResponseSpec{Headers: HeaderOps{
		Remove: []string{"X-Secret"},
		Set:    map[string]string{"X-Route": "${route}"},
	}}})
	tests := []struct {
		name    string
		handler http.HandlerFunc
		status  int
	}{
		{"write header", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Secret", "1")
			w.WriteHeader(http.StatusCreated)
		}, http.StatusCreated},
		{"write", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Secret", "1")
			w.Write([]byte("hi"))
		}, http.StatusOK},
		{"implicit", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Secret", "1")
		}, http.StatusOK},
		{"flush via controller", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Secret", "1")
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			w.Header().Set("X-Late", "ignored")
		}, http.StatusOK},
		{"flusher", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Secret", "1")
			w.(http.Flusher).Flush()
		}, http.StatusOK},
		{"early hints then final", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Secret", "1")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusAccepted)
		}, http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			srv := httptest.NewServer(tr.Middleware(fixedVars{})(tt.handler))
			t.Cleanup(srv.Close)
			t.Cleanup(http.DefaultClient.CloseIdleConnections)
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("X-Secret"); got != "" {
				t.Errorf("X-Secret = %q, want it removed", got)
			}
			if got := resp.Header.Get("X-Route"); got != "avatars" {
				t.Errorf("X-Route = %q, want %q", got, "avatars")
			}
		})
	}
}

func TestMiddlewareEmptyIsIdentity(t *testing.T) {
	h := http.HandlerFunc(echo)
	got := mustCompile(t, Spec{}).Middleware(nil)(h)
	if reflect.ValueOf(got).Pointer() != reflect.ValueOf(h).Pointer() {
		t.Errorf("Middleware(empty)(h) wraps h, want h itself")
	}
}
