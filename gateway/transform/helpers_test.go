package transform

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// testVars is a Vars with fixed values that counts its calls, so tests can
// check each variable is resolved at most once per Apply.
type testVars struct {
	id, ip, subject, tenant, route string
	calls                          map[string]int
}

func newVars() *testVars {
	return &testVars{id: "req-1", ip: "203.0.113.7", subject: "alice", tenant: "acme", route: "users", calls: map[string]int{}}
}

func (v *testVars) count(name string) {
	if v.calls != nil {
		v.calls[name]++
	}
}

func (v *testVars) RequestID(*http.Request) string { v.count("request_id"); return v.id }
func (v *testVars) ClientIP(*http.Request) string  { v.count("client_ip"); return v.ip }
func (v *testVars) Subject(*http.Request) string   { v.count("subject"); return v.subject }
func (v *testVars) Tenant(*http.Request) string    { v.count("tenant"); return v.tenant }
func (v *testVars) Route(*http.Request) string     { v.count("route"); return v.route }

// fixedVars is a stateless Vars, safe for concurrent use by test servers.
type fixedVars struct{}

func (fixedVars) RequestID(*http.Request) string { return "req-e2e" }
func (fixedVars) ClientIP(*http.Request) string  { return "198.51.100.1" }
func (fixedVars) Subject(*http.Request) string   { return "bob" }
func (fixedVars) Tenant(*http.Request) string    { return "globex" }
func (fixedVars) Route(*http.Request) string     { return "avatars" }

func mustCompile(tb testing.TB, s Spec) *Transform {
	tb.Helper()
	t, probs := Compile(s)
	if len(probs) > 0 {
		tb.Fatalf("Compile() problems = %v, want none", probs)
	}
	return t
}

// checkLeaks fails t if goroutines started during the test outlive it.
// Call it first, so its cleanup runs after the servers' cleanups.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if err := settleGoroutines(before); err != nil {
			t.Error(err)
		}
	})
}

func settleGoroutines(want int) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("goroutines = %d, want <= %d (leak)\n%s", n, want, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
