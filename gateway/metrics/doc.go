// Package metrics defines every Prometheus metric the gateway exports, in one
// place, with bounded label sets.
//
// [New] registers the metrics, plus the Go runtime and process collectors, on
// an explicit [prometheus.Registerer] (never the global one) and
// [Metrics.Handler] serves them. The gateway calls the recording methods
// (ObserveRequest, ObserveAttempt, Retry, ...) from its hot paths: they
// resolve label values through a lock-free cache, so a steady-state call is a
// map lookup plus atomic adds, with no allocation and no shared lock.
//
// Labels are bounded by construction: routes and services are configuration
// names, instances are host:port from discovery, status codes are reduced to
// a class and methods to a fixed set; no method takes a raw path. As a last
// guard, each metric recorded per request or attempt keeps at most
// [Settings.MaxSeries] label combinations; further ones are recorded under
// the label value "_overflow" and counted in
// gateway_metrics_label_overflow_total. [Metrics.Forget] and
// [Metrics.ForgetRoute] delete the series of instances and routes that are
// gone.
//
// A nil *Metrics records nothing, so the gateway needs no checks when metrics
// are disabled.
//
// # Metrics
//
// All names carry the namespace "gateway_"; times are in seconds and sizes in
// bytes. code is a status class: 1xx, 2xx, 3xx, 4xx, 5xx, "other" for a
// status outside 100-599 and "error" for no response (status 0, e.g. a
// transport error). method is GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or
// "other".
//
//	Name                                                  Type       Labels
//	gateway_requests_total                                counter    route, service, method, code
//	gateway_request_duration_seconds                      histogram  route, service, method, code
//	gateway_requests_in_flight                            gauge      route
//	gateway_request_size_bytes                            histogram  route
//	gateway_response_size_bytes                           histogram  route
//	gateway_upstream_attempts_total                       counter    service, instance, code
//	gateway_upstream_attempt_duration_seconds             histogram  service, instance, code
//	gateway_retries_total                                 counter    service, reason
//	gateway_breaker_state                                 gauge      service, instance (0 closed, 1 half-open, 2 open)
//	gateway_breaker_transitions_total                     counter    service, instance, from, to
//	gateway_instance_healthy                              gauge      service, instance (1 healthy, 0 not)
//	gateway_instance_ejections_total                      counter    service, instance
//	gateway_balancer_picks_total                          counter    service, instance
//	gateway_ratelimit_decisions_total                     counter    policy, decision (allowed, limited)
//	gateway_ratelimit_store_errors_total                  counter    store
//	gateway_auth_failures_total                           counter    reason
//	gateway_websocket_connections                         gauge      -
//	gateway_websocket_subscriptions                       gauge      -
//	gateway_websocket_messages_total                      counter    direction (in, out)
//	gateway_websocket_drops_total                         counter    -
//	gateway_config_reloads_total                          counter    result (success, failure)
//	gateway_config_last_reload_success_timestamp_seconds  gauge      -
//	gateway_config_last_reload_success                    gauge      - (1 last reload succeeded, 0 failed)
//	gateway_mirror_requests_total                         counter    service, outcome (sent, dropped, mismatch, error, other)
//	gateway_build_info                                    gauge      version, goversion (always 1)
//	gateway_metrics_label_overflow_total                  counter    metric
//
// Duration histograms default to the buckets .001 .0025 .005 .01 .025 .05 .1
// .25 .5 1 2.5 5 10 seconds; size histograms to powers of ten from 100 B to
// 100 MB.
package metrics
