package config

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/pyairtable/api-gateway/gateway"
	"github.com/pyairtable/api-gateway/gateway/transform"
)

// SplitTarget is one service of a weighted split.
type SplitTarget struct {
	Service string `yaml:"service"`
	Weight  int    `yaml:"weight"`
}

// Mirror copies sampled requests to another service.
type Mirror struct {
	Service   string   `yaml:"service"`
	Percent   float64  `yaml:"percent"`
	BodyLimit ByteSize `yaml:"body_limit"`
	Queue     int      `yaml:"queue"`
	Timeout   Duration `yaml:"timeout"`
}

// Fallback answers when a route's service has no available instance:
// another service, or a fixed problem (status, title, detail).
type Fallback struct {
	Service    string   `yaml:"service"`
	Status     int      `yaml:"status"`
	Title      string   `yaml:"title"`
	Detail     string   `yaml:"detail"`
	RetryAfter Duration `yaml:"retry_after"`
}

var splitSticky = map[string]gateway.SplitSticky{"": gateway.SplitRandom, "none": gateway.SplitRandom, "principal": gateway.SplitByPrincipal, "cookie": gateway.SplitByCookie}

func (c *Config) validateTraffic(v *validator) {
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if r.Transform != nil {
			if _, problems := transform.Compile(*r.Transform); len(problems) > 0 {
				for _, p := range problems {
					v.add(key+".transform."+p.Key, "%s", p.Msg)
				}
			}
		}
		for j, s := range r.Split {
			sk := fmt.Sprintf("%s.split[%d]", key, j)
			if _, ok := c.Services[s.Service]; !ok {
				v.add(sk+".service", "%q is not a defined service", s.Service)
			}
			if s.Weight <= 0 {
				v.add(sk+".weight", "must be positive")
			}
		}
		if _, ok := splitSticky[r.SplitSticky]; !ok {
			v.add(key+".split_sticky", "%q is not one of none, principal, cookie", r.SplitSticky)
		}
		if m := r.Mirror; m != nil {
			if _, ok := c.Services[m.Service]; !ok {
				v.add(key+".mirror.service", "%q is not a defined service", m.Service)
			}
			if m.Percent <= 0 || m.Percent > 100 {
				v.add(key+".mirror.percent", "%v is not in (0, 100]", m.Percent)
			}
		}
		if f := r.Fallback; f != nil {
			switch {
			case f.Service != "" && (f.Status != 0 || f.Title != ""):
				v.add(key+".fallback", "set either service or a static answer (status, title, detail), not both")
			case f.Service != "":
				if _, ok := c.Services[f.Service]; !ok {
					v.add(key+".fallback.service", "%q is not a defined service", f.Service)
				}
			case f.Status != 0 && (f.Status < 400 || f.Status > 599):
				v.add(key+".fallback.status", "%d is not an error status", f.Status)
			}
		}
	}
}

// traffic fills a gateway route's transform, split, mirror and fallback.
func (r Route) traffic(gr *gateway.Route) error {
	if r.Transform != nil {
		t, problems := transform.Compile(*r.Transform)
		if len(problems) > 0 {
			msgs := make([]string, len(problems))
			for i, p := range problems {
				msgs[i] = p.Error()
			}
			return fmt.Errorf("%s", strings.Join(msgs, "; "))
		}
		gr.Transform = t
	}
	for _, s := range r.Split {
		gr.Split = append(gr.Split, gateway.SplitTarget{Service: s.Service, Weight: s.Weight})
	}
	gr.SplitSticky = splitSticky[r.SplitSticky]
	if m := r.Mirror; m != nil {
		gr.Mirror = &gateway.Mirror{Service: m.Service, Percent: m.Percent, BodyLimit: int64(m.BodyLimit), Queue: m.Queue, Timeout: m.Timeout.D()}
	}
	if f := r.Fallback; f != nil {
		if f.Service != "" {
			gr.Fallback = &gateway.Fallback{Service: f.Service}
		} else {
			gr.Fallback = &gateway.Fallback{Problem: &gateway.Problem{Status: f.Status, Title: cmp.Or(f.Title, "Service unavailable"), Detail: f.Detail, RetryAfter: f.RetryAfter.D()}}
		}
	}
	return nil
}
