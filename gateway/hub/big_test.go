package hub_test

// Measurements at 10,000 real TCP connections, run with
//
//	HUB_BIG=1 go test -run 'TestIdleConnMemory|TestFanoutLatency10k' -v ./hub/
//
// (without -race, whose shadow memory would swamp the figures). The clients
// run in a child process — this test binary re-executed to run
// TestHelperClients — so the parent's RSS and heap hold only the server
// side, and each process needs only 10,000 file descriptors.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyairtable/api-gateway/gateway/hub"
)

const bigConns = 10000

func skipUnlessBig(t *testing.T) {
	t.Helper()
	if testing.Short() || os.Getenv("HUB_BIG") != "1" {
		t.Skip("set HUB_BIG=1 (and no -short) to run the 10,000-connection measurements")
	}
	if raceEnabled {
		t.Skip("the race detector distorts memory and latency figures")
	}
	raiseFileLimit(t, bigConns+1000)
}

// vmRSS returns the resident set size of this process in bytes.
func vmRSS(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	tb.Fatal("VmRSS not found")
	return 0
}

// settle collects garbage and returns freed pages to the OS, so RSS shows
// live memory only.
func settle() runtime.MemStats {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// clientProc is the child process holding the clients.
type clientProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // lines starting with "HUB "
}

// startClients runs n clients in a child process against url; mode is
// "idle" (connect, subscribe, wait) or "latency" (also receive msgs
// broadcasts and report latencies). It returns once all are subscribed.
func startClients(t *testing.T, url string, n int, mode string, msgs int) *clientProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperClients$", "-test.v=false")
	cmd.Env = append(os.Environ(),
		"HUB_HELPER_URL="+url,
		"HUB_HELPER_N="+strconv.Itoa(n),
		"HUB_HELPER_MODE="+mode,
		"HUB_HELPER_MSGS="+strconv.Itoa(msgs))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &clientProc{cmd: cmd, stdin: stdin, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "HUB "); ok {
				p.lines <- line
			}
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		p.stdin.Close() // the child exits when its stdin closes
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if line := p.next(t, 3*time.Minute); line != "ready" {
		t.Fatalf("client process said %q, want ready", line)
	}
	return p
}

func (p *clientProc) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			t.Fatal("client process ended early")
		}
		return line
	case <-time.After(timeout):
		t.Fatal("client process silent")
	}
	return ""
}

// bigEnv serves a hub on loopback TCP for the big tests.
func bigEnv(t *testing.T) (*hub.Hub, string) {
	t.Helper()
	h, err := hub.New(hub.Settings{Verify: verify, SendQueue: 16})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		srv.Close()
	})
	return h, "ws" + strings.TrimPrefix(srv.URL, "http")
}

// TestIdleConnMemory measures the server-side memory of 10,000 idle,
// authenticated connections subscribed to one channel.
func TestIdleConnMemory(t *testing.T) {
	skipUnlessBig(t)
	h, url := bigEnv(t)
	ms0 := settle()
	rss0, g0 := vmRSS(t), runtime.NumGoroutine()

	p := startClients(t, url, bigConns, "idle", 0)
	waitFor(t, "all subscriptions", func() bool { return h.Stats().Subscriptions == bigConns })
	// Let writers that sent the last replies exit (a few goroutines serve
	// the child process's pipes).
	waitFor(t, "writers to exit", func() bool { return runtime.NumGoroutine() <= g0+bigConns+5 })
	time.Sleep(100 * time.Millisecond)
	ms1 := settle()
	rss1, g1 := vmRSS(t), runtime.NumGoroutine()

	perRSS := float64(rss1-rss0) / bigConns
	perHeap := float64(ms1.HeapInuse-ms0.HeapInuse) / bigConns
	perStack := float64(ms1.StackInuse-ms0.StackInuse) / bigConns
	t.Logf("server side, per idle connection: RSS %.0f B (%.1f KiB), heap in use %.0f B, stacks %.0f B, goroutines %.2f",
		perRSS, perRSS/1024, perHeap, perStack, float64(g1-g0)/bigConns)
	client := p.next(t, time.Minute)
	t.Logf("client side (child process), per connection: %s", client)
	if perRSS > 16<<10 {
		t.Errorf("RSS per idle connection = %.0f B, want <= 16 KiB", perRSS)
	}
	if g := float64(g1-g0) / bigConns; g > 1.01 {
		t.Errorf("goroutines per idle connection = %.2f, want 1", g)
	}
}

