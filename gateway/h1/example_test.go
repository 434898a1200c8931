package h1_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
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
