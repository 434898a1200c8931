package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// TestHoldManyConnections holds GATEWAY_CONNS (default 15000) idle
// keep-alive client connections on the gateway, spread over several
// 127.0.0.x source addresses, and checks that it stays responsive (health
// p99 < 50 ms) and reports its memory per connection. It needs a high
// open-file limit and takes tens of seconds, so it runs only with
// GATEWAY_BIG=1:
//
//	GATEWAY_BIG=1 go test -run TestHoldManyConnections -v ./gateway/
//
// The clients live in a child process (this test binary, re-executed), so
// the gateway's process has the whole per-process file limit to itself.
func TestHoldManyConnections(t *testing.T) {
	if os.Getenv("GATEWAY_HOLD_ADDR") != "" {
		holdConnections(t)
		return
	}
	if os.Getenv("GATEWAY_BIG") != "1" {
		t.Skip("set GATEWAY_BIG=1 to hold 15,000 connections")
	}
	n := 15000
	if v, err := strconv.Atoi(os.Getenv("GATEWAY_CONNS")); err == nil {
		n = v
	}
	raiseFileLimit(t)
	b := gatewaytest.NewBackend(t, "svc", nil)
	g, err := gateway.New(gateway.Config{
		Services: []gateway.Service{{Name: "svc", Instances: []*balancer.Instance{inst(t, b.URL)}}},
		Routes:   []gateway.Route{{Prefix: "/", Service: "svc", Public: true}},
		Server:   gateway.ServerSettings{ShutdownDelay: -1, IdleTimeout: 10 * time.Minute},
		Limits:   gateway.Limits{MaxConnsPerIP: -1},
		Logger:   discardLogger,
	})
	if err != nil {
		t.Fatal(err)
	}
	base := serveGateway(t, g)
	time.Sleep(200 * time.Millisecond)
	rssBefore := rssKiB(t)

	child := exec.Command(os.Args[0], "-test.run=^TestHoldManyConnections$", "-test.v")
	child.Env = append(os.Environ(), "GATEWAY_HOLD_ADDR="+strings.TrimPrefix(base, "http://"), "GATEWAY_HOLD_N="+strconv.Itoa(n))
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { child.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			child.Process.Kill()
		}
	}()
	sc := bufio.NewScanner(stdout)
	ready := false
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) && sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "HOLDING ") {
			ready = true
			t.Log(line)
			break
		}
		if strings.HasPrefix(line, "FAILED") {
			t.Fatal(line)
		}
	}
	if !ready {
		t.Fatal("the client process never reported its connections open")
	}
	time.Sleep(time.Second)
	rss := rssKiB(t)
	var lat []time.Duration
	client := &http.Client{Timeout: 2 * time.Second}
	for i := 0; i < 200; i++ {
		start := time.Now()
		resp, err := client.Get(base + "/health")
		if err != nil {
			t.Fatalf("health under %d connections: %v", n, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
		time.Sleep(5 * time.Millisecond)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]
	perConn := float64(rss-rssBefore) * 1024 / float64(n)
	t.Logf("%d idle connections: gateway RSS %d KiB (was %d KiB before), %.1f KiB per connection; /health p50 %v p99 %v",
		n, rss, rssBefore, perConn/1024, lat[len(lat)/2], p99)
	if p99 > 50*time.Millisecond {
		t.Errorf("health p99 %v under %d connections, want < 50ms", p99, n)
	}
	// 11.3 KiB measured with gateway/h1's server (22 with net/http's).
	if perConn > 16*1024 {
		t.Errorf("%.1f KiB per idle connection, want <= 16 KiB", perConn/1024)
	}
}

// holdConnections is the child side: open the connections, make one
// request on each so they are real keep-alive connections, and hold them.
func holdConnections(t *testing.T) {
	raiseFileLimit(t)
	addr := os.Getenv("GATEWAY_HOLD_ADDR")
	n, _ := strconv.Atoi(os.Getenv("GATEWAY_HOLD_N"))
	var conns []net.Conn
	for i := 0; i < n; i++ {
		// Spread over source addresses so no 4-tuple space runs out.
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%16))}
		d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			fmt.Printf("FAILED dial %d: %v\n", i, err)
			return
		}
		fmt.Fprintf(c, "GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			fmt.Printf("FAILED request %d: %v\n", i, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conns = append(conns, c)
	}
	fmt.Printf("HOLDING %d connections\n", len(conns))
	io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	for _, c := range conns {
		c.Close()
	}
}

func raiseFileLimit(t *testing.T) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func rssKiB(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
