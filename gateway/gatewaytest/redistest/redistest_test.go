package redistest_test

import (
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pyairtable/api-gateway/gateway/gatewaytest/redistest"
)

// roundTrip sends PING on a fresh connection and reports whether +PONG came
// back within timeout.
func roundTrip(t *testing.T, addr string, timeout time.Duration) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "+PONG\r\n"
}

func TestServerLifecycle(t *testing.T) {
	base := runtime.NumGoroutine()
	s := redistest.Start(t)
	if s.URL != "redis://"+s.Addr+"/0" {
		t.Errorf("URL = %q, want redis://%s/0", s.URL, s.Addr)
	}
	if host, _, _ := net.SplitHostPort(s.Addr); host != "127.0.0.1" {
		t.Errorf("Addr = %q, want a 127.0.0.1 address", s.Addr)
	}
	steps := []struct {
		name  string
		do    func()
		alive bool
	}{
		{"started", func() {}, true},
		{"paused", s.Pause, false},
		{"resumed", s.Resume, true},
		{"stopped", s.Stop, false},
		{"stopped twice", s.Stop, false},
		{"restarted", s.Restart, true},
		{"restarted while running", s.Restart, true},
		{"paused then stopped", func() { s.Pause(); s.Stop() }, false},
		{"restarted after pause", s.Restart, true},
	}
	addr := s.Addr
	for _, st := range steps {
		st.do()
		if got := roundTrip(t, s.Addr, 300*time.Millisecond); got != st.alive {
			t.Errorf("%s: PING answered = %v, want %v", st.name, got, st.alive)
		}
		if s.Addr != addr {
			t.Errorf("%s: Addr = %q, want the original %q", st.name, s.Addr, addr)
		}
	}
	s.Stop()
	waitGoroutines(t, base)
}

func TestServersAreIndependent(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr == b.Addr {
		t.Fatalf("two servers share Addr %q", a.Addr)
	}
	a.Stop()
	if !roundTrip(t, b.Addr, 300*time.Millisecond) {
		t.Errorf("stopping one server stopped the other")
	}
}

// recorder is a testing.TB that records Skip/Fatal instead of acting on the
// real test, so the missing-binary paths can be observed.
type recorder struct {
	testing.TB
	mu      sync.Mutex
	skipped bool
	failed  bool
}

func (r *recorder) Skipf(string, ...any) {
	r.mu.Lock()
	r.skipped = true
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Fatalf(string, ...any) {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	runtime.Goexit()
}

func TestMissingBinary(t *testing.T) {
	tests := []struct {
		ci          string
		wantSkipped bool
		wantFailed  bool
	}{
		{ci: "", wantSkipped: true},
		{ci: "false", wantSkipped: true},
		{ci: "true", wantFailed: true},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				redistest.Start(r)
			}()
			<-done
			if r.skipped != tt.wantSkipped || r.failed != tt.wantFailed {
				t.Errorf("Start() skipped=%v failed=%v, want skipped=%v failed=%v",
					r.skipped, r.failed, tt.wantSkipped, tt.wantFailed)
			}
		})
	}
}

// waitGoroutines fails t unless the goroutine count drops back to base
// within a second; the server's wait goroutine must end with Stop.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines = %d, want <= %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
