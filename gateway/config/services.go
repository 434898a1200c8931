package config

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/pyairtable/api-gateway/balancer"
	"github.com/pyairtable/api-gateway/balancer/health"
	"github.com/pyairtable/api-gateway/breaker"
	"github.com/pyairtable/api-gateway/discovery"
	"github.com/pyairtable/api-gateway/gateway"
)

// LoadBalancer chooses how a service's instances share its traffic.
type LoadBalancer struct {
	// Algorithm is one of balancer.Algorithms(). Default: round_robin for
	// one instance, health_score for several or for discovered ones.
	Algorithm string   `yaml:"algorithm"`
	SlowStart Duration `yaml:"slow_start"`
	Sticky    Sticky   `yaml:"sticky"`
}

// Sticky pins clients to instances.
type Sticky struct {
	// Mode is "cookie" (signed cookie naming the instance), "header" or
	// "ip" (consistent hashing with bounded load on a header or the
	// client IP). Empty: no affinity.
	Mode       string   `yaml:"mode"`
	CookieName string   `yaml:"cookie_name"`
	TTL        Duration `yaml:"ttl"`
	Secure     bool     `yaml:"secure"`
	Header     string   `yaml:"header"`
	// BalanceFactor bounds an instance's load to this multiple of the
	// mean (consistent hashing). Default 1.25.
	BalanceFactor float64 `yaml:"balance_factor"`
}

// HealthCheck configures active health checks.
type HealthCheck struct {
	Path               string   `yaml:"path"`
	Interval           Duration `yaml:"interval"`
	Timeout            Duration `yaml:"timeout"`
	ExpectedStatus     []int    `yaml:"expected_status"`
	HealthyThreshold   int      `yaml:"healthy_threshold"`
	UnhealthyThreshold int      `yaml:"unhealthy_threshold"`
}

// OutlierDetection configures passive health checks on live traffic.
type OutlierDetection struct {
	Enabled             *bool    `yaml:"enabled"`
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	BaseEjection        Duration `yaml:"base_ejection"`
	MaxEjection         Duration `yaml:"max_ejection"`
	MaxEjectedPercent   int      `yaml:"max_ejected_percent"`
}

// CircuitBreaker configures per-instance (and optionally per-service)
// circuit breakers.
type CircuitBreaker struct {
	Enabled             *bool    `yaml:"enabled"`
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	FailureRatio        float64  `yaml:"failure_ratio"`
	MinRequests         int      `yaml:"min_requests"`
	Window              Duration `yaml:"window"`
	OpenTimeout         Duration `yaml:"open_timeout"`
	MaxOpenTimeout      Duration `yaml:"max_open_timeout"`
	HalfOpenRequests    int      `yaml:"half_open_requests"`
	FailureStatuses     []int    `yaml:"failure_statuses"`
	PerService          bool     `yaml:"per_service"`
}

// Retry tunes retries.
type Retry struct {
	Budget       float64  `yaml:"budget"`
	MinPerSecond int      `yaml:"min_per_second"`
	BackoffBase  Duration `yaml:"backoff_base"`
	BackoffMax   Duration `yaml:"backoff_max"`
	OnStatuses   []int    `yaml:"on_statuses"`
	BodyLimit    ByteSize `yaml:"body_limit"`
}

// Discovery makes a service's instances come from a source.
type Discovery struct {
	// Type is "dns", "file" or "registry".
	Type string `yaml:"type"`
	// Name is the DNS name (dns).
	Name string `yaml:"name"`
	// Port is the instances' port for A/AAAA records (dns).
	Port int `yaml:"port"`
	// SRV looks up SRV records instead (dns); Service and Proto name the
	// record (_service._proto.name), optional.
	SRV     bool   `yaml:"srv"`
	Service string `yaml:"service"`
	Proto   string `yaml:"proto"`
	// Scheme of the instance URLs. Default http.
	Scheme string `yaml:"scheme"`
	// Interval between lookups (dns, file).
	Interval Duration `yaml:"interval"`
	// Path of a JSON or YAML list of {url, weight} (file).
	Path string `yaml:"path"`
}

var stickyModes = []string{"cookie", "header", "ip"}
var discoveryTypes = []string{"dns", "file", "registry"}

