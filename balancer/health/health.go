// Package health takes unhealthy instances out of rotation and puts them
// back when they recover.
//
// Two mechanisms work side by side on the flags of [balancer.Instance]:
//
//   - Active checks: a [Checker] probes every instance's health endpoint on
//     an interval and sets [balancer.Unhealthy] after several consecutive
//     failures, clearing it after several consecutive successes.
//   - Passive detection: an [Outlier] watches live traffic and sets
//     [balancer.Ejected] on an instance after consecutive failures, for a
//     time that grows with each ejection, without ever ejecting more than a
//     set share of the pool.
//
// An instance coming back from either starts a new slow-start ramp
// ([balancer.Instance.SetJoined]), so it is not flooded at once.
//
// When health information says most of a pool is down, it is more often the
// checks that are wrong than the whole service; [InPanic] tells the gateway
// when to stop trusting them.
package health

import "github.com/pyairtable/api-gateway/balancer"

// DefaultPanicThreshold is the usual panic threshold (Envoy's default): a
// pool with fewer than half of its instances available is in panic.
const DefaultPanicThreshold = 50

// InPanic reports whether fewer than thresholdPercent percent of pool's
// instances are available. A threshold of zero or less disables panic mode;
// an empty pool is never in panic (there is nothing to fall back to).
//
// Balancing policies never pick an unavailable instance, so in panic they
// may black-hole a service whose health checks are wrong (a broken health
// endpoint, a partition between the gateway and the checks). When InPanic
// reports true the gateway should instead pick from every instance of the
// pool that is not [balancer.Draining], ignoring the Unhealthy, Ejected and
// BreakerOpen flags: some requests fail rather than all of them. InPanic
// does not allocate and is safe for concurrent use.
func InPanic(pool []*balancer.Instance, thresholdPercent int) bool {
	if len(pool) == 0 || thresholdPercent <= 0 {
		return false
	}
	available := 0
	for _, in := range pool {
		if in.Available() {
			available++
		}
	}
	return available*100 < thresholdPercent*len(pool)
}
