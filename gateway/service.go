package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/balancer/health"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/discovery"
	"github.com/pyairtable/api-gateway/gateway/internal/gate"
	"github.com/pyairtable/api-gateway/gateway/metrics"
)

// BreakerPolicy configures circuit breaking for a service.
type BreakerPolicy struct {
	// Disabled turns circuit breaking off.
	Disabled bool
	// Settings configure each breaker (Name, OnStateChange and Now are
	// set by the gateway). The zero value gives the breaker package's
	// defaults: 5 consecutive failures or ≥50% of ≥20 requests in 10s,
	// open 10s doubling to 60s, 3 half-open probes.
	Settings breaker.Settings
	// PerService adds one breaker for the whole service in front of the
	// per-instance ones: when it is open, the service answers 503 at once.
	PerService bool
	// FailureStatuses are the response codes that count as failures
	// (besides connect errors and timeouts). If nil, every 5xx. 4xx never
	// count unless listed.
	FailureStatuses []int
}

// RetryPolicy configures retries on another instance.
type RetryPolicy struct {
	// Budget is the share of requests that may be retries, over a rolling
	// 10s window, so retries cannot multiply load during an outage. If
	// zero, 0.2.
	Budget float64
	// MinPerSecond is a floor of retries per second allowed whatever the
	// budget, so low-traffic services can still retry. If zero, 3.
	MinPerSecond int
	// BackoffBase and BackoffMax bound the exponential backoff with full
	// jitter between attempts. If zero, 25ms and 250ms.
	BackoffBase, BackoffMax time.Duration
	// OnStatuses are response codes retried for requests safe to repeat.
	// If nil, 502, 503 and 504.
	OnStatuses []int
	// BodyLimit is the largest request body kept for replay; larger bodies
	// are streamed and not retried once sent. If zero, 64 KiB.
	BodyLimit int64
}

// OutlierPolicy configures passive health checking on live traffic.
type OutlierPolicy struct {
	// Disabled turns passive ejection off.
	Disabled bool
	// Settings as in package balancer/health (OnEject and Now are set by
	// the gateway). Zero values: 5 consecutive failures eject for 30s × n
	// up to 300s, at most 50% of the pool ejected.
	Settings health.PassiveSettings
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Budget == 0 {
		p.Budget = 0.2
	}
	if p.MinPerSecond == 0 {
		p.MinPerSecond = 3
	}
	if p.BackoffBase == 0 {
		p.BackoffBase = 25 * time.Millisecond
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = 250 * time.Millisecond
	}
	if p.OnStatuses == nil {
		p.OnStatuses = []int{502, 503, 504}
	}
	if p.BodyLimit == 0 {
		p.BodyLimit = 64 << 10
	}
	return p
}

