// Package discovery tells the gateway where the instances of a service are.
//
// A [Source] watches one service and delivers its full endpoint set each time
// it changes. The package ships four sources: [Static] for fixed lists,
// [DNS] for A/AAAA or SRV records (Kubernetes headless services included),
// [File] for a JSON or YAML list that operators edit, and [Registry], an
// admin HTTP endpoint where instances register themselves and heartbeat.
//
// Every set a source delivers is normalised: URLs are validated and written
// in one canonical form, weights below 1 become 1, duplicates are merged and
// the result is sorted by URL. Two deliveries can therefore be compared
// element by element, and a source only delivers when the set really changed.
//
// This package does not depend on package balancer; the gateway turns
// endpoints into balancer instances.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// ErrInvalidEndpoint is wrapped by errors about an endpoint whose URL is not
// an absolute http or https URL.
var ErrInvalidEndpoint = errors.New("discovery: invalid endpoint")

// Endpoint is one instance of a service as a source reports it.
type Endpoint struct {
	// URL is the absolute http or https base URL of the instance.
	URL string `json:"url" yaml:"url"`
	// Weight is the instance's relative share. If zero (or negative), 1 is
	// used.
	Weight int `json:"weight,omitempty" yaml:"weight,omitempty"`
	// Meta carries free-form labels (zone, version). Receivers must treat it
	// as read-only.
	Meta map[string]string `json:"meta,omitempty" yaml:"meta,omitempty"`
}

// Source reports the current endpoints of one service.
type Source interface {
	// Watch sends the full current endpoint set on ch whenever it changes
	// (and once at start), until ctx is done; it returns ctx.Err() or a
	// fatal error. It must not close ch. Each slice sent belongs to the
	// receiver.
	Watch(ctx context.Context, ch chan<- []Endpoint) error
}

// canonicalURL validates raw and returns it with a lower-case scheme and
// host and without a bare trailing "/", so that equal addresses compare
// equal.
func canonicalURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidEndpoint, err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrInvalidEndpoint, raw)
	}
	if u.User != nil {
		// Credentials would end up in logs and metrics labels.
		return "", fmt.Errorf("%w: URL of host %q carries credentials", ErrInvalidEndpoint, u.Host)
	}
	u.Host = strings.ToLower(u.Host)
	if u.Path == "/" {
		u.Path, u.RawPath = "", ""
	}
	return u.String(), nil
}

// normalize returns a new, sorted, duplicate-free copy of eps in canonical
// form. When two entries share a URL the first one wins.
func normalize(eps []Endpoint) ([]Endpoint, error) {
	out := make([]Endpoint, 0, len(eps))
	for _, e := range eps {
		u, err := canonicalURL(e.URL)
		if err != nil {
			return nil, err
		}
		e.URL = u
		if e.Weight < 1 {
			e.Weight = 1
		}
		if len(e.Meta) == 0 {
			e.Meta = nil
		} else {
			e.Meta = maps.Clone(e.Meta)
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b Endpoint) int { return strings.Compare(a.URL, b.URL) })
	return slices.CompactFunc(out, func(a, b Endpoint) bool { return a.URL == b.URL }), nil
}

// equal reports whether two normalised sets are the same.
func equal(a, b []Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y Endpoint) bool {
		return x.URL == y.URL && x.Weight == y.Weight && maps.Equal(x.Meta, y.Meta)
	})
}

// clone copies a normalised set so that the receiver owns what it gets.
func clone(eps []Endpoint) []Endpoint {
	out := make([]Endpoint, len(eps))
	for i, e := range eps {
		e.Meta = maps.Clone(e.Meta)
		out[i] = e
	}
	return out
}

// send delivers eps on ch unless ctx ends first; it reports whether it did.
func send(ctx context.Context, ch chan<- []Endpoint, eps []Endpoint) bool {
	select {
	case ch <- eps:
		return true
	case <-ctx.Done():
		return false
	}
}

// Static is a fixed endpoint set. Its Watch sends the set once and then waits
// for ctx; an invalid URL is a fatal error. It is safe for concurrent use as
// long as the slice is not modified.
type Static []Endpoint

// Watch implements [Source].
func (s Static) Watch(ctx context.Context, ch chan<- []Endpoint) error {
	eps, err := normalize(s)
	if err != nil {
		return err
	}
	if !send(ctx, ch, eps) {
		return ctx.Err()
	}
	<-ctx.Done()
	return ctx.Err()
}
