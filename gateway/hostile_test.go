package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// rawExchange writes raw bytes to addr and reads every response that comes
// back until the connection closes or goes quiet.
func rawExchange(t *testing.T, addr, raw string) (statuses []int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return statuses, false
			}
			return statuses, true
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if resp.Close {
			// The server announced it closes; confirm.
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, err := br.ReadByte()
			return statuses, err != nil
		}
	}
}

func TestHostileInputAtTheEdge(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes: []gateway.Route{
			{Prefix: "/", Service: "svc", Public: true},
			{Prefix: "/api/admin", Service: "svc", Roles: []string{"admin"}},
			{Prefix: "/files", Service: "svc", Public: true, AllowEncodedSlashes: true},
			{Prefix: "/legacy", Service: "svc", Public: true, AllowOverrideHeaders: true},
		},
		BodyLimit: 1024,
		Server:    gateway.ServerSettings{ShutdownDelay: -1, ReadHeaderTimeout: time.Second},
		Logger:    discardLogger,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(serveGateway(t, g), "http://")
	get := func(target string, extra ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: api.example.com\r\n" + strings.Join(extra, "") + "\r\n"
	}
	longHeaders := ""
	for i := 0; i < 120; i++ {
		longHeaders += fmt.Sprintf("X-H%d: v\r\n", i)
	}
	cases := []struct {
		name     string
		raw      string
		statuses []int
		closed   bool
		hits     int64
		saw      map[string]string // backend headers: name → value ("" = absent)
	}{
		{name: "clean GET", raw: get("/x"), statuses: []int{200}, hits: 1},
		{name: "CL with TE", raw: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", statuses: []int{400}, closed: true},
		{name: "TE with CL", raw: "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", statuses: []int{400}, closed: true},
		{name: "conflicting CL", raw: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", statuses: []int{400}, closed: true},
		{name: "TE gzip", raw: "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", statuses: []int{501}, closed: true},
		{name: "TE twice", raw: "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", statuses: []int{501}, closed: true},
		{name: "HTTP/1.0 with TE", raw: "POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", statuses: []int{400}, closed: true},
		{name: "pipelined clean then smuggled", raw: get("/x") + "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/admin HTTP/1.1\r\nHost: a\r\n\r\n", statuses: []int{200, 400}, closed: true, hits: 1},
		{name: "pipelined health check then smuggled", raw: get("/health") + "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", statuses: []int{200, 400}, closed: true},
		{name: "pipelined clean pair", raw: get("/a") + get("/b"), statuses: []int{200, 200}, hits: 2},
		{name: "encoded slash", raw: get("/api%2Fadmin/x"), statuses: []int{400}},
		{name: "encoded slash allowed by route", raw: get("/files/a%2Fb"), statuses: []int{200}, hits: 1},
		{name: "encoded backslash", raw: get("/x%5C..%5Capi/admin"), statuses: []int{400}},
		{name: "encoded dot segment", raw: get("/x/%2e%2e/api/admin"), statuses: []int{400}},
		{name: "encoded NUL", raw: get("/x%00.json"), statuses: []int{400}},
		{name: "backslash", raw: get("/x\\..\\api\\admin"), statuses: []int{400}},
		{name: "path parameter", raw: get("/api/admin;foo=bar"), statuses: []int{400}},
		{name: "dot segments cleaned into a protected route", raw: get("/x/../api/admin"), statuses: []int{401}},
		{name: "case that would reach a protected route", raw: get("/API/Admin/users"), statuses: []int{400}},
		{name: "URL too long", raw: get("/" + strings.Repeat("a", 9000)), statuses: []int{414}, closed: true},
		{name: "too many headers", raw: get("/x", longHeaders), statuses: []int{431}, closed: true},
		{name: "huge header", raw: get("/x", "X-Big: "+strings.Repeat("a", 1100000)+"\r\n"), statuses: []int{431}, closed: true},
		{name: "body over the limit", raw: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n", statuses: []int{413}, closed: true},
		{name: "chunked body over the limit", raw: "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + strings.Repeat("a", 2048) + "\r\n0\r\n\r\n", statuses: []int{413}, closed: true},
		{name: "bad host", raw: "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", statuses: []int{400}, closed: true},
		{name: "h2c upgrade stripped", raw: get("/x", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"), statuses: []int{200}, hits: 1,
			saw: map[string]string{"Upgrade": "", "Http2-Settings": ""}},
		{name: "identity and underscore headers stripped", raw: get("/x", "X-User-ID: admin\r\nX_User_Id: admin\r\nX-Auth-Role: admin\r\nX_Custom: 1\r\nX-Kept: yes\r\n"), statuses: []int{200}, hits: 1,
			saw: map[string]string{"X-User-Id": "", "X_user_id": "", "X-Auth-Role": "", "X_custom": "", "X-Kept": "yes"}},
		{name: "override headers stripped", raw: get("/x", "X-Original-URL: /api/admin\r\nX-HTTP-Method-Override: DELETE\r\n"), statuses: []int{200}, hits: 1,
			saw: map[string]string{"X-Original-Url": "", "X-Http-Method-Override": ""}},
		{name: "override headers kept where a route opts in", raw: get("/legacy/x", "X-HTTP-Method-Override: DELETE\r\n"), statuses: []int{200}, hits: 1,
			saw: map[string]string{"X-Http-Method-Override": "DELETE"}},
		{name: "Connection cannot remove gateway headers", raw: get("/x", "Connection: X-Forwarded-For, X-Request-ID, X-Real-IP\r\n"), statuses: []int{200}, hits: 1,
			saw: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := b.Hits()
			statuses, closed := rawExchange(t, addr, c.raw)
			if fmt.Sprint(statuses) != fmt.Sprint(c.statuses) {
				t.Errorf("statuses = %v, want %v", statuses, c.statuses)
			}
			if c.closed && !closed {
				t.Errorf("connection left open after a refused request")
			}
			if got := b.Hits() - before; got != c.hits {
				t.Errorf("backend hits moved by %d, want %d", got, c.hits)
			}
			if c.saw != nil {
				h := b.Last().Header
				for k, want := range c.saw {
					if got := h.Get(k); got != want {
						t.Errorf("backend saw %s = %q, want %q (all: %v)", k, got, want, h)
					}
				}
			}
		})
	}
}

// TestSlowlorisDoesNotStarveOthers holds 300 connections that dribble
// request headers, and checks that normal requests keep being served.
func TestSlowlorisDoesNotStarveOthers(t *testing.T) {
	b := gatewaytest.NewBackend(t, "svc", nil)
	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		Server:   gateway.ServerSettings{ShutdownDelay: -1, ReadHeaderTimeout: 2 * time.Second},
		Limits:   gateway.Limits{MaxConnsPerIP: 1000},
		Logger:   discardLogger,
	})
	if err != nil {
		t.Fatal(err)
	}
	base := serveGateway(t, g)
	addr := strings.TrimPrefix(base, "http://")
	var conns []net.Conn
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("slow connection %d: %v", i, err)
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := fmt.Fprintf(c, "X-%d: a\r\n", j); err != nil {
					return
				}
			}
		}()
	}
	client := &http.Client{Timeout: 2 * time.Second}
	var worst time.Duration
	for i := 0; i < 50; i++ {
		start := time.Now()
		resp, err := client.Get(base + "/ok")
		if err != nil {
			t.Fatalf("normal request %d under slowloris: %v", i, err)
		}
		resp.Body.Close()
		if d := time.Since(start); d > worst {
			worst = d
		}
		if resp.StatusCode != 200 {
			t.Fatalf("normal request %d: %d", i, resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if worst > 500*time.Millisecond {
		t.Errorf("slowest normal request took %v under 300 slowloris connections", worst)
	}
	// The slow connections were cut by the header timeout.
	mu.Lock()
	c := conns[0]
	mu.Unlock()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("a slowloris connection was never closed by the server")
		}
	}
}