// newService builds the runtime form of s. State that must survive an
// update — instances with their statistics and breakers, the retry budget,
// passive-ejection history — is taken over from old when the service
// existed before.
func (g *Gateway) newService(s *Service, old *service) (*service, error) {
	svc := &service{
		name:       s.Name,
		bal:        s.Balancer,
		timeout:    s.Timeout,
		maxConns:   max(s.MaxConnsPerInstance, 0),
		queueWait:  max(s.QueueTimeout, 0),
		tryTimeout: s.TryTimeout,
		retries:    s.RetryCount,
		retry:      s.Retry.withDefaults(),
		brk:        s.CircuitBreaker,
		source:     s.Discovery,
		now:        g.now,
		logger:     g.logger,
		metrics:    g.metrics,
	}
	if svc.bal == nil {
		svc.bal = &balancer.RoundRobin{}
	}
	svc.up = &upstream{svc: svc, base: g.upstreamRT, now: g.now}
	svc.sticky, _ = svc.bal.(balancer.Sticky)
	if svc.timeout == 0 {
		svc.timeout = 30 * time.Second
	}
	if svc.retries == 0 {
		svc.retries = 1
	}
	if svc.retries < 0 {
		svc.retries = 0
	}
	if svc.retry.Budget < 0 || svc.retry.Budget > 1 {
		return nil, fmt.Errorf("retry budget %v is not between 0 and 1", svc.retry.Budget)
	}
	if st := s.CircuitBreaker.FailureStatuses; st != nil {
		for _, c := range st {
			if c < 100 || c > 599 {
				return nil, fmt.Errorf("failure status %d is not an HTTP status", c)
			}
			svc.failStatus[c] = true
		}
	} else {
		for c := 500; c < 600; c++ {
			svc.failStatus[c] = true
		}
	}
	for _, c := range svc.retry.OnStatuses {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("retry status %d is not an HTTP status", c)
		}
		svc.retryOn[c] = true
	}
	if old != nil {
		svc.budget = old.budget
		svc.budget.ratio, svc.budget.floor = svc.retry.Budget, int64(svc.retry.MinPerSecond)
	} else {
		svc.budget = newRetryBudget(svc.retry.Budget, svc.retry.MinPerSecond, g.now)
	}
	if !s.CircuitBreaker.Disabled && s.CircuitBreaker.PerService {
		if old != nil && old.svcBreaker != nil {
			svc.svcBreaker = old.svcBreaker
		} else {
			bs := s.CircuitBreaker.Settings
			bs.Name, bs.Now = s.Name, g.now
			svc.svcBreaker = breaker.New(bs)
		}
	}
	if !s.Outlier.Disabled {
		if old != nil && old.outlier != nil {
			svc.outlier = old.outlier
		} else {
			ps := s.Outlier.Settings
			ps.Now = g.now
			name := s.Name
			ps.OnEject = func(in *balancer.Instance, d time.Duration) {
				g.logger.Warn("instance ejected", "service", name, "instance", in.String(), "for", d.String())
				g.metrics.Ejection(name, in.String())
			}
			svc.outlier = health.NewOutlier(ps)
		}
	}
	if s.HealthCheck.Path != "" {
		hs := s.HealthCheck
		if hs.Logger == nil {
			hs.Logger = g.logger
		}
		if hs.Now == nil {
			hs.Now = g.now
		}
		if hs.OnChange == nil {
			name := s.Name
			hs.OnChange = func(in *balancer.Instance, healthy bool) { g.metrics.InstanceHealth(name, in.String(), healthy) }
		}
		svc.checker = health.NewChecker(hs)
	}
	if old != nil {
		// Carry the membership over, then apply the new instance list.
		svc.m.Store(old.m.Load())
	}
	if len(s.Instances) > 0 || old == nil {
		svc.removed = svc.replaceMembers(slices.Clone(s.Instances))
	} else if old.maxConns != svc.maxConns {
		// Discovered instances stay; their gates follow the new bound.
		svc.replaceMembers(slices.Clone(old.pool()))
	}
	return svc, nil
}

// members is one immutable snapshot of a service's instances and their
// breakers, swapped atomically when discovery or an update changes them.
type members struct {
	pool     []*balancer.Instance
	breakers map[*balancer.Instance]*breaker.Circuit
	gates    map[*balancer.Instance]*gate.Gate // when the service bounds requests per instance
}

// service is the runtime form of a Service.
type service struct {
	name       string
	m          atomic.Pointer[members]
	bal        balancer.Balancer
	sticky     balancer.Sticky
	timeout    time.Duration
	tryTimeout time.Duration
	retries    int
	retry      RetryPolicy
	budget     *retryBudget
	brk        BreakerPolicy
	svcBreaker *breaker.Circuit
	outlier    *health.Outlier
	checker    *health.Checker
	source     discovery.Source
	panicPct   int
	failStatus [600]bool
	retryOn    [600]bool
	now        func() time.Time
	logger     *slog.Logger
	metrics    *metrics.Metrics
	removed    []*balancer.Instance // left in the last update; drained once it is live
	up         *upstream            // the service's RoundTripper
	maxConns   int                  // per instance; 0: no gate
	queueWait  time.Duration        // longest wait for a gate slot; 0: the timeout
	mu         sync.Mutex           // serialises membership changes
}