func (c *Config) validateService(v *validator, name string, svc Service) {
	key := "services." + name
	if lb := svc.LoadBalancer; lb.Algorithm != "" && !slices.Contains(balancer.Algorithms(), lb.Algorithm) {
		v.add(key+".load_balancer.algorithm", "%q is not one of %s", lb.Algorithm, strings.Join(balancer.Algorithms(), ", "))
	}
	st := svc.LoadBalancer.Sticky
	if st.Mode != "" && !slices.Contains(stickyModes, st.Mode) {
		v.add(key+".load_balancer.sticky.mode", "%q is not one of %s", st.Mode, strings.Join(stickyModes, ", "))
	}
	if st.Mode == "header" && st.Header == "" {
		v.add(key+".load_balancer.sticky.header", "mode header needs a header name")
	}
	if st.BalanceFactor != 0 && st.BalanceFactor < 1 {
		v.add(key+".load_balancer.sticky.balance_factor", "%v must be at least 1", st.BalanceFactor)
	}
	hc := svc.HealthCheck
	if hc.Path != "" && !strings.HasPrefix(hc.Path, "/") {
		v.add(key+".health_check.path", "%q must start with /", hc.Path)
	}
	if hc.Path == "" && (hc.Interval != 0 || hc.Timeout != 0 || len(hc.ExpectedStatus) > 0) {
		v.add(key+".health_check.path", "is needed to enable health checks")
	}
	for i, code := range hc.ExpectedStatus {
		if code < 100 || code > 599 {
			v.add(fmt.Sprintf("%s.health_check.expected_status[%d]", key, i), "%d is not an HTTP status", code)
		}
	}
	cb := svc.CircuitBreaker
	if cb.FailureRatio < 0 || cb.FailureRatio > 1 {
		v.add(key+".circuit_breaker.failure_ratio", "%v is not between 0 and 1", cb.FailureRatio)
	}
	for i, code := range cb.FailureStatuses {
		if code < 100 || code > 599 {
			v.add(fmt.Sprintf("%s.circuit_breaker.failure_statuses[%d]", key, i), "%d is not an HTTP status", code)
		}
	}
	if cb.MaxOpenTimeout != 0 && cb.OpenTimeout != 0 && cb.MaxOpenTimeout < cb.OpenTimeout {
		v.add(key+".circuit_breaker.max_open_timeout", "is shorter than open_timeout")
	}
	od := svc.OutlierDetection
	if od.MaxEjectedPercent < 0 || od.MaxEjectedPercent > 100 {
		v.add(key+".outlier_detection.max_ejected_percent", "%d is not between 0 and 100", od.MaxEjectedPercent)
	}
	r := svc.Retry
	if r.Budget < 0 || r.Budget > 1 {
		v.add(key+".retry.budget", "%v is not between 0 and 1", r.Budget)
	}
	for i, code := range r.OnStatuses {
		if code < 100 || code > 599 {
			v.add(fmt.Sprintf("%s.retry.on_statuses[%d]", key, i), "%d is not an HTTP status", code)
		}
	}
	d := svc.Discovery
	if d == nil {
		return
	}
	switch d.Type {
	case "dns":
		if d.Name == "" {
			v.add(key+".discovery.name", "dns discovery needs a name")
		}
		if !d.SRV && (d.Port < 1 || d.Port > 65535) {
			v.add(key+".discovery.port", "dns discovery of A/AAAA records needs a port")
		}
	case "file":
		if d.Path == "" {
			v.add(key+".discovery.path", "file discovery needs a path")
		}
	case "registry":
		if c.Admin.APIKey == "" {
			v.add(key+".discovery.type", "registry discovery needs admin.api_key (instances register on the admin port)")
		}
	default:
		v.add(key+".discovery.type", "%q is not one of %s", d.Type, strings.Join(discoveryTypes, ", "))
	}
	if d.Scheme != "" && d.Scheme != "http" && d.Scheme != "https" {
		v.add(key+".discovery.scheme", "%q is not http or https", d.Scheme)
	}
}

