// Package balancer chooses which instance of a service receives a request.
//
// A [Balancer] is one small interface; the policies in this package
// ([RoundRobin] and others) are safe for concurrent use and allocation-free
// on the pick path. Live statistics (in-flight count, latency, error rate,
// health flags) live on each [Instance], where the proxy updates them and
// every policy reads them, so membership and policy changes keep them.
//
// Policies never return an instance that is not [Instance.Available].
package balancer

import (
	"errors"
	"net/http"
	"sync/atomic"
)

// ErrNoInstance is returned by Pick when no instance of the pool can take
// the request.
var ErrNoInstance = errors.New("balancer: no available instance")

// Balancer picks an instance for a request.
type Balancer interface {
	// Pick chooses an instance for r from pool. It must not block, must be
	// safe for concurrent use, and must not modify pool. It returns
	// ErrNoInstance when no instance is available. r may be nil for
	// policies that do not look at the request.
	Pick(r *http.Request, pool []*Instance) (*Instance, error)
}

// RoundRobin hands requests to available instances in turn.
// The zero value is ready to use; it is safe for concurrent use.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick implements [Balancer].
func (b *RoundRobin) Pick(_ *http.Request, pool []*Instance) (*Instance, error) {
	n := uint64(len(pool))
	if n == 0 {
		return nil, ErrNoInstance
	}
	start := b.next.Add(1) - 1
	for i := range n {
		in := pool[(start+i)%n]
		if in.Available() {
			return in, nil
		}
	}
	return nil, ErrNoInstance
}
