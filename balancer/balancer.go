// Package balancer chooses which instance of a service receives a request.
//
// A [Balancer] is one small interface; the policies in this package are
// safe for concurrent use and allocation-free on the pick path:
//
//   - [RoundRobin] and [WeightedRoundRobin] (smooth, as nginx) take turns;
//   - [Random] picks in proportion to weight;
//   - [LeastConnections] prefers the fewest requests in flight;
//   - [Latency] prefers the fastest expected answer (peak-EWMA latency);
//   - [HealthScore], the default for multi-instance services, weighs
//     latency, load, recent errors and weight together;
//   - [ConsistentHash] keeps a key (client IP, header) on one instance,
//     within a load bound;
//   - [CookieSticky] pins a client with a signed cookie, over any policy.
//
// [New] builds a policy from its configuration name.
//
// Live statistics (in-flight count, latency, error rate, health flags,
// slow-start join time) live on each [Instance], where the proxy updates
// them with [Instance.Begin] and [Instance.End] and every policy reads them,
// so membership and policy changes keep them. Weighted policies ramp a newly
// joined instance from 10% to 100% of its weight over a slow-start period.
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

// Sticky is implemented by balancers that pin a client to an instance and
// must tell the client which one, such as [CookieSticky]. The gateway finds
// it by type assertion, as http.Flusher is found, calls PickSticky instead
// of Pick and, when setCookie is not nil, adds it to the response.
type Sticky interface {
	PickSticky(r *http.Request, pool []*Instance) (inst *Instance, setCookie *http.Cookie, err error)
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
