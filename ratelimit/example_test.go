package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pyairtable/api-gateway/ratelimit"
)

// A sliding window of 3 requests per minute per client address. The clock
// is fixed so that the output is stable; leave Now nil in real use.
func Example() {
	now := time.Date(2025, 1, 1, 12, 0, 30, 0, time.UTC)
	l, err := ratelimit.NewSlidingWindow(ratelimit.Settings{
		Limit:  3,
		Window: time.Minute,
		Now:    func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	for range 4 {
		d, _ := l.Allow(context.Background(), "203.0.113.7", 1)
		fmt.Printf("allowed=%v remaining=%d retry-after=%v\n", d.Allowed, d.Remaining, d.RetryAfter)
	}
	// Output:
	// allowed=true remaining=2 retry-after=0s
	// allowed=true remaining=1 retry-after=0s
	// allowed=true remaining=0 retry-after=0s
	// allowed=false remaining=0 retry-after=40.000000001s
}

// A token bucket refilled at 2 per second that lets bursts of 4 through.
func ExampleTokenBucket() {
	start := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	l, err := ratelimit.NewTokenBucket(ratelimit.Settings{Limit: 2, Window: time.Second, Burst: 4})
	if err != nil {
		panic(err)
	}
	for _, offset := range []time.Duration{0, 0, 0, 0, 0, 100 * time.Millisecond, 500 * time.Millisecond} {
		d := l.AllowAt(start.Add(offset), "api-key-1", 1)
		fmt.Printf("t=%v allowed=%v remaining=%d retry-after=%v\n", offset, d.Allowed, d.Remaining, d.RetryAfter)
	}
	// Output:
	// t=0s allowed=true remaining=3 retry-after=0s
	// t=0s allowed=true remaining=2 retry-after=0s
	// t=0s allowed=true remaining=1 retry-after=0s
	// t=0s allowed=true remaining=0 retry-after=0s
	// t=0s allowed=false remaining=0 retry-after=500ms
	// t=100ms allowed=false remaining=0 retry-after=400ms
	// t=500ms allowed=true remaining=0 retry-after=0s
}

func ExampleDecision_Err() {
	l, _ := ratelimit.NewTokenBucket(ratelimit.Settings{Limit: 1, Window: time.Hour})
	for range 2 {
		d, _ := l.Allow(context.Background(), "k", 1)
		if err := d.Err(); errors.Is(err, ratelimit.ErrLimited) {
			fmt.Println(err)
		}
	}
	// Output: ratelimit: limit exceeded
}
