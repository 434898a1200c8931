package discovery

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakCheck fails the test if goroutines started during it are still alive
// at the end. Call it first so that its cleanup runs last.
func leakCheck(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("NumGoroutine() = %d, want <= %d (leak)\n%s", n, base, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// watch runs src.Watch in a goroutine. The cleanup cancels it and checks
// that it returned context.Canceled.
func watch(t *testing.T, src Source) <-chan []Endpoint {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []Endpoint)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, ch) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch() = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Watch did not return after cancel")
		}
	})
	return ch
}

func recv(t *testing.T, ch <-chan []Endpoint) []Endpoint {
	t.Helper()
	select {
	case eps := <-ch:
		return eps
	case <-time.After(5 * time.Second):
		t.Fatalf("no endpoint set received within 5s")
		return nil
	}
}

// recvWant waits for a set equal to want, skipping intermediate sets (a
// poll may land between two steps of a test's change).
func recvWant(t *testing.T, ch <-chan []Endpoint, want []Endpoint) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	var got []Endpoint
	for {
		select {
		case got = <-ch:
			if equal(got, want) {
				return
			}
		case <-deadline:
			t.Fatalf("endpoint set = %v, want %v", got, want)
		}
	}
}

func noRecv(t *testing.T, ch <-chan []Endpoint, d time.Duration) {
	t.Helper()
	select {
	case eps := <-ch:
		t.Fatalf("unexpected endpoint set %v", eps)
	case <-time.After(d):
	}
}

func urls(eps []Endpoint) string {
	s := make([]string, len(eps))
	for i, e := range eps {
		s[i] = e.URL
	}
	return strings.Join(s, " ")
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      []Endpoint
		want    []Endpoint
		wantErr bool
	}{
		{"empty", nil, []Endpoint{}, false},
		{"sorted and defaulted",
			[]Endpoint{{URL: "http://b:1"}, {URL: "http://a:1", Weight: -3}},
			[]Endpoint{{URL: "http://a:1", Weight: 1}, {URL: "http://b:1", Weight: 1}}, false},
		{"canonical form",
			[]Endpoint{{URL: " HTTP://Api.Example:8080/ ", Weight: 2}},
			[]Endpoint{{URL: "http://api.example:8080", Weight: 2}}, false},
		{"first duplicate wins",
			[]Endpoint{{URL: "http://a:1", Weight: 5}, {URL: "http://b:1"}, {URL: "http://A:1/", Weight: 9}},
			[]Endpoint{{URL: "http://a:1", Weight: 5}, {URL: "http://b:1", Weight: 1}}, false},
		{"empty meta dropped",
			[]Endpoint{{URL: "https://a", Meta: map[string]string{}}},
			[]Endpoint{{URL: "https://a", Weight: 1}}, false},
		{"relative", []Endpoint{{URL: "/x"}}, nil, true},
		{"other scheme", []Endpoint{{URL: "ftp://a"}}, nil, true},
		{"credentials", []Endpoint{{URL: "http://u:p@a"}}, nil, true},
		{"unparsable", []Endpoint{{URL: "http://a b:%zz"}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalize(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidEndpoint) {
					t.Fatalf("normalize() error = %v, want ErrInvalidEndpoint", err)
				}
				return
			}
			if err != nil || !equal(got, tt.want) {
				t.Fatalf("normalize() = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestNormalizeDoesNotAlias(t *testing.T) {
	meta := map[string]string{"zone": "a"}
	in := []Endpoint{{URL: "http://a", Meta: meta}}
	got, err := normalize(in)
	if err != nil {
		t.Fatal(err)
	}
	got[0].Meta["zone"] = "b"
	if meta["zone"] != "a" {
		t.Errorf("caller's Meta = %v after modifying the result, want unchanged", meta)
	}
	if in[0].URL != "http://a" || in[0].Weight != 0 {
		t.Errorf("caller's slice modified: %v", in)
	}
}

func TestStatic(t *testing.T) {
	leakCheck(t)
	src := Static{{URL: "http://b:80"}, {URL: "http://a:80", Weight: 3}, {URL: "http://b:80/"}}
	ch := watch(t, src)
	got := recv(t, ch)
	want := []Endpoint{{URL: "http://a:80", Weight: 3}, {URL: "http://b:80", Weight: 1}}
	if !equal(got, want) {
		t.Fatalf("Watch sent %v, want %v", got, want)
	}
	noRecv(t, ch, 50*time.Millisecond)
}

func TestStaticInvalid(t *testing.T) {
	err := Static{{URL: "10.0.0.1:80"}}.Watch(context.Background(), make(chan []Endpoint, 1))
	if !errors.Is(err, ErrInvalidEndpoint) {
		t.Fatalf("Watch() = %v, want ErrInvalidEndpoint", err)
	}
}

func TestStaticCancelWhileSending(t *testing.T) {
	leakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	// Nobody reads ch: Watch must still return when ctx ends.
	err := Static{{URL: "http://a"}}.Watch(ctx, make(chan []Endpoint))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Watch() = %v, want context.DeadlineExceeded", err)
	}
}
