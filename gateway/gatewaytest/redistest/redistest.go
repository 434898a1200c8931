// Package redistest starts real redis-server processes for tests.
//
// Tests that need Redis call [Start], which runs a private redis-server on a
// free loopback port with persistence off and stops it when the test ends.
// The server can be stopped, frozen and restarted mid-test to exercise
// failure handling against a real process rather than a mock.
//
// When redis-server is not installed, [Start] skips the test, unless the
// environment variable CI is "true": in CI a missing server is a broken
// build image and must fail loudly instead of silently skipping coverage.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is the redis-server executable looked up on PATH.
const Binary = "redis-server"

// startTimeout bounds how long Start waits for a new server to answer PING.
const startTimeout = 5 * time.Second

// Server is a running (or stopped) redis-server owned by one test.
// Its methods are safe for concurrent use.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	// URL is a redis:// URL for database 0 of the server.
	URL string

	tb  testing.TB
	bin string
	dir string

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of redis-server. A goroutine waits for it so that an
// early exit is noticed while Start polls; Stop ends both.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // exit status, valid after done
}

// Start starts a redis-server on a free 127.0.0.1 port with no persistence,
// waits until it answers PING and registers a cleanup that stops it.
// It skips tb when redis-server is not installed, or fails it when the
// environment variable CI is "true".
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("redistest: %s not found on PATH and CI=true: %v", Binary, err)
		}
		tb.Skipf("redistest: %s not installed: %v", Binary, err)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir()}
	tb.Cleanup(s.Stop)

	// The port is chosen by binding :0 and releasing it, so another process
	// may grab it before redis-server binds; a few attempts make that race
	// harmless.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: find free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.URL = "redis://" + s.Addr + "/0"
		s.mu.Lock()
		lastErr = s.startLocked()
		s.mu.Unlock()
		if lastErr == nil {
			return s
		}
	}
	tb.Fatalf("redistest: %v", lastErr)
	return nil
}

// Stop kills the server by PID and waits for it to exit. Data is lost.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart starts the server again on the same port, stopping it first if it
// is running, and waits until it answers PING. The new server starts empty.
// It fails the test if the server cannot be started.
func (s *Server) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	if err := s.startLocked(); err != nil {
		s.tb.Fatalf("redistest: restart: %v", err)
	}
}

// Pause freezes the server with SIGSTOP: connections stay open and the
// kernel still accepts new ones, but nothing is answered — the shape of a
// hung or partitioned Redis, which is harder on clients than a dead one.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume lets a paused server continue with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.tb.Fatalf("redistest: signal %v: server is stopped", sig)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("redistest: signal %v: %v", sig, err)
	}
}

func (s *Server) stopLocked() {
	if s.proc == nil {
		return
	}
	// SIGKILL also ends a paused (SIGSTOPped) process.
	_ = s.proc.cmd.Process.Kill()
	<-s.proc.done
	s.proc = nil
}

func (s *Server) startLocked() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	logFile := filepath.Join(s.dir, "redis.log")
	cmd := exec.Command(s.bin,
		"--port", port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", logFile,
		"--daemonize", "no",
	)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	deadline := time.Now().Add(startTimeout)
	// Compare the PID the server reports with ours: if another process won
	// the race for the port, its answers must not pass for our server's.
	for serverPID(s.Addr) != cmd.Process.Pid {
		select {
		case <-p.done:
			return fmt.Errorf("%s on %s exited early (%v): %s", s.bin, s.Addr, p.err, tail(logFile))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("%s on %s did not answer PING within %v: %s", s.bin, s.Addr, startTimeout, tail(logFile))
		}
	}
	s.proc = p
	return nil
}

// serverPID asks the server on addr for its process id; it returns 0 when
// the server does not answer (yet).
func serverPID(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return 0
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") {
		return 0 // e.g. "-LOADING" while the server starts
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil || n <= 0 {
		return 0
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			pid, _ := strconv.Atoi(strings.TrimSpace(v))
			return pid
		}
	}
	return 0
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the end of the server log for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}
