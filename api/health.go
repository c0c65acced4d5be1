package api

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connmgr/connmgr/connections"
)

// Health reads, at each scrape, what the health metrics show.
type Health struct {
	// Statuses counts the connections of each status.
	Statuses func(ctx context.Context) (map[connections.Status]int, error)
	// Expiries returns when each connection's current token expires, by
	// connection name.
	Expiries func(ctx context.Context) (map[string]time.Time, error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// healthTimeout bounds the database reads of one scrape.
const healthTimeout = 5 * time.Second

var (
	connectionsDesc = prometheus.NewDesc("connmgr_connections",
		"Connections by status (DRAFT, CONFIGURED, ERROR, NEEDS_CONSENT), across every replica.", []string{"status"}, nil)
	expiryDesc = prometheus.NewDesc("connmgr_token_expiry_seconds",
		"Seconds until the current token of each connection with tokens expires (negative: expired).", []string{"connection"}, nil)
)

// Describe implements prometheus.Collector.
func (h *Health) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectionsDesc
	ch <- expiryDesc
}

// Collect implements prometheus.Collector. A failed read leaves its
// metric out of the scrape rather than fail it.
func (h *Health) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), healthTimeout)
	defer cancel()
	if counts, err := h.Statuses(ctx); err == nil {
		for _, st := range connections.Statuses {
			ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	if exp, err := h.Expiries(ctx); err == nil {
		t := now()
		for name, at := range exp {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, at.Sub(t).Seconds(), name)
		}
	}
}