// TestFanoutLatency10k measures how long a broadcast takes to reach the
// last of 10,000 subscribers over loopback TCP (client and server share the
// machine's cores, so this is an upper bound).
func TestFanoutLatency10k(t *testing.T) {
	skipUnlessBig(t)
	h, url := bigEnv(t)
	const msgs = 20
	p := startClients(t, url, bigConns, "latency", msgs)
	waitFor(t, "all subscriptions", func() bool { return h.Stats().Subscriptions == bigConns })
	var lastArrivals []time.Duration
	for seq := 1; seq <= msgs; seq++ {
		data, _ := json.Marshal(map[string]int64{"seq": int64(seq), "t": time.Now().UnixNano()})
		if err := h.Publish(context.Background(), "public:big", data); err != nil {
			t.Fatal(err)
		}
		line := p.next(t, 30*time.Second)
		var gotSeq int
		var last int64
		if _, err := fmt.Sscanf(line, "got %d %d", &gotSeq, &last); err != nil || gotSeq != seq {
			t.Fatalf("client process said %q, want got %d", line, seq)
		}
		lastArrivals = append(lastArrivals, time.Duration(last))
	}
	slices.Sort(lastArrivals)
	summary := p.next(t, 30*time.Second)
	t.Logf("time until the last of %d subscribers has a broadcast: median %v, worst %v (over %d broadcasts)",
		bigConns, lastArrivals[msgs/2], lastArrivals[msgs-1], msgs)
	t.Logf("per-subscriber delivery latency: %s", summary)
	if s := h.Stats(); s.Dropped != 0 || s.MessagesOut != bigConns*msgs {
		t.Errorf("Stats() = %+v, want %d messages out and none dropped", s, bigConns*msgs)
	}
	if med := lastArrivals[msgs/2]; med > time.Second {
		t.Errorf("median fan-out time to %d subscribers = %v, want <= 1s", bigConns, med)
	}
}

// TestHelperClients is not a test: it is the client process of the big
// tests, and skips unless started by them.
func TestHelperClients(t *testing.T) {
	url := os.Getenv("HUB_HELPER_URL")
	if url == "" {
		t.Skip("client process for the HUB_BIG tests")
	}
	n, _ := strconv.Atoi(os.Getenv("HUB_HELPER_N"))
	msgs, _ := strconv.Atoi(os.Getenv("HUB_HELPER_MSGS"))
	mode := os.Getenv("HUB_HELPER_MODE")
	raiseFileLimit(t, uint64(n)+1000)
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "HUB "+format+"\n", args...)
		out.Flush()
	}
	ms0 := settle()
	rss0 := vmRSS(t)

	conns := make([]*websocket.Conn, n)
	d := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	var failed atomic.Int64
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, _, err := d.Dial(url, nil)
			if err != nil {
				fmt.Fprintln(os.Stderr, "dial:", err)
				failed.Add(1)
				return
			}
			c.WriteJSON(map[string]string{"type": "auth", "token": "tok-alice"})
			c.WriteJSON(map[string]string{"type": "subscribe", "channel": "public:big"})
			for range 2 {
				if _, _, err := c.ReadMessage(); err != nil {
					fmt.Fprintln(os.Stderr, "read:", err)
					failed.Add(1)
					return
				}
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d clients failed", failed.Load())
	}

	switch mode {
	case "idle":
		say("ready")
		ms1 := settle()
		rss1 := vmRSS(t)
		say("RSS %.0f B, heap in use %.0f B, stacks %.0f B", float64(rss1-rss0)/float64(n),
			float64(ms1.HeapInuse-ms0.HeapInuse)/float64(n), float64(ms1.StackInuse-ms0.StackInuse)/float64(n))
	case "latency":
		counts := make([]atomic.Int64, msgs+1)
		last := make([]atomic.Int64, msgs+1)
		lat := make([][]time.Duration, n)
		for i, c := range conns {
			lat[i] = make([]time.Duration, 0, msgs)
			wg.Go(func() {
				for range msgs {
					var m struct {
						Data struct{ Seq, T int64 }
					}
					if err := c.ReadJSON(&m); err != nil {
						fmt.Fprintln(os.Stderr, "read:", err)
						return
					}
					d := time.Duration(time.Now().UnixNano() - m.Data.T)
					lat[i] = append(lat[i], d)
					for {
						old := last[m.Data.Seq].Load()
						if int64(d) <= old || last[m.Data.Seq].CompareAndSwap(old, int64(d)) {
							break
						}
					}
					if counts[m.Data.Seq].Add(1) == int64(n) {
						say("got %d %d", m.Data.Seq, last[m.Data.Seq].Load())
					}
				}
			})
		}
		say("ready")
		wg.Wait()
		all := slices.Concat(lat...)
		slices.Sort(all)
		if len(all) > 0 {
			say("p50 %v, p99 %v, max %v over %d deliveries", all[len(all)/2], all[len(all)*99/100], all[len(all)-1], len(all))
		}
	}
	io.Copy(io.Discard, os.Stdin) // until the parent is done
	for _, c := range conns {
		c.Close()
	}
}
