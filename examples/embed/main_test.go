package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestEmbeddedGateway(t *testing.T) {
	users := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "users:"+r.URL.Path)
	}))
	defer users.Close()
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "orders:"+r.URL.Path)
	}))
	defer orders.Close()
	g, err := newGateway(users.URL, orders.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	for path, want := range map[string]string{"/api/v1/users/me": "users:/api/v1/users/me", "/api/v1/orders/7": "orders:/api/v1/orders/7"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want || resp.Header.Get("X-Embedded-By") != "examples/embed" || resp.Header.Get("X-Seen-Request-ID") != resp.Header.Get("X-Request-Id") {
			t.Errorf("GET %s = %q, headers %v", path, body, resp.Header)
		}
	}
	resp, err := http.Post(srv.URL+"/api/v1/users/me", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("POST users = %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("DELETE", srv.URL+"/api/v1/orders/7", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("DELETE orders = %d, want 405", resp.StatusCode)
	}
}
