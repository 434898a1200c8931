package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pyairtable/api-gateway/gateway/hub"
)

// pipeListener is an in-memory net.Listener: Dial returns one end of a
// net.Pipe and Accept the other. It lets a benchmark run 10,000 full
// WebSocket connections (handshake, gorilla framing, the hub's goroutines)
// without 20,000 file descriptors.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// fanoutRig is a hub with n subscribers on channel "public:bench", each a
// real WebSocket connection over a pipe. After subscribing, a client reads
// raw bytes and only counts them, so the benchmark measures the hub and
// not client-side decoding.
type fanoutRig struct {
	hub    *hub.Hub
	bytes  atomic.Int64 // received by all clients
	target atomic.Int64 // bytes at which done is signalled
	done   chan struct{}
	stop   func()
}

func newFanoutRig(tb testing.TB, n int, tcp bool) *fanoutRig {
	tb.Helper()
	h, err := hub.New(hub.Settings{Verify: verify})
	if err != nil {
		tb.Fatal(err)
	}
	var l net.Listener
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if tcp {
		raiseFileLimit(tb, uint64(2*n+200))
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			tb.Fatal(err)
		}
	} else {
		pl := newPipeListener()
		l, d.NetDialContext = pl, pl.DialContext
	}
	url := "ws://" + l.Addr().String() + "/"
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	r := &fanoutRig{hub: h, done: make(chan struct{}, 1)}
	r.target.Store(-1)
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, _, err := d.Dial(url, nil)
			if err != nil {
				errs <- err
				return
			}
			c.WriteJSON(map[string]string{"type": "auth", "token": "tok-alice"})
			c.WriteJSON(map[string]string{"type": "subscribe", "channel": "public:bench"})
			for range 2 {
				if _, _, err := c.ReadMessage(); err != nil {
					errs <- err
					return
				}
			}
			conns[i] = c.UnderlyingConn()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	var readers sync.WaitGroup
	for _, nc := range conns {
		readers.Go(func() {
			buf := make([]byte, 4096)
			for {
				k, err := nc.Read(buf)
				if k > 0 && r.bytes.Add(int64(k)) == r.target.Load() {
					r.done <- struct{}{}
				}
				if err != nil {
					return
				}
			}
		})
	}
	r.stop = func() {
		for _, nc := range conns {
			nc.Close()
		}
		readers.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		srv.Close()
	}
	return r
}

// frameLen is the size of a server frame carrying payload bytes.
func frameLen(payload int) int64 {
	switch {
	case payload < 126:
		return int64(2 + payload)
	case payload < 1<<16:
		return int64(4 + payload)
	}
	return int64(10 + payload)
}

// BenchmarkFanout publishes one message to n subscribers per op and waits
// until every subscriber has received all of its bytes: ns/op is the
// fan-out latency. Connections are in-memory pipes, so 10,000 fit in the
// file-descriptor limit; net.Pipe allocates two timers per write deadline,
// which real sockets do not (see BenchmarkFanoutTCP for allocs/op without
// that artefact).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchFanout(b, n, false) })
	}
}

// BenchmarkFanoutTCP is BenchmarkFanout over loopback TCP.
func BenchmarkFanoutTCP(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchFanout(b, n, true) })
	}
}

func benchFanout(b *testing.B, n int, tcp bool) {
	data := json.RawMessage(`{"event":"order.created","id":12345,"total":"99.90"}`)
	envelope := len(`{"type":"message","channel":"public:bench","data":}`) + len(data)
	r := newFanoutRig(b, n, tcp)
	defer r.stop()
	per := frameLen(envelope) * int64(n)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r.target.Store(per * int64(i+1))
		if err := r.hub.Publish(ctx, "public:bench", data); err != nil {
			b.Fatal(err)
		}
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			b.Fatalf("op %d: %d of %d bytes delivered", i, r.bytes.Load(), per*int64(i+1))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/subscriber")
}

// BenchmarkPublishNoSubscribers is the cost of a broadcast on a channel
// nobody here listens to — the common case for a replica receiving every
// backplane message.
func BenchmarkPublishNoSubscribers(b *testing.B) {
	h, err := hub.New(hub.Settings{Verify: verify})
	if err != nil {
		b.Fatal(err)
	}
	data := json.RawMessage(`{"id":1}`)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Publish(ctx, "public:nobody", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDefaultAuthorize(b *testing.B) {
	id := hub.Identity{Subject: "alice", Roles: []string{"viewer", "editor"}, Tenant: "acme"}
	b.ReportAllocs()
	for b.Loop() {
		if !hub.DefaultAuthorize(id, "role:editor:drafts") {
			b.Fatal(errors.New("denied"))
		}
	}
}
