package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DNS resolves a service name periodically: either the A/AAAA records of
// Name (each address with Port), or its SRV records (each target with the
// record's port and weight). Both work with Kubernetes headless services:
// A/AAAA lists the ready pods, SRV also carries the named port.
//
// A name that does not exist (NXDOMAIN) is an empty set; any other lookup
// error keeps the last set and is logged, so a flaky resolver does not empty
// the pool. The struct is read, not modified, by Watch: one value may serve
// several concurrent Watch calls.
type DNS struct {
	// Name is the host name to resolve (a trailing dot avoids search
	// domains). With SRV and both Service and Proto empty it is the full
	// SRV owner name, e.g. "_http._tcp.api.default.svc.cluster.local.".
	Name string
	// Port is the port used with A/AAAA records. If zero, 80 for http and
	// 443 for https. It is ignored for SRV, whose records carry the port.
	Port int
	// SRV selects an SRV lookup instead of A/AAAA. Only the records of the
	// lowest priority are used: higher ones are backups by definition.
	SRV bool
	// Service and Proto build the SRV owner name _Service._Proto.Name
	// (e.g. "http" and "tcp"). If both are empty, Name is looked up as is.
	Service, Proto string
	// Scheme is "http" or "https". If empty, "http" is used.
	Scheme string
	// Interval is how often the name is resolved again. If zero, 30s is
	// used. Each lookup is also bounded by it.
	Interval time.Duration
	// Resolver performs the lookups. If nil, net.DefaultResolver is used.
	Resolver *net.Resolver
	// Logger receives lookup errors. If nil, slog.Default() is used.
	Logger *slog.Logger
}

// Watch implements [Source]. An invalid Scheme or Port is a fatal error.
func (d *DNS) Watch(ctx context.Context, ch chan<- []Endpoint) error {
	scheme := cmp.Or(strings.ToLower(d.Scheme), "http")
	if scheme != "http" && scheme != "https" {
		return fmt.Errorf("%w: DNS scheme %q is not http or https", ErrInvalidEndpoint, d.Scheme)
	}
	port := d.Port
	if port == 0 && !d.SRV {
		port = 80
		if scheme == "https" {
			port = 443
		}
	}
	if port < 0 || port > 65535 {
		return fmt.Errorf("%w: DNS port %d out of range", ErrInvalidEndpoint, d.Port)
	}
	if d.Name == "" {
		return fmt.Errorf("%w: DNS name is empty", ErrInvalidEndpoint)
	}
	interval := cmp.Or(d.Interval, 30*time.Second)
	res := cmp.Or(d.Resolver, net.DefaultResolver)
	log := cmp.Or(d.Logger, slog.Default())

	var last []Endpoint
	sent := false
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, interval)
		eps, err := d.lookup(lctx, res, scheme, port)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			log.Warn("discovery: DNS lookup failed; keeping the last endpoint set",
				"name", d.Name, "srv", d.SRV, "error", err)
		case !sent || !equal(eps, last):
			if !send(ctx, ch, clone(eps)) {
				return ctx.Err()
			}
			last, sent = eps, true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (d *DNS) lookup(ctx context.Context, res *net.Resolver, scheme string, port int) ([]Endpoint, error) {
	var eps []Endpoint
	if d.SRV {
		_, srvs, err := res.LookupSRV(ctx, d.Service, d.Proto, d.Name)
		if err != nil {
			if isNotFound(err) {
				return []Endpoint{}, nil
			}
			return nil, err
		}
		if len(srvs) == 0 {
			return []Endpoint{}, nil
		}
		best := slices.MinFunc(srvs, func(a, b *net.SRV) int { return cmp.Compare(a.Priority, b.Priority) }).Priority
		for _, s := range srvs {
			if s.Priority != best {
				continue
			}
			host := strings.TrimSuffix(s.Target, ".")
			eps = append(eps, Endpoint{
				URL:    (&url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(int(s.Port)))}).String(),
				Weight: int(s.Weight),
			})
		}
	} else {
		addrs, err := res.LookupNetIP(ctx, "ip", d.Name)
		if err != nil {
			if isNotFound(err) {
				return []Endpoint{}, nil
			}
			return nil, err
		}
		for _, a := range addrs {
			eps = append(eps, Endpoint{
				URL: (&url.URL{Scheme: scheme, Host: net.JoinHostPort(a.Unmap().WithZone("").String(), strconv.Itoa(port))}).String(),
			})
		}
	}
	return normalize(eps)
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
