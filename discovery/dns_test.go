package discovery

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a tiny authoritative UDP DNS server on 127.0.0.1 whose
// records tests change while a Watch runs.
type dnsServer struct {
	pc      net.PacketConn
	queries atomic.Int64

	mu       sync.Mutex
	a        map[string][]netip.Addr // fully qualified, lower case
	srv      map[string][]net.SRV
	servfail bool
}

func newDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{pc: pc, a: map[string][]netip.Addr{}, srv: map[string][]net.SRV{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := s.answer(buf[:n]); resp != nil {
				_, _ = pc.WriteTo(resp, addr)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

func (s *dnsServer) resolver() *net.Resolver {
	addr := s.pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func (s *dnsServer) setA(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if addrs == nil {
		delete(s.a, name)
		return
	}
	s.a[name] = nil
	for _, a := range addrs {
		s.a[name] = append(s.a[name], netip.MustParseAddr(a))
	}
}

func (s *dnsServer) setSRV(name string, recs ...net.SRV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[name] = recs
}

func (s *dnsServer) setServfail(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servfail = on
}

func (s *dnsServer) answer(msg []byte) []byte {
	s.queries.Add(1)
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.ToLower(q.Name.String())

	s.mu.Lock()
	addrs, hasA := s.a[name]
	srvs, hasSRV := s.srv[name]
	servfail := s.servfail
	s.mu.Unlock()

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	switch {
	case servfail:
		rh.RCode = dnsmessage.RCodeServerFailure
	case !hasA && !hasSRV:
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	if rh.RCode == dnsmessage.RCodeSuccess {
		switch q.Type {
		case dnsmessage.TypeA:
			for _, a := range addrs {
				if a.Is4() {
					_ = b.AResource(hdr, dnsmessage.AResource{A: a.As4()})
				}
			}
		case dnsmessage.TypeAAAA:
			for _, a := range addrs {
				if a.Is6() {
					_ = b.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: a.As16()})
				}
			}
		case dnsmessage.TypeSRV:
			for _, r := range srvs {
				_ = b.SRVResource(hdr, dnsmessage.SRVResource{Priority: r.Priority, Weight: r.Weight,
					Port: r.Port, Target: dnsmessage.MustNewName(r.Target)})
			}
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

func TestDNSA(t *testing.T) {
	leakCheck(t)
	s := newDNSServer(t)
	s.setA("api.test.", "10.0.0.2", "10.0.0.1", "::1")
	ch := watch(t, &DNS{Name: "api.test.", Port: 8080, Interval: 20 * time.Millisecond, Resolver: s.resolver()})

	if got, want := urls(recv(t, ch)), "http://10.0.0.1:8080 http://10.0.0.2:8080 http://[::1]:8080"; got != want {
		t.Fatalf("first set = %q, want %q", got, want)
	}

	// Several intervals with no change: nothing is sent.
	q := s.queries.Load()
	for s.queries.Load() < q+6 {
		time.Sleep(5 * time.Millisecond)
	}
	noRecv(t, ch, 20*time.Millisecond)

	s.setA("api.test.", "10.0.0.2", "10.0.0.3")
	recvWant(t, ch, []Endpoint{{URL: "http://10.0.0.2:8080", Weight: 1}, {URL: "http://10.0.0.3:8080", Weight: 1}})

	s.setA("api.test.") // NXDOMAIN: the service has no instances
	recvWant(t, ch, []Endpoint{})
}

func TestDNSDefaultPortAndScheme(t *testing.T) {
	leakCheck(t)
	s := newDNSServer(t)
	s.setA("web.test.", "192.0.2.7")
	ch := watch(t, &DNS{Name: "web.test.", Scheme: "HTTPS", Interval: time.Hour, Resolver: s.resolver()})
	if got, want := urls(recv(t, ch)), "https://192.0.2.7:443"; got != want {
		t.Fatalf("set = %q, want %q", got, want)
	}
}

func TestDNSSRV(t *testing.T) {
	leakCheck(t)
	s := newDNSServer(t)
	const owner = "_http._tcp.api.svc.test."
	s.setSRV(owner,
		net.SRV{Target: "b.api.svc.test.", Port: 8081, Priority: 10, Weight: 0},
		net.SRV{Target: "a.api.svc.test.", Port: 8080, Priority: 10, Weight: 5},
		net.SRV{Target: "backup.api.svc.test.", Port: 9000, Priority: 20, Weight: 1},
	)
	ch := watch(t, &DNS{Name: "api.svc.test.", SRV: true, Service: "http", Proto: "tcp",
		Interval: 20 * time.Millisecond, Resolver: s.resolver()})

	want := []Endpoint{{URL: "http://a.api.svc.test:8080", Weight: 5}, {URL: "http://b.api.svc.test:8081", Weight: 1}}
	if got := recv(t, ch); !equal(got, want) {
		t.Fatalf("first set = %v, want %v", got, want)
	}

	// The preferred priority empties: the backups take over.
	s.setSRV(owner, net.SRV{Target: "backup.api.svc.test.", Port: 9000, Priority: 20, Weight: 1})
	recvWant(t, ch, []Endpoint{{URL: "http://backup.api.svc.test:9000", Weight: 1}})

	s.setSRV(owner,
		net.SRV{Target: "backup.api.svc.test.", Port: 9000, Priority: 20, Weight: 1},
		net.SRV{Target: "c.api.svc.test.", Port: 8080, Priority: 20, Weight: 1})
	recvWant(t, ch, []Endpoint{{URL: "http://backup.api.svc.test:9000", Weight: 1}, {URL: "http://c.api.svc.test:8080", Weight: 1}})
}

func TestDNSSRVFullName(t *testing.T) {
	leakCheck(t)
	s := newDNSServer(t)
	s.setSRV("_grpc._tcp.x.test.", net.SRV{Target: "x1.test.", Port: 7000, Priority: 1, Weight: 1})
	ch := watch(t, &DNS{Name: "_grpc._tcp.x.test.", SRV: true, Interval: time.Hour, Resolver: s.resolver()})
	if got, want := urls(recv(t, ch)), "http://x1.test:7000"; got != want {
		t.Fatalf("set = %q, want %q", got, want)
	}
}

func TestDNSErrorKeepsLastSet(t *testing.T) {
	leakCheck(t)
	s := newDNSServer(t)
	s.setA("api.test.", "10.0.0.1")
	ch := watch(t, &DNS{Name: "api.test.", Port: 80, Interval: 20 * time.Millisecond,
		Resolver: s.resolver(), Logger: discardLogger()})
	if got, want := urls(recv(t, ch)), "http://10.0.0.1:80"; got != want {
		t.Fatalf("first set = %q, want %q", got, want)
	}

	s.setServfail(true)
	q := s.queries.Load()
	for s.queries.Load() < q+6 {
		time.Sleep(5 * time.Millisecond)
	}
	noRecv(t, ch, 20*time.Millisecond)

	s.setA("api.test.", "10.0.0.9")
	s.setServfail(false)
	recvWant(t, ch, []Endpoint{{URL: "http://10.0.0.9:80", Weight: 1}})
}

func TestDNSInvalidSettings(t *testing.T) {
	tests := []struct {
		name string
		d    DNS
	}{
		{"scheme", DNS{Name: "a.test.", Scheme: "ftp"}},
		{"port", DNS{Name: "a.test.", Port: 70000}},
		{"name", DNS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Watch(context.Background(), make(chan []Endpoint, 1))
			if !errors.Is(err, ErrInvalidEndpoint) {
				t.Fatalf("Watch() = %v, want ErrInvalidEndpoint", err)
			}
		})
	}
}
