package breaker

import (
	"testing"
	"time"
)

// The benchmarks use the real clock: reading it is part of the cost of
// done on the closed path.

func BenchmarkAllowDoneClosed(b *testing.B) {
	c := New(Settings{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, err := c.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(nil)
		}
	})
}

func BenchmarkAllowDoneClosedSerial(b *testing.B) {
	c := New(Settings{})
	b.ReportAllocs()
	for b.Loop() {
		done, err := c.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done(nil)
	}
}

// Failures that never trip: each one also evaluates the ratio over the
// window.
func BenchmarkAllowDoneClosedFailing(b *testing.B) {
	c := New(Settings{ConsecutiveFailures: -1, FailureRatio: 2})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, err := c.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(errBoom)
		}
	})
}

func BenchmarkAllowOpen(b *testing.B) {
	c := New(Settings{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	done, _ := c.Allow()
	done(errBoom)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Allow(); err != ErrOpen {
				b.Fatalf("Allow() err = %v, want %v", err, ErrOpen)
			}
		}
	})
}

func BenchmarkReadyClosed(b *testing.B) {
	c := New(Settings{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !c.Ready() {
				b.Fatal("Ready() = false, want true")
			}
		}
	})
}
