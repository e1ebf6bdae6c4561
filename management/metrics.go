package management

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// metricsPool keeps the store's collectors for the life of the process, so
// the write-error counter survives config reloads; each config registers
// them in its own metrics registry.
var metricsPool = caddy.NewUsagePool()

const metricsKey = "ai_gateway_store"

// storeMetrics report the health of the ledger writer of every open store:
// rows settled but not committed, the age of the oldest, and failed
// commits. The gauges are read from the stores when Prometheus scrapes.
type storeMetrics struct {
	writeErrors *prometheus.CounterVec // database
	backlog     *backlogCollector
}

// Destruct implements caddy.Destructor (nothing to release).
func (*storeMetrics) Destruct() error { return nil }

func newStoreMetrics() *storeMetrics {
	const ns = "caddy_ai_gateway"
	return &storeMetrics{
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "ledger_write_errors_total",
			Help: "Batches of ledger rows that failed to commit (each is retried until it commits).",
		}, []string{"database"}),
		backlog: &backlogCollector{
			pending: prometheus.NewDesc(ns+"_ledger_pending_writes",
				"Ledger rows settled but not yet committed to the database.", []string{"database"}, nil),
			oldest: prometheus.NewDesc(ns+"_ledger_oldest_pending_seconds",
				"Age of the oldest ledger row not yet committed (0 when none).", []string{"database"}, nil),
			failing: prometheus.NewDesc(ns+"_ledger_backlogged",
				"1 while the write backlog is past its bound and billed requests are refused with 503.", []string{"database"}, nil),
		},
	}
}

// loadStoreMetrics takes a reference on the shared collectors and registers
// them in this config's registry; release it with releaseStoreMetrics.
func loadStoreMetrics(ctx caddy.Context) (*storeMetrics, error) {
	val, _, err := metricsPool.LoadOrNew(metricsKey, func() (caddy.Destructor, error) { return newStoreMetrics(), nil })
	if err != nil {
		return nil, err
	}
	m := val.(*storeMetrics)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, c := range []prometheus.Collector{m.writeErrors, m.backlog} {
			if err := reg.Register(c); err != nil {
				var already prometheus.AlreadyRegisteredError
				if !errors.As(err, &already) {
					_, _ = metricsPool.Delete(metricsKey) // give back the reference taken above
					return nil, fmt.Errorf("registering metrics: %w", err)
				}
			}
		}
	}
	return m, nil
}

func releaseStoreMetrics(m *storeMetrics) {
	if m != nil {
		_, _ = metricsPool.Delete(metricsKey)
	}
}

// backlogCollector reads the writer's backlog of every open store.
type backlogCollector struct {
	pending, oldest, failing *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.oldest
	ch <- c.failing
}

// Collect implements prometheus.Collector.
func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	storePool.Range(func(key, val any) bool {
		ps, ok := val.(pooledStore)
		path, _ := key.(string)
		if !ok || ps.Store == nil {
			return true
		}
		path = keystore.RedactDatabase(path) // a PostgreSQL URL may hold a password
		failing := 0.0
		if ps.WriteBacklog() != nil {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(ps.PendingWrites()), path)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, ps.OldestPendingAge().Seconds(), path)
		ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, failing, path)
		return true
	})
}

// Interface guards
var (
	_ caddy.Destructor     = (*storeMetrics)(nil)
	_ prometheus.Collector = (*backlogCollector)(nil)
)
