package balancer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a real HTTP server on 127.0.0.1 and its instance.
type backend struct {
	srv  *httptest.Server
	in   *Instance
	hits atomic.Int64
	// hold, when set, makes requests wait for the channel to close.
	hold chan struct{}
}

// startBackends starts one server per weight. Each answers with its name.
func startBackends(t *testing.T, weights ...int) []*backend {
	t.Helper()
	bs := make([]*backend, len(weights))
	for i, w := range weights {
		be := &backend{}
		name := string(rune('a' + i))
		be.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			be.hits.Add(1)
			if be.hold != nil {
				select {
				case <-be.hold:
				case <-r.Context().Done():
				}
			}
			io.WriteString(w, name)
		}))
		t.Cleanup(be.srv.Close)
		be.in = MustInstance(be.srv.URL, w)
		bs[i] = be
	}
	return bs
}

func instancesOf(bs []*backend) []*Instance {
	pool := make([]*Instance, len(bs))
	for i, be := range bs {
		pool[i] = be.in
	}
	return pool
}

// picked travels from Rewrite to the transport and ModifyResponse.
type picked struct {
	in     *Instance
	cookie *http.Cookie
}

type pickedKey struct{}

// beginEnd is the transport wrapper of the gateway in miniature: it
// brackets every upstream attempt with Begin and End.
type beginEnd struct{ base http.RoundTripper }

func (t beginEnd) RoundTrip(req *http.Request) (*http.Response, error) {
	p := req.Context().Value(pickedKey{}).(*picked)
	if p.in == nil {
		return nil, ErrNoInstance
	}
	p.in.Begin()
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	p.in.End(time.Since(start), err != nil || resp.StatusCode >= 500, time.Now())
	return resp, err
}

// startProxy starts a reverse proxy on 127.0.0.1 that balances over pool()
// with b: Rewrite picks, the transport calls Begin and End, and a sticky
// balancer's cookie is added to the response.
func startProxy(t *testing.T, b Balancer, pool func() []*Instance) *httptest.Server {
	t.Helper()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			p := &picked{}
			var err error
			if s, ok := b.(Sticky); ok {
				p.in, p.cookie, err = s.PickSticky(pr.In, pool())
			} else {
				p.in, err = b.Pick(pr.In, pool())
			}
			if err == nil {
				pr.SetURL(p.in.URL)
			}
			pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), pickedKey{}, p))
			pr.SetXForwarded()
		},
		Transport: beginEnd{transport},
		ModifyResponse: func(resp *http.Response) error {
			if c := resp.Request.Context().Value(pickedKey{}).(*picked).cookie; c != nil {
				resp.Header.Add("Set-Cookie", c.String())
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code := http.StatusBadGateway
			if errors.Is(err, ErrNoInstance) {
				code = http.StatusServiceUnavailable
			}
			http.Error(w, err.Error(), code)
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t *testing.T, jar http.CookieJar) *http.Client {
	t.Helper()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	return &http.Client{Transport: transport, Jar: jar, Timeout: 10 * time.Second}
}

// get sends a GET and returns the body (the backend's name) and response.
func get(t *testing.T, c *http.Client, req *http.Request) (string, *http.Response) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %q, %v; want 200", req.URL, resp.StatusCode, body, err)
	}
	return string(body), resp
}

func TestProxyWeightedRoundRobin(t *testing.T) {
	checkNoGoroutineLeak(t)
	bs := startBackends(t, 5, 3, 2)
	pool := instancesOf(bs)
	proxy := startProxy(t, &WeightedRoundRobin{}, func() []*Instance { return pool })
	c := newClient(t, nil)
	for range 1000 {
		req, _ := http.NewRequest(http.MethodGet, proxy.URL, nil)
		get(t, c, req)
	}
	for i, want := range []int64{500, 300, 200} {
		if got := bs[i].hits.Load(); got != want {
			t.Errorf("backend %c served %d of 1000, want %d", 'a'+i, got, want)
		}
		if f := bs[i].in.InFlight(); f != 0 {
			t.Errorf("backend %c: InFlight() = %d after all requests, want 0", 'a'+i, f)
		}
	}
}

func TestProxyLeastConnections(t *testing.T) {
	checkNoGoroutineLeak(t)
	bs := startBackends(t, 1, 1, 1)
	idle, stuck := bs[0], bs[1:]
	for _, be := range stuck {
		be.hold = make(chan struct{})
	}
	pool := instancesOf(bs)
	proxy := startProxy(t, &LeastConnections{}, func() []*Instance { return pool })
	c := newClient(t, nil)

	// Load the two slow backends with requests that hang, while the idle
	// one is out of rotation.
	idle.in.SetFlag(Draining, true)
	var hung sync.WaitGroup
	t.Cleanup(hung.Wait) // runs after the holds are released below
	for range 6 {
		hung.Go(func() {
			resp, err := c.Get(proxy.URL)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	t.Cleanup(func() {
		for _, be := range stuck {
			close(be.hold)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for stuck[0].in.InFlight()+stuck[1].in.InFlight() < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight on the slow backends: %d and %d, want 6 in all", stuck[0].in.InFlight(), stuck[1].in.InFlight())
		}
		time.Sleep(time.Millisecond)
	}
	idle.in.SetFlag(Draining, false)

	before := idle.hits.Load()
	for range 100 {
		req, _ := http.NewRequest(http.MethodGet, proxy.URL, nil)
		get(t, c, req)
	}
	if got := idle.hits.Load() - before; got < 80 {
		t.Errorf("idle backend served %d of 100 new requests while the others were stuck, want >= 80", got)
	}
}