func (s *service) pool() []*balancer.Instance { return s.m.Load().pool }

// setMembers installs pool as the service's instances. Instances already
// present (same URL) keep their object, statistics and breaker; new ones
// start their slow start; removed ones are drained: flagged so they get no
// new requests while in-flight ones finish.
func (s *service) setMembers(pool []*balancer.Instance) {
	for _, gone := range s.replaceMembers(pool) {
		gone.SetFlag(balancer.Draining, true)
	}
}

// replaceMembers installs pool and returns the instances that left, for
// the caller to drain once the change is visible to every new request.
func (s *service) replaceMembers(pool []*balancer.Instance) (removed []*balancer.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	byURL := map[string]*balancer.Instance{}
	if old != nil {
		for _, in := range old.pool {
			byURL[in.URL.String()] = in
		}
	}
	next := &members{pool: make([]*balancer.Instance, 0, len(pool)), breakers: map[*balancer.Instance]*breaker.Circuit{}}
	now := s.now()
	for _, in := range pool {
		if o := byURL[in.URL.String()]; o != nil {
			o.Weight = in.Weight
			o.SetFlag(balancer.Draining, false)
			delete(byURL, in.URL.String())
			in = o
		} else if old != nil && len(old.pool) > 0 {
			in.SetJoined(now) // a newcomer ramps up
		}
		next.pool = append(next.pool, in)
		if s.maxConns > 0 {
			if next.gates == nil {
				next.gates = map[*balancer.Instance]*gate.Gate{}
			}
			var g *gate.Gate
			if old != nil {
				g = old.gates[in] // requests in flight release into it
			}
			if g == nil || g.Limit() != s.maxConns {
				g = gate.New(s.maxConns)
			}
			next.gates[in] = g
		}
		if s.brk.Disabled {
			continue
		}
		if old != nil && old.breakers[in] != nil {
			next.breakers[in] = old.breakers[in]
		} else {
			next.breakers[in] = s.newBreaker(in)
		}
	}
	s.m.Store(next)
	for _, gone := range byURL {
		removed = append(removed, gone)
	}
	if len(removed) > 0 {
		s.logger.Info("instances removed; draining", "service", s.name, "removed", len(removed), "instances", len(next.pool))
	}
	return removed
}

// newBreaker makes the breaker of one instance: while it is open the
// instance is out of rotation, and a timer brings it back for half-open
// probes when the open period ends.
func (s *service) newBreaker(in *balancer.Instance) *breaker.Circuit {
	st := s.brk.Settings
	st.Name = s.name + "/" + in.String()
	st.Now = s.now
	var c *breaker.Circuit
	st.OnStateChange = func(name string, from, to breaker.State) {
		switch to {
		case breaker.Open:
			in.SetFlag(balancer.BreakerOpen, true)
			if d := c.RetryAfter(); d > 0 {
				time.AfterFunc(d, func() { in.SetFlag(balancer.BreakerOpen, false) })
			}
		default:
			in.SetFlag(balancer.BreakerOpen, false)
		}
		s.logger.Warn("circuit breaker", "service", s.name, "instance", in.String(), "from", from.String(), "to", to.String())
		s.metrics.BreakerTransition(s.name, in.String(), from.String(), to.String())
		s.metrics.BreakerState(s.name, in.String(), breakerGauge(to))
	}
	c = breaker.New(st)
	return c
}

// breakerGauge maps a breaker state to the gauge value of the metric.
func breakerGauge(s breaker.State) int {
	switch s {
	case breaker.Open:
		return 2
	case breaker.HalfOpen:
		return 1
	}
	return 0
}

