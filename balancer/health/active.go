package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
)

// ErrNoPath is returned by [Checker.Run] when ActiveSettings.Path is empty:
// active checks are then disabled.
var ErrNoPath = errors.New("health: active checks need a Path")

// errStatus is wrapped by probe errors for an unexpected response status.
var errStatus = errors.New("health: unexpected status")

// ActiveSettings configures a [Checker].
type ActiveSettings struct {
	// Path is the health endpoint requested on each instance, e.g.
	// "/health"; it may carry a query. If empty, active checks are
	// disabled.
	Path string
	// Interval is the time between two checks of one instance, jittered by
	// ±10% so that checks of many instances spread out. If zero, 10s is
	// used.
	Interval time.Duration
	// Timeout bounds each check, connection included; a timeout is a
	// failure. If zero, 2s is used.
	Timeout time.Duration
	// ExpectedStatus lists the response codes that count as healthy. If
	// empty, any code from 200 to 399 does. Redirects are not followed.
	ExpectedStatus []int
	// HealthyThreshold is how many consecutive successes bring an unhealthy
	// instance back. If zero, 2 is used.
	HealthyThreshold int
	// UnhealthyThreshold is how many consecutive failures mark an instance
	// unhealthy. If zero, 3 is used.
	UnhealthyThreshold int
	// Client sends the checks. If nil, the checker uses its own transport
	// (closed when Run returns) and does not follow redirects.
	Client *http.Client
	// Logger receives health transitions. If nil, slog.Default() is used.
	Logger *slog.Logger
	// Now is the clock used for slow start. If nil, time.Now is used.
	Now func() time.Time
	// OnChange, if set, is called after an instance's health changed. It
	// runs on the checking goroutine and must not block for long.
	OnChange func(in *balancer.Instance, healthy bool)
}

// Checker actively checks instances and maintains their
// [balancer.Unhealthy] flag. An instance is presumed healthy until it fails
// UnhealthyThreshold checks in a row, so a new pool serves at once.
//
// Its methods are safe for concurrent use; Run must not be called again
// before a previous Run returned.
type Checker struct {
	path, rawQuery string
	interval       time.Duration
	timeout        time.Duration
	expected       []int
	healthyN       int
	unhealthyN     int
	client         *http.Client
	transport      *http.Transport // owned, nil when the caller gave a Client
	log            *slog.Logger
	now            func() time.Time
	onChange       func(*balancer.Instance, bool)
	mu             sync.Mutex
	state          map[*balancer.Instance]*probeState
}

// probeState counts an instance's consecutive outcomes; guarded by
// Checker.mu.
type probeState struct {
	successes, failures int
}

