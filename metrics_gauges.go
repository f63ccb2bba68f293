package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The gauges are the hub's counts, read in one snapshot per scrape, so that
// they are of one instant (sessions by state add up to what health says) and
// a scrape costs the hub one ordinary step: every count is one the hub keeps
// as it goes, never one it would have to compute over its sessions or games.

// countsRequest asks the hub for its counts, for a scrape.
type countsRequest struct {
	reply chan hubCounts
}

// hubCounts is what the gauges show, at one instant.
type hubCounts struct {
	connected, away int // sessions with a conn, and without
	users, games    int
	historyBytes    int
}

// counts answers a countsRequest. Runs on the hub goroutine.
func (h *hub) counts() hubCounts {
	x := h.idx
	return hubCounts{connected: len(x.sessions) - x.away, away: x.away, users: len(x.byUser), games: len(x.byGame),
		historyBytes: x.historyHeld}
}

// askCounts asks h for its counts; ok is false once the hub has stopped.
func (h *hub) askCounts() (hubCounts, bool) {
	reply := make(chan hubCounts, 1)
	return ask(h, countsRequest{reply: reply}, reply)
}

// stateCollector is the custom collector of the gauges and of the webhook's
// counts, which the webhook keeps in its own atomics.
type stateCollector struct {
	// set at construction
	ask      func() (hubCounts, bool) // the hub's counts, one request per call
	draining func() bool
	hook     *webhook // nil without WEBHOOK_URL

	connections, sessions, users, games, history, drain, deliveries *prometheus.Desc
}

// watch registers the gauges, read from ask once per scrape, and the
// webhook's deliveries (hook may be nil).
func (m *metrics) watch(ask func() (hubCounts, bool), draining func() bool, hook *webhook) {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	m.reg.MustRegister(&stateCollector{ask: ask, draining: draining, hook: hook,
		connections: desc("dugout_connections", "Open WebSocket connections: the sessions the hub has a connection for."),
		sessions:    desc("dugout_sessions", "Sessions by state.", "state"),
		users:       desc("dugout_users", "Distinct user ids with a session."),
		games:       desc("dugout_games", "Games with at least one seat."),
		history:     desc("dugout_history_bytes", "Bytes of game history held."),
		drain:       desc("dugout_draining", "1 while the server shuts down, else 0."),
		deliveries: desc("dugout_webhook_deliveries_total",
			"Webhook POSTs that succeeded (ok) or failed (failed), and presence events dropped (dropped).", "result"),
	})
}

// Describe sends every descriptor.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connections, c.sessions, c.users, c.games, c.history, c.drain, c.deliveries} {
		ch <- d
	}
}

// Collect asks the hub once. A stopped hub has no counts to give: the
// scrape then shows draining and the counters alone.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	if n, ok := c.ask(); ok {
		gauge(c.connections, n.connected)
		gauge(c.sessions, n.connected, statusConnected)
		gauge(c.sessions, n.away, statusAway)
		gauge(c.users, n.users)
		gauge(c.games, n.games)
		gauge(c.history, n.historyBytes)
	}
	draining := 0
	if c.draining() {
		draining = 1
	}
	gauge(c.drain, draining)
	var ok, failed, dropped uint64
	if c.hook != nil {
		ok, failed, dropped = c.hook.posted.Load(), c.hook.failures.Load(), c.hook.dropped.Load()
	}
	for _, r := range []struct {
		label string
		n     uint64
	}{{"ok", ok}, {"failed", failed}, {"dropped", dropped}} {
		ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.CounterValue, float64(r.n), r.label)
	}
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
