package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strings"
)

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }

// validator collects semantic problems, each located at the line where
// its key was written (or named as an environment override).
type validator struct {
	c        *Config
	file     string
	problems []Problem
}

func (v *validator) add(key, format string, args ...any) {
	line, ok := v.c.lines[key]
	file := v.file
	if ok && line < 0 {
		file, line = "environment", 0
		for _, e := range envKeys {
			if e.key == key {
				key = e.env + " (" + key + ")"
			}
		}
	}
	if !ok {
		// Fall back to the nearest enclosing key that was written.
		for k := key; k != ""; {
			i := strings.LastIndexAny(k, ".[")
			if i < 0 {
				break
			}
			k = k[:i]
			if l, ok := v.c.lines[k]; ok && l > 0 {
				line = l
				break
			}
		}
	}
	v.problems = append(v.problems, Problem{File: file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

var (
	environments = []string{"development", "test", "staging", "production"}
	logLevels    = []string{"debug", "info", "warn", "error"}
	logFormats   = []string{"json", "text"}
)

func (c *Config) validate(file string) []Problem {
	v := &validator{c: c, file: file}
	s := c.Server
	if !slices.Contains(environments, s.Environment) {
		v.add("server.environment", "%q is not one of %s", s.Environment, strings.Join(environments, ", "))
	}
	checkPort(v, "server.port", s.Port)
	checkPort(v, "admin.port", c.Admin.Port)
	if c.Admin.Port == s.Port && (c.Admin.Host == s.Host || s.Host == "0.0.0.0" || s.Host == "" || s.Host == "::") {
		v.add("admin.port", "%d is also the main port; the admin listener needs its own", c.Admin.Port)
	}
	if s.Limits.MaxURLLength < 256 {
		v.add("server.limits.max_url_length", "%d is below 256", s.Limits.MaxURLLength)
	}
	if s.Limits.MaxHeaderCount < 10 {
		v.add("server.limits.max_header_count", "%d is below 10", s.Limits.MaxHeaderCount)
	}
	if s.Limits.MaxConnsPerIP < 0 {
		v.add("server.limits.max_conns_per_ip", "%d is negative", s.Limits.MaxConnsPerIP)
	}
	if s.Concurrency < 1 {
		v.add("server.concurrency", "%d must be at least 1", s.Concurrency)
	}
	if s.BodyLimit < 1 {
		v.add("server.body_limit", "must be positive")
	}
	for i, p := range s.TrustedProxies {
		key := fmt.Sprintf("server.trusted_proxies[%d]", i)
		pf, err := parsePrefix(p)
		if err != nil {
			v.add(key, "%q is not an IP address or CIDR prefix", p)
			continue
		}
		if pf.Bits() == 0 && c.Production() {
			v.add(key, "%q trusts every address to set X-Forwarded-For; production refuses it (name your proxies' networks)", p)
		}
	}
	if !slices.Contains(logLevels, c.Log.Level) {
		v.add("log.level", "%q is not one of %s", c.Log.Level, strings.Join(logLevels, ", "))
	}
	if c.Log.Sample < 0 || c.Log.Sample > 1 {
		v.add("log.sample", "%v is not between 0 and 1", c.Log.Sample)
	}
	if !slices.Contains(logFormats, c.Log.Format) {
		v.add("log.format", "%q is not one of %s", c.Log.Format, strings.Join(logFormats, ", "))
	}
	if c.Admin.Pprof && c.Production() && !isLoopback(c.Admin.Host) {
		v.add("admin.pprof", "exposes profiling on %s; production allows it only on a loopback admin host", c.Admin.Host)
	}
	c.validateAuth(v)
	c.validateRateLimits(v)
	c.validateWebSocket(v)
	c.validateTraffic(v)
	if c.Production() && c.Auth.JWTSecret != "" && len(c.Auth.JWTSecret) < 32 {
		v.add("auth.jwt_secret", "is %d bytes; production needs at least 32 random bytes (set JWT_SECRET)", len(c.Auth.JWTSecret))
	}
	if c.Production() && !c.hasAuthenticator() {
		for i, r := range c.Routes {
			if !r.Public {
				v.add(fmt.Sprintf("routes[%d]", i), "needs authentication but no authenticator is configured (auth.jwt_secret, public_keys, jwks_url or api_keys); production refuses to start with every such route answering 401")
				break
			}
		}
	}
	rl := c.Security.RateLimit
	if rl.Enabled && rl.GlobalLimit <= 0 && rl.PerIPLimit <= 0 && rl.PerUserLimit <= 0 {
		v.add("security.rate_limit", "enabled but none of global_limit, per_ip_limit, per_user_limit is set")
	}
	if rl.GlobalLimit < 0 {
		v.add("security.rate_limit.global_limit", "%d is negative", rl.GlobalLimit)
	}
	if rl.PerIPLimit < 0 {
		v.add("security.rate_limit.per_ip_limit", "%d is negative", rl.PerIPLimit)
	}
	if rl.RedisURL != "" {
		if u, err := url.Parse(rl.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			v.add("security.rate_limit.redis_url", "%q is not a redis:// or rediss:// URL", redact(rl.RedisURL))
		}
	}

	if len(c.Services) == 0 {
		v.add("services", "no services are defined")
	}
	for _, name := range c.ServiceNames() {
		svc := c.Services[name]
		key := "services." + name
		c.validateService(v, name, svc)
		if len(svc.Instances) == 0 && svc.Discovery == nil {
			v.add(key, "needs a url, instances or discovery")
		}
		if svc.URL != "" && len(svc.Instances) > 0 {
			v.add(key+".url", "set either url or instances, not both")
		}
		seen := map[string]bool{}
		for i, in := range svc.Instances {
			ik := fmt.Sprintf("%s.instances[%d].url", key, i)
			if _, ok := c.lines[ik]; !ok {
				ik = key + ".url" // the single-url form
			}
			if !absHTTP(in.URL) {
				v.add(ik, "%q is not an absolute http(s) URL", in.URL)
			}
			if seen[in.URL] {
				v.add(ik, "%q is listed twice", in.URL)
			}
			seen[in.URL] = true
			if in.Weight < 0 {
				v.add(fmt.Sprintf("%s.instances[%d].weight", key, i), "%d is negative", in.Weight)
			}
		}
		if svc.RetryCount != nil && *svc.RetryCount < 0 {
			v.add(key+".retry_count", "%d is negative", *svc.RetryCount)
		}
		if svc.MaxConnsPerInstance < 0 {
			v.add(key+".max_conns_per_instance", "%d is negative", svc.MaxConnsPerInstance)
		}
		if svc.QueueTimeout > 0 && svc.MaxConnsPerInstance == 0 {
			v.add(key+".queue_timeout", "has no effect without max_conns_per_instance")
		}
	}

	type routeKey struct{ host, path, prefix, method string }
	seen := map[routeKey]int{}
	names := map[string]int{}
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Path == "" && r.Prefix == "":
			v.add(key, "needs a path or a prefix")
		case r.Path != "" && r.Prefix != "":
			v.add(key, "set either path or prefix, not both")
		}
		for _, f := range []struct{ k, p string }{{"path", r.Path}, {"prefix", r.Prefix}} {
			if f.p == "" {
				continue
			}
			if f.p[0] != '/' {
				v.add(key+"."+f.k, "%q must start with /", f.p)
			} else if strings.Contains(f.p, "//") || strings.Contains(f.p+"/", "/./") || strings.Contains(f.p+"/", "/../") {
				v.add(key+"."+f.k, "%q is not a clean path", f.p)
			}
		}
		if r.Service == "" && len(r.Split) == 0 {
			v.add(key, "needs a service (or a split)")
		} else if r.Service == "" {
		} else if _, ok := c.Services[r.Service]; !ok {
			v.add(key+".service", "%q is not a defined service", r.Service)
		}
		if r.StripPrefix && r.Prefix == "" {
			v.add(key+".strip_prefix", "needs a prefix to strip")
		}
		if r.Public && len(r.Roles) > 0 {
			v.add(key+".roles", "a public route cannot require roles")
		}
		if r.Name != "" {
			if j, dup := names[r.Name]; dup {
				v.add(key+".name", "%q is also the name of routes[%d]", r.Name, j)
			}
			names[r.Name] = i
		}
		methods := r.Methods
		if len(methods) == 0 {
			methods = []string{"*"}
		}
		for mi, m := range methods {
			if m != "*" && !validMethod(m) {
				v.add(fmt.Sprintf("%s.methods[%d]", key, mi), "%q is not an HTTP method", m)
			}
			k := routeKey{strings.ToLower(r.Host), trimSlash(r.Path), trimSlash(r.Prefix), strings.ToUpper(m)}
			if j, dup := seen[k]; dup {
				v.add(key, "duplicates routes[%d] (same host, path or prefix, and method)", j)
				break
			}
			seen[k] = i
		}
	}
	return v.problems
}

func checkPort(v *validator, key string, p int) {
	if p < 1 || p > 65535 {
		v.add(key, "%d is not a port (1-65535)", p)
	}
}

func parsePrefix(s string) (netip.Prefix, error) {
	if pf, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
		return pf, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func absHTTP(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil
}

func validMethod(m string) bool {
	if m == "" || len(m) > 20 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('A' <= c && c <= 'Z') && !('a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

func trimSlash(p string) string {
	if len(p) > 1 {
		return strings.TrimSuffix(p, "/")
	}
	return p
}

// redact hides the password of a URL.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