// NewChecker returns a checker configured by s. It starts nothing: call Run.
func NewChecker(s ActiveSettings) *Checker {
	c := &Checker{
		interval:   s.Interval,
		timeout:    s.Timeout,
		expected:   slices.Clone(s.ExpectedStatus),
		healthyN:   s.HealthyThreshold,
		unhealthyN: s.UnhealthyThreshold,
		client:     s.Client,
		log:        s.Logger,
		now:        s.Now,
		onChange:   s.OnChange,
		state:      make(map[*balancer.Instance]*probeState),
	}
	if s.Path != "" {
		ref, err := url.Parse(s.Path)
		if err != nil {
			ref = &url.URL{Path: s.Path}
		}
		c.path, c.rawQuery = ref.Path, ref.RawQuery
		if !strings.HasPrefix(c.path, "/") {
			c.path = "/" + c.path
		}
	}
	if c.interval <= 0 {
		c.interval = 10 * time.Second
	}
	if c.timeout <= 0 {
		c.timeout = 2 * time.Second
	}
	if c.healthyN <= 0 {
		c.healthyN = 2
	}
	if c.unhealthyN <= 0 {
		c.unhealthyN = 3
	}
	if c.client == nil {
		c.transport = http.DefaultTransport.(*http.Transport).Clone()
		c.client = &http.Client{
			Transport: c.transport,
			// A redirect is an answer: the instance is up.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Run checks every instance that instances returns (it is called again at
// least every second, so membership changes are followed) until ctx is
// done, then returns ctx.Err(). Each instance has one goroutine, stopped
// when the instance leaves the set or ctx ends; Run returns only after all
// of them did. With no Path it returns ErrNoPath at once.
func (c *Checker) Run(ctx context.Context, instances func() []*balancer.Instance) error {
	if c.path == "" {
		return ErrNoPath
	}
	var wg sync.WaitGroup
	workers := make(map[*balancer.Instance]context.CancelFunc)
	defer func() {
		for _, cancel := range workers {
			cancel()
		}
		wg.Wait()
		if c.transport != nil {
			c.transport.CloseIdleConnections()
		}
	}()
	t := time.NewTicker(min(c.interval, time.Second))
	defer t.Stop()
	current := make(map[*balancer.Instance]struct{})
	for {
		clear(current)
		for _, in := range instances() {
			current[in] = struct{}{}
			if _, ok := workers[in]; !ok {
				wctx, cancel := context.WithCancel(ctx)
				workers[in] = cancel
				wg.Go(func() { c.loop(wctx, in) })
			}
		}
		for in, cancel := range workers {
			if _, ok := current[in]; !ok {
				cancel()
				delete(workers, in)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// loop checks one instance until ctx ends.
func (c *Checker) loop(ctx context.Context, in *balancer.Instance) {
	defer c.forget(in)
	// The first check comes soon, spread a little so that a new pool's
	// instances are not all probed in the same instant.
	timer := time.NewTimer(time.Duration(rand.Int64N(int64(c.interval/10) + 1)))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		c.CheckOnce(ctx, in)
		timer.Reset(jitter(c.interval, rand.Float64()))
	}
}

// jitter spreads d by ±10%: f in [0, 1) maps to [0.9d, 1.1d).
func jitter(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*f))
}

func (c *Checker) forget(in *balancer.Instance) {
	c.mu.Lock()
	delete(c.state, in)
	c.mu.Unlock()
}

// CheckOnce probes in once and applies the thresholds: it may set or clear
// the instance's Unhealthy flag, and on recovery it restarts the instance's
// slow start at Now. A check cut short because ctx ended counts for
// nothing. It does nothing when no Path is configured.
func (c *Checker) CheckOnce(ctx context.Context, in *balancer.Instance) {
	if c.path == "" {
		return
	}
	err := c.probe(ctx, in)
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	st := c.state[in]
	if st == nil {
		st = &probeState{}
		c.state[in] = st
	}
	unhealthy := in.Flags()&balancer.Unhealthy != 0
	changed := false
	if err == nil {
		st.failures = 0
		st.successes++
		if unhealthy && st.successes >= c.healthyN {
			in.SetFlag(balancer.Unhealthy, false)
			in.SetJoined(c.now())
			changed = true
		}
	} else {
		st.successes = 0
		st.failures++
		if !unhealthy && st.failures >= c.unhealthyN {
			in.SetFlag(balancer.Unhealthy, true)
			changed = true
		}
	}
	c.mu.Unlock()

	if !changed {
		if err != nil {
			c.log.Debug("health: check failed", "instance", in.String(), "error", err)
		}
		return
	}
	if err == nil {
		c.log.Info("health: instance healthy again", "instance", in.String(), "successes", c.healthyN)
	} else {
		c.log.Warn("health: instance unhealthy", "instance", in.String(), "failures", c.unhealthyN, "error", err)
	}
	if c.onChange != nil {
		c.onChange(in, err == nil)
	}
}

// probe sends one check request and returns why it failed, if it did.
func (c *Checker) probe(ctx context.Context, in *balancer.Instance) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := url.URL{Scheme: in.URL.Scheme, Host: in.URL.Host, Path: c.path, RawQuery: c.rawQuery}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "api-gateway-health-check")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	// Reading a little of the body lets the connection be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if !c.healthyStatus(resp.StatusCode) {
		return fmt.Errorf("%w %d", errStatus, resp.StatusCode)
	}
	return nil
}

func (c *Checker) healthyStatus(code int) bool {
	if len(c.expected) == 0 {
		return code >= 200 && code <= 399
	}
	return slices.Contains(c.expected, code)
}
