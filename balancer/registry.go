package balancer

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultAlgorithm is the policy for services with several instances when
// the configuration names none.
const DefaultAlgorithm = "health_score"

// ErrUnknownAlgorithm is returned by [New] for a name it does not know.
var ErrUnknownAlgorithm = errors.New("balancer: unknown algorithm")

// algorithms is the name → constructor table used by configuration. It is
// explicit, not filled by init functions, so the set is visible here. Each
// entry builds a policy with default settings; embedders who need other
// settings construct the types directly.
var algorithms = [...]struct {
	name string
	new  func() Balancer
}{
	{"round_robin", func() Balancer { return &RoundRobin{} }},
	{"weighted_round_robin", func() Balancer { return &WeightedRoundRobin{} }},
	{"least_connections", func() Balancer { return &LeastConnections{} }},
	{"random", func() Balancer { return &Random{} }},
	{"latency", func() Balancer { return &Latency{} }},
	{"health_score", func() Balancer { return &HealthScore{} }},
	{"consistent_hash", func() Balancer { return &ConsistentHash{} }},
}

// New returns a new balancer of the named algorithm with default settings.
// The names are those of [Algorithms]; an unknown name gives an error that
// wraps [ErrUnknownAlgorithm] and lists the valid ones.
func New(algorithm string) (Balancer, error) {
	for _, a := range algorithms {
		if a.name == algorithm {
			return a.new(), nil
		}
	}
	return nil, fmt.Errorf("%w %q (valid: %s)", ErrUnknownAlgorithm, algorithm, strings.Join(Algorithms(), ", "))
}

// Algorithms returns the names New accepts, in a stable order.
func Algorithms() []string {
	names := make([]string, len(algorithms))
	for i, a := range algorithms {
		names[i] = a.name
	}
	return names
}
