// Package kubernetes holds plain Kubernetes manifests for the api-gateway
// binary (no Go code): three replicas behind a ClusterIP Service, a
// PodDisruptionBudget, Redis for shared rate limits and WebSocket
// broadcasts, a ConfigMap the gateway hot-reloads, and an example headless
// Service for a backend discovered by DNS. See README.md.
//
// The package's tests parse every manifest and check it against the
// binary's real configuration schema and defaults (package
// gateway/config) and its system endpoints (package gateway), so the
// manifests cannot drift from the binary unnoticed.
package kubernetes
