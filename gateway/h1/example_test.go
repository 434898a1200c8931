package h1_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/pyairtable/api-gateway/gateway/h1"
)

// A ReverseProxy whose bodiless GET, HEAD and OPTIONS requests go over
// h1's connections and everything else over net/http's Transport.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
	}))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)

	std := &http.Transport{MaxIdleConnsPerHost: 100, IdleConnTimeout: 90 * time.Second}
	tr := &h1.Transport{Fallback: std, MaxIdleConnsPerHost: 100, IdleConnTimeout: 90 * time.Second}
	defer tr.CloseIdleConnections()
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
	}
	front := httptest.NewServer(proxy)
	defer front.Close()

	resp, err := http.Get(front.URL + "/records/42")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: GET /records/42
}

// A Server in front of a net/http server: the GET is served by h1, the
// POST's connection is handed to net/http, and one handler answers both.
func ExampleServer() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
	})
	srv := &h1.Server{Std: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())

	for _, req := range []struct{ method, body string }{{"GET", ""}, {"POST", "x"}} {
		r, _ := http.NewRequest(req.method, "http://"+ln.Addr().String()+"/records", strings.NewReader(req.body))
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// GET /records
	// POST /records
}
