package caddyauth

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// metricsPool keeps one set of collectors for the life of the process, so
// counters survive config reloads; each config registers the same
// collectors in its own metrics registry.
var metricsPool = caddy.NewUsagePool()

const metricsKey = "ai_gateway_auth"

// metrics are the authenticators' Prometheus collectors. Reasons are a
// bounded set of labels (see check.go).
type metrics struct {
	authFailures *prometheus.CounterVec // reason
}

// Destruct implements caddy.Destructor (nothing to release).
func (*metrics) Destruct() error { return nil }

func newMetrics() *metrics {
	return &metrics{
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy_ai_gateway", Name: "auth_failures_total",
			Help: "Requests refused by the API key check, by reason.",
		}, []string{"reason"}),
	}
}

// loadMetrics takes a reference on the shared collectors and registers them
// in this config's registry. Release it with releaseMetrics in Cleanup.
func loadMetrics(ctx caddy.Context) (*metrics, error) {
	val, _, err := metricsPool.LoadOrNew(metricsKey, func() (caddy.Destructor, error) { return newMetrics(), nil })
	if err != nil {
		return nil, err
	}
	m := val.(*metrics)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		if err := reg.Register(m.authFailures); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				_, _ = metricsPool.Delete(metricsKey) // give back the reference taken above
				return nil, fmt.Errorf("registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

func releaseMetrics(m *metrics) {
	if m != nil {
		_, _ = metricsPool.Delete(metricsKey)
	}
}

// Interface guard
var _ caddy.Destructor = (*metrics)(nil)