// retryAfter suggests when a service with no available instance may have
// one again: the soonest breaker reopening, else one second.
func (s *service) retryAfter() time.Duration {
	best := time.Duration(0)
	for _, c := range s.m.Load().breakers {
		if d := c.RetryAfter(); d > 0 && (best == 0 || d < best) {
			best = d
		}
	}
	if best == 0 {
		best = time.Second
	}
	return best
}

// run does the service's background work until ctx ends: discovery,
// active health checks and the outlier detector's ejection timer.
func (s *service) run(ctx context.Context, wg *sync.WaitGroup) {
	if s.source != nil {
		ch := make(chan []discovery.Endpoint, 1)
		wg.Add(2)
		go func() {
			defer wg.Done()
			s.source.Watch(ctx, ch)
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case eps := <-ch:
					pool := make([]*balancer.Instance, 0, len(eps))
					for _, ep := range eps {
						in, err := balancer.NewInstance(ep.URL, ep.Weight)
						if err != nil {
							s.logger.Warn("discovery: bad endpoint", "service", s.name, "url", ep.URL, "error", err.Error())
							continue
						}
						pool = append(pool, in)
					}
					s.setMembers(pool)
				}
			}
		}()
	}
	if s.checker != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.checker.Run(ctx, s.pool)
		}()
	}
	if s.outlier != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.outlier.Run(ctx, s.pool)
		}()
	}
}

// retryBudget bounds retries to a share of requests over a rolling window
// of ten one-second buckets, plus a floor per second. Lock-free.
type retryBudget struct {
	ratio float64
	floor int64
	now   func() time.Time
	slots [10]budgetSlot
}

type budgetSlot struct {
	sec      atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
}

func newRetryBudget(ratio float64, floorPerSec int, now func() time.Time) *retryBudget {
	return &retryBudget{ratio: ratio, floor: int64(floorPerSec), now: now}
}

func (b *retryBudget) slot(sec int64) *budgetSlot {
	s := &b.slots[sec%int64(len(b.slots))]
	if old := s.sec.Load(); old != sec && s.sec.CompareAndSwap(old, sec) {
		s.requests.Store(0)
		s.retries.Store(0)
	}
	return s
}

func (b *retryBudget) sums(sec int64) (req, ret int64) {
	for i := range b.slots {
		s := &b.slots[i]
		if sec-s.sec.Load() < int64(len(b.slots)) {
			req += s.requests.Load()
			ret += s.retries.Load()
		}
	}
	return
}

// request counts one client request.
func (b *retryBudget) request() {
	b.slot(b.now().Unix()).requests.Add(1)
}

// allow reports whether one more retry fits the budget, and counts it.
func (b *retryBudget) allow() bool {
	sec := b.now().Unix()
	req, ret := b.sums(sec)
	limit := int64(float64(req)*b.ratio) + b.floor*int64(len(b.slots))
	if ret >= limit {
		return false
	}
	b.slot(sec).retries.Add(1)
	return true
}

// backoff returns the delay before retry n (1-based): full jitter over an
// exponentially growing cap.
func backoff(p RetryPolicy, n int) time.Duration {
	c := p.BackoffBase << min(n-1, 20)
	if c > p.BackoffMax || c <= 0 {
		c = p.BackoffMax
	}
	return time.Duration(rand.Int64N(int64(c) + 1))
}

// pickPanic chooses, when the balancer found nothing, among instances that
// are out only because passive detection ejected them: with most of the
// pool ejected, spreading load beats black-holing the service. A request
// routed by a configuration that has since been replaced may also use
// instances that are draining: it is in flight on the old configuration,
// and those instances are still serving it.
func pickPanic(pool []*balancer.Instance, skip []*balancer.Instance, stale bool) *balancer.Instance {
	allowed := balancer.Ejected
	if stale {
		allowed |= balancer.Draining
	}
	var best *balancer.Instance
	for _, in := range pool {
		if f := in.Flags(); f == 0 || f&^allowed != 0 || slices.Contains(skip, in) {
			continue
		}
		if best == nil || in.InFlight() < best.InFlight() {
			best = in
		}
	}
	return best
}
