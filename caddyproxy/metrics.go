package caddyproxy

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// metricsPool keeps one set of collectors for the life of the process, so
// counters survive config reloads; each config registers the same
// collectors in its own metrics registry.
var metricsPool = caddy.NewUsagePool()

const metricsKey = "ai_gateway"

// metrics are the gateway's Prometheus collectors. Label values are bounded:
// model labels are configured price patterns (or "unknown" / "unpriced"),
// never what a client sent, and there are no per-key or per-account labels.
type metrics struct {
	requests  *prometheus.CounterVec // model, code (status class)
	tokens    *prometheus.CounterVec // model, kind
	cost      *prometheus.CounterVec // model
	estimated *prometheus.CounterVec // model
	rejected  *prometheus.CounterVec // Reason: balance_guard refusals
	// rateLimited counts refusals by a rate limit: kind, scope.
	rateLimited *prometheus.CounterVec
	holds       *holdsCollector
}

// Destruct implements caddy.Destructor (nothing to release).
func (*metrics) Destruct() error { return nil }

func newMetrics() *metrics {
	const ns = "caddy_ai_gateway"
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "Metered requests by model price and upstream status class (2xx, 4xx, 5xx, ...).",
		}, []string{"model", "code"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "tokens_total",
			Help: "Tokens charged by model price and kind (prompt, completion, cached, reasoning).",
		}, []string{"model", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "cost_total",
			Help: "Amount charged, in units of the configured currency.",
		}, []string{"model"}),
		estimated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "estimated_charges_total",
			Help: "Requests charged by estimate because the provider reported no usage.",
		}, []string{"model"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "rejected_total",
			Help: "Requests refused by balance_guard before reaching the provider, by reason.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "rate_limited_total",
			Help: "Requests refused by a rate limit, by kind (rpm, tpm, concurrency, rpd, tpd) and scope (key, account, model).",
		}, []string{"kind", "scope"}),
		holds: &holdsCollector{
			count: prometheus.NewDesc(ns+"_holds_in_flight", "Reservations held for requests in flight.", []string{"database"}, nil),
			sum: prometheus.NewDesc(ns+"_held_amount", "Amount held for requests in flight, in units of the configured currency.",
				[]string{"database"}, nil),
			stores: map[storeSource]int{},
		},
	}
}

// loadMetrics takes a reference on the shared collectors and registers them
// in this config's registry. Release it with releaseMetrics in Cleanup.
func loadMetrics(ctx caddy.Context, store storeSource) (*metrics, error) {
	val, _, err := metricsPool.LoadOrNew(metricsKey, func() (caddy.Destructor, error) { return newMetrics(), nil })
	if err != nil {
		return nil, err
	}
	m := val.(*metrics)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.tokens, m.cost, m.estimated, m.rejected, m.rateLimited, m.holds} {
			if err := reg.Register(c); err != nil {
				var already prometheus.AlreadyRegisteredError
				if !errors.As(err, &already) {
					_, _ = metricsPool.Delete(metricsKey) // give back the reference taken above
					return nil, fmt.Errorf("registering metrics: %w", err)
				}
			}
		}
	}
	m.holds.add(store)
	return m, nil
}

// labelMetrics are the counters of one model label, resolved once so that a
// settlement does not hash label values.
type labelMetrics struct {
	requests  [7]prometheus.Counter // by status class: index status/100, 0 and 6 for the rest
	tokens    [4]prometheus.Counter // prompt, completion, cached, reasoning
	cost      prometheus.Counter
	estimated prometheus.Counter
}

// forLabel resolves the counters of a model label.
func (m *metrics) forLabel(label string) *labelMetrics {
	lm := &labelMetrics{
		cost:      m.cost.WithLabelValues(label),
		estimated: m.estimated.WithLabelValues(label),
	}
	for i := range lm.requests {
		code := strconv.Itoa(i) + "xx"
		if i == 0 || i == 6 {
			code = "other"
		}
		lm.requests[i] = m.requests.WithLabelValues(label, code)
	}
	for i, kind := range []string{"prompt", "completion", "cached", "reasoning"} {
		lm.tokens[i] = m.tokens.WithLabelValues(label, kind)
	}
	return lm
}

// request counts a request that ended with status.
func (lm *labelMetrics) request(status int) {
	i := status / 100
	if i < 1 || i > 5 {
		i = 0
	}
	lm.requests[i].Inc()
}

func releaseMetrics(m *metrics, store storeSource) {
	if m == nil {
		return
	}
	m.holds.remove(store)
	_, _ = metricsPool.Delete(metricsKey)
}

// storeSource is where the guard finds the key store: the ai_gateway app
// (management.App), which opens it when the config starts.
type storeSource interface{ Store() *keystore.Store }

// holdsCollector reports the reservations in flight of every store a
// running config uses, read when Prometheus scrapes.
type holdsCollector struct {
	count, sum *prometheus.Desc

	mu     sync.Mutex
	stores map[storeSource]int // reference counts
}

func (c *holdsCollector) add(s storeSource) {
	c.mu.Lock()
	c.stores[s]++
	c.mu.Unlock()
}

func (c *holdsCollector) remove(s storeSource) {
	c.mu.Lock()
	if c.stores[s]--; c.stores[s] <= 0 {
		delete(c.stores, s)
	}
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *holdsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.count
	ch <- c.sum
}

// Collect implements prometheus.Collector.
func (c *holdsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	// Configs that share a store (during a reload) report it once.
	seen := make(map[*keystore.Store]bool, len(c.stores))
	stores := make([]*keystore.Store, 0, len(c.stores))
	for src := range c.stores {
		if s := src.Store(); s != nil && !seen[s] {
			seen[s] = true
			stores = append(stores, s)
		}
	}
	c.mu.Unlock()
	for _, s := range stores {
		n, amount := s.HoldsInFlight()
		ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(n), s.Path())
		ch <- prometheus.MustNewConstMetric(c.sum, prometheus.GaugeValue, nanoToUnits(amount), s.Path())
	}
}

// nanoToUnits converts for metrics only (floats never touch balances).
func nanoToUnits(n int64) float64 { return float64(n) / float64(keystore.NanoPerUnit) }

// Interface guards
var (
	_ caddy.Destructor     = (*metrics)(nil)
	_ prometheus.Collector = (*holdsCollector)(nil)
)