// stickySecret derives the cookie-signing key shared by every replica from
// the JWT secret, or makes a random one (pins then last one process).
func (c *Config) stickySecret() []byte {
	if c.Auth.JWTSecret != "" {
		m := hmac.New(sha256.New, []byte(c.Auth.JWTSecret))
		m.Write([]byte("api-gateway sticky cookie v1"))
		return m.Sum(nil)
	}
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// service maps one YAML service onto a gateway.Service.
func (c *Config) service(name string, svc Service, clientIP func(*http.Request) string, registry *discovery.Registry) (gateway.Service, error) {
	off := func(d Duration) time.Duration {
		if d == 0 {
			return -1
		}
		return d.D()
	}
	gs := gateway.Service{
		Name:                name,
		Timeout:             off(svc.Timeout),
		TryTimeout:          svc.TryTimeout.D(),
		RetryCount:          *svc.RetryCount,
		MaxConnsPerInstance: svc.MaxConnsPerInstance,
		QueueTimeout:        svc.QueueTimeout.D(),
		Retry: gateway.RetryPolicy{
			Budget: svc.Retry.Budget, MinPerSecond: svc.Retry.MinPerSecond,
			BackoffBase: svc.Retry.BackoffBase.D(), BackoffMax: svc.Retry.BackoffMax.D(),
			OnStatuses: svc.Retry.OnStatuses, BodyLimit: int64(svc.Retry.BodyLimit),
		},
	}
	if gs.RetryCount == 0 {
		gs.RetryCount = -1 // YAML 0 means "no retries"
	}
	for _, in := range svc.Instances {
		bi, err := balancer.NewInstance(in.URL, in.Weight)
		if err != nil {
			return gs, err
		}
		gs.Instances = append(gs.Instances, bi)
	}

	algo := svc.LoadBalancer.Algorithm
	if algo == "" {
		algo = "round_robin"
		if len(svc.Instances) > 1 || svc.Discovery != nil {
			algo = balancer.DefaultAlgorithm
		}
	}
	b, err := balancer.New(algo)
	if err != nil {
		return gs, err
	}
	if ss := svc.LoadBalancer.SlowStart.D(); ss != 0 {
		switch p := b.(type) {
		case *balancer.WeightedRoundRobin:
			p.SlowStart = ss
		case *balancer.HealthScore:
			p.SlowStart = ss
		}
	}
	switch st := svc.LoadBalancer.Sticky; st.Mode {
	case "cookie":
		b, err = balancer.NewCookieSticky(b, balancer.CookieSettings{
			Name: st.CookieName, Secret: c.stickySecret(), TTL: st.TTL.D(), Secure: st.Secure,
		})
		if err != nil {
			return gs, err
		}
	case "header", "ip":
		ch := &balancer.ConsistentHash{Header: st.Header, LoadFactor: st.BalanceFactor}
		if st.Mode == "ip" {
			ch.KeyFunc = clientIP
		}
		b = ch
	}
	gs.Balancer = b

	if hc := svc.HealthCheck; hc.Path != "" {
		gs.HealthCheck = health.ActiveSettings{
			Path: hc.Path, Interval: hc.Interval.D(), Timeout: hc.Timeout.D(),
			ExpectedStatus: hc.ExpectedStatus, HealthyThreshold: hc.HealthyThreshold,
			UnhealthyThreshold: hc.UnhealthyThreshold,
		}
	}
	od := svc.OutlierDetection
	gs.Outlier = gateway.OutlierPolicy{
		Disabled: od.Enabled != nil && !*od.Enabled,
		Settings: health.PassiveSettings{
			ConsecutiveFailures: od.ConsecutiveFailures, BaseEjection: od.BaseEjection.D(),
			MaxEjection: od.MaxEjection.D(), MaxEjectedPercent: od.MaxEjectedPercent,
		},
	}
	cb := svc.CircuitBreaker
	gs.CircuitBreaker = gateway.BreakerPolicy{
		Disabled:   cb.Enabled != nil && !*cb.Enabled,
		PerService: cb.PerService,
		Settings: breaker.Settings{
			ConsecutiveFailures: cb.ConsecutiveFailures, FailureRatio: cb.FailureRatio,
			MinRequests: cb.MinRequests, Window: cb.Window.D(), OpenTimeout: cb.OpenTimeout.D(),
			MaxOpenTimeout: cb.MaxOpenTimeout.D(), HalfOpenRequests: cb.HalfOpenRequests,
		},
		FailureStatuses: cb.FailureStatuses,
	}
	if d := svc.Discovery; d != nil {
		switch d.Type {
		case "dns":
			gs.Discovery = &discovery.DNS{Name: d.Name, Port: d.Port, SRV: d.SRV, Service: d.Service, Proto: d.Proto, Scheme: d.Scheme, Interval: d.Interval.D()}
		case "file":
			gs.Discovery = &discovery.File{Path: d.Path, Interval: d.Interval.D()}
		case "registry":
			if registry != nil {
				gs.Discovery = registry.Source(name)
			}
		}
	}
	return gs, nil
}
