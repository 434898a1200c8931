package config_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/config"
	"github.com/pyairtable/api-gateway/gateway/gatewaytest"
)

// reloadFixture serves a gateway built from a file, with a Reloader.
type reloadFixture struct {
	path     string
	g        *gateway.Gateway
	reloader *config.Reloader
	base     string
}

func newReloadFixture(t *testing.T, yaml string) *reloadFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	opts := config.Options{Limiters: &config.Limiters{}}
	gc, err := c.Gateway(opts)
	if err != nil {
		t.Fatal(err)
	}
	gc.Logger = quiet
	g, err := gateway.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Serve(ctx, ln) }()
	t.Cleanup(func() { stop(); <-done })
	r := config.NewReloader(path, c, g, opts)
	r.Logger = quiet
	return &reloadFixture{path: path, g: g, reloader: r, base: "http://" + ln.Addr().String()}
}

func (f *reloadFixture) write(t *testing.T, yaml string) {
	t.Helper()
	tmp := f.path + ".tmp"
	os.WriteFile(tmp, []byte(yaml), 0o600)
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
}

const reloadHeader = `server:
  shutdown_delay: 0s
security:
  rate_limit:
    enabled: true
    per_ip_limit: %d
    window: 1m
`

// TestReloadUnderLoad reloads the configuration 20 times under steady load,
// adding and removing services and instances and changing limits: no
// request fails, and every answer comes from an instance that the route's
// service had in a generation active while the request was in flight.
func TestReloadUnderLoad(t *testing.T) {
	const gens = 21
	backends := make([]*gatewaytest.Backend, gens)
	for i := range backends {
		i := i
		backends[i] = gatewaytest.NewBackend(t, fmt.Sprint(i), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(2 * time.Millisecond) // keep requests in flight across swaps
			io.WriteString(w, fmt.Sprint(i))
		}))
	}
	// Generation i (1-based in the gateway) serves /api from backends[i-1]
	// and, on odd generations, an extra service on /extra.
	gen := func(i int) string {
		s := fmt.Sprintf(reloadHeader, 100000+i) + fmt.Sprintf(`services:
  app:
    url: %q
`, backends[i].URL)
		if i%2 == 1 {
			s += fmt.Sprintf("  extra:\n    instances:\n      - url: %q\n      - url: %q\n", backends[(i+1)%gens].URL, backends[(i+2)%gens].URL)
		}
		s += "routes:\n  - prefix: /api\n    service: app\n    public: true\n"
		if i%2 == 1 {
			s += "  - prefix: /extra\n    service: extra\n    public: true\n"
		}
		return s
	}
	f := newReloadFixture(t, gen(0))
	var failed, total atomic.Int64
	var mixed atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				before := f.g.Generation()
				resp, err := client.Get(f.base + "/api/x")
				after := f.g.Generation()
				total.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				var idx int64
				fmt.Sscan(string(body), &idx)
				// Generation g (1-based) was built from gen(g-1).
				if idx < before-1 || idx > after-1 {
					mixed.Add(1)
				}
			}
		}()
	}
	for i := 1; i < gens; i++ {
		time.Sleep(25 * time.Millisecond)
		f.write(t, gen(i))
		if err := f.reloader.Reload(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	time.Sleep(25 * time.Millisecond)
	stop()
	wg.Wait()
	if failed.Load() != 0 || mixed.Load() != 0 {
		t.Errorf("%d failed and %d misrouted of %d requests across 20 reloads", failed.Load(), mixed.Load(), total.Load())
	}
	if g := f.g.Generation(); g != gens {
		t.Errorf("generation = %d, want %d", g, gens)
	}
	if total.Load() < 200 {
		t.Errorf("only %d requests: load too light", total.Load())
	}
	t.Logf("%d requests, 20 reloads, 0 failures", total.Load())
}

func TestInvalidReloadChangesNothingButTheError(t *testing.T) {
	b := gatewaytest.NewBackend(t, "app", nil)
	good := fmt.Sprintf("server:\n  shutdown_delay: 0s\nservices:\n  app:\n    url: %q\nroutes:\n  - prefix: /api\n    service: app\n    public: true\n", b.URL)
	f := newReloadFixture(t, good)
	f.write(t, strings.Replace(good, "prefix: /api", "prefix: api", 1))
	err := f.reloader.Reload()
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:7: routes[0].prefix") {
		t.Fatalf("Reload() = %v, want the file:line problem", err)
	}
	if f.g.Generation() != 1 {
		t.Errorf("generation moved to %d on a refused reload", f.g.Generation())
	}
	if resp, err := http.Get(f.base + "/api/x"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("serving after refused reload: %v %v", resp, err)
	}
	h := f.g.Health()
	if h.LastReload == nil || h.LastReload.OK || !strings.Contains(h.LastReload.Error, "routes[0].prefix") {
		t.Errorf("last reload = %+v", h.LastReload)
	}
	// Fixing the file reloads it.
	f.write(t, strings.Replace(good, "prefix: /api", "prefix: /v2", 1))
	if err := f.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	if resp, _ := http.Get(f.base + "/v2/x"); resp == nil || resp.StatusCode != 200 {
		t.Errorf("new route not served after the fix")
	}
	if h := f.g.Health(); !h.LastReload.OK || f.g.Generation() != 2 {
		t.Errorf("after fix: %+v generation %d", h.LastReload, f.g.Generation())
	}
}

func TestStateSurvivesReload(t *testing.T) {
	var code atomic.Int32
	code.Store(500)
	b := gatewaytest.NewBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(code.Load())) }))
	other := gatewaytest.NewBackend(t, "other", nil)
	cfg := func(extra string) string {
		return fmt.Sprintf(`server:
  shutdown_delay: 0s
security:
  rate_limit:
    enabled: true
    per_ip_limit: 8
    window: 1m
services:
  app:
    url: %q
    retry_count: 0
    outlier_detection: {enabled: false}
    circuit_breaker: {consecutive_failures: 3, open_timeout: 1m}
%s
routes:
  - prefix: /api
    service: app
    public: true
`, b.URL, extra)
	}
	f := newReloadFixture(t, cfg(""))
	for i := 0; i < 3; i++ {
		resp, _ := http.Get(f.base + "/api/x")
		resp.Body.Close()
	}
	resp, _ := http.Get(f.base + "/api/x")
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("breaker not open before reload: %d", resp.StatusCode)
	}
	// Reload with an added service: the breaker of app stays open and the
	// client's rate-limit counter (4 of 8 used) carries over.
	f.write(t, cfg(fmt.Sprintf("  other:\n    url: %q", other.URL)))
	if err := f.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	code.Store(200)
	hits := b.Hits()
	statuses := []int{}
	for i := 0; i < 6; i++ {
		resp, _ := http.Get(f.base + "/api/x")
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if b.Hits() != hits {
		t.Errorf("breaker closed by the reload: backend got %d requests", b.Hits()-hits)
	}
	want := []int{503, 503, 503, 503, 429, 429}
	if fmt.Sprint(statuses) != fmt.Sprint(want) {
		t.Errorf("after reload statuses %v, want %v (breaker still open, then the rate limit carried over)", statuses, want)
	}
}
