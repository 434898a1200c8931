package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
)

func keyRequest(key string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-User", key)
	return r
}

// mapKeys returns the instance each key maps to with no load.
func mapKeys(t *testing.T, b *ConsistentHash, pool []*Instance, keys []string) []*Instance {
	t.Helper()
	got := make([]*Instance, len(keys))
	for i, k := range keys {
		in, err := b.Pick(keyRequest(k), pool)
		if err != nil {
			t.Fatalf("Pick(%q) error = %v", k, err)
		}
		got[i] = in
	}
	return got
}

func testKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
	}
	return keys
}

// clientRequest returns a request to target from remote with an X-User
// header, if user is not empty.
func clientRequest(target, remote, user string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = remote
	if user != "" {
		r.Header.Set("X-User", user)
	}
	return r
}

func TestConsistentHashKeys(t *testing.T) {
	pool := makePool(t, 5)
	tests := []struct {
		name   string
		b      *ConsistentHash
		r1, r2 *http.Request // must map alike
	}{
		{"client IP, other port", &ConsistentHash{},
			clientRequest("/", "198.51.100.7:1111", "a"), clientRequest("/", "198.51.100.7:2222", "b")},
		{"IPv6 client", &ConsistentHash{},
			clientRequest("/", "[2001:db8::1]:1111", ""), clientRequest("/", "[2001:db8::1]:2222", "")},
		{"header, other client", &ConsistentHash{Header: "x-user"},
			clientRequest("/", "198.51.100.7:1", "alice"), clientRequest("/", "203.0.113.9:1", "alice")},
		{"missing header falls back to client IP", &ConsistentHash{Header: "X-Tenant"},
			clientRequest("/", "198.51.100.7:1", "a"), clientRequest("/", "198.51.100.7:2", "b")},
		{"KeyFunc", &ConsistentHash{KeyFunc: func(r *http.Request) string { return r.URL.Query().Get("k") }},
			clientRequest("/?k=7", "198.51.100.7:1", ""), clientRequest("/x?k=7", "203.0.113.9:1", "")},
	}
	for _, tt := range tests {
		for range 20 {
			a, _ := tt.b.Pick(tt.r1, pool)
			b, _ := tt.b.Pick(tt.r2, pool)
			if a != b {
				t.Fatalf("%s: Pick() = %v and %v, want the same instance", tt.name, a, b)
			}
		}
	}
	// Different keys spread over the instances.
	got := mapKeys(t, &ConsistentHash{Header: "X-User"}, pool, testKeys(10000))
	counts := map[*Instance]int{}
	for _, in := range got {
		counts[in]++
	}
	for _, in := range pool {
		if c := counts[in]; c < 1200 || c > 2800 {
			t.Errorf("instance %v holds %d of 10000 keys, want 2000±800", in, c)
		}
	}
}

func TestConsistentHashRemovalMovesOnlyItsKeys(t *testing.T) {
	keys := testKeys(10000)
	pool := makePool(t, 5, 1, 2, 1, 1, 3)
	b := &ConsistentHash{Header: "X-User"}
	before := mapKeys(t, b, pool, keys)
	gone := pool[1]

	// Removed from the pool, or out of rotation: the same keys move.
	without := append(append([]*Instance(nil), pool[:1]...), pool[2:]...)
	afterRemoval := mapKeys(t, b, without, keys)
	gone.SetFlag(Unhealthy, true)
	afterFlag := mapKeys(t, b, pool, keys)
	gone.SetFlag(Unhealthy, false)

	moved := 0
	for i := range keys {
		if before[i] == gone {
			moved++
			if afterRemoval[i] == gone || afterFlag[i] == gone {
				t.Fatalf("key %q still maps to the removed instance", keys[i])
			}
		} else if afterRemoval[i] != before[i] || afterFlag[i] != before[i] {
			t.Fatalf("key %q moved from %v to %v / %v though its instance stayed", keys[i], before[i], afterRemoval[i], afterFlag[i])
		}
		if afterRemoval[i] != afterFlag[i] {
			t.Fatalf("key %q: %v after removal, %v when unavailable; want the same", keys[i], afterRemoval[i], afterFlag[i])
		}
	}
	// Weight 2 of 8: about a quarter of the keys were on it.
	if moved < 1500 || moved > 3500 {
		t.Errorf("%d of 10000 keys were on the weight-2 instance, want about 2500", moved)
	}
	// And back: the original mapping returns.
	if again := mapKeys(t, b, pool, keys); fmt.Sprint(again) != fmt.Sprint(before) {
		t.Errorf("after the instance came back, the mapping differs from the original")
	}
	// A ring built from the pool in another order maps alike (every gateway
	// replica agrees).
	rev := []*Instance{pool[4], pool[3], pool[2], pool[1], pool[0]}
	if other := mapKeys(t, &ConsistentHash{Header: "X-User"}, rev, keys); fmt.Sprint(other) != fmt.Sprint(before) {
		t.Errorf("a ring from the reversed pool maps keys differently")
	}
}

// TestConsistentHashBoundedLoad offers a Zipf-skewed key stream with load
// tracked by Begin/End, and checks the bound at every placement: the chosen
// instance holds at most ceil(c × mean) requests in flight. Without the
// bound (c huge) the hot keys overload their instance, so the check bites.
func TestConsistentHashBoundedLoad(t *testing.T) {
	tests := []struct {
		name      string
		c         float64
		wantBound bool
	}{
		{"c=1.25 (default)", 0, true},
		{"c=1.5", 1.5, true},
		{"unbounded", 1e9, false},
	}
	for _, tt := range tests {
		pool := makePool(t, 5)
		b := &ConsistentHash{Header: "X-User", LoadFactor: tt.c}
		c := tt.c // the bound checked; the control is held to the default
		if c == 0 || !tt.wantBound {
			c = 1.25
		}
		rng := rand.New(rand.NewPCG(7, 8))
		zipf := rand.NewZipf(rng, 1.2, 1, 999)
		reqs := make([]*http.Request, 1000)
		for i := range reqs {
			reqs[i] = keyRequest(fmt.Sprint("key-", i))
		}
		type req struct {
			in   *Instance
			done int
		}
		var pending []req
		worst := 0.0
		for tick := range 10000 {
			kept := pending[:0]
			for _, p := range pending {
				if p.done > tick {
					kept = append(kept, p)
				} else {
					p.in.End(0, false, testClockStart)
				}
			}
			pending = kept
			in, err := b.Pick(reqs[zipf.Uint64()], pool)
			if err != nil {
				t.Fatal(err)
			}
			in.Begin()
			pending = append(pending, req{in, tick + 20 + rng.IntN(20)})
			total := 0
			for _, p := range pool {
				total += int(p.InFlight())
			}
			bound := math.Ceil(c * float64(total) / float64(len(pool)))
			worst = max(worst, float64(in.InFlight())/bound)
			if tt.wantBound && float64(in.InFlight()) > bound {
				t.Fatalf("%s: tick %d: placed on %v with %d in flight, bound ceil(%.2f × %d/%d) = %v", tt.name, tick, in, in.InFlight(), c, total, len(pool), bound)
			}
		}
		if !tt.wantBound && worst <= 1 {
			t.Errorf("%s: worst load / bound = %.2f; the skewed stream should exceed the bound without it", tt.name, worst)
		}
	}
}

func TestConsistentHashRebuildsOnlyOnChange(t *testing.T) {
	b := &ConsistentHash{}
	pool := makePool(t, 4)
	b.Pick(nil, pool)
	ring := b.ring.Load()
	b.Pick(nil, append([]*Instance(nil), pool...)) // same members, new slice
	if b.ring.Load() != ring {
		t.Errorf("ring rebuilt for an equal pool")
	}
	b.Pick(nil, pool[:3])
	if b.ring.Load() == ring {
		t.Errorf("ring not rebuilt after a member left")
	}
}
