package main

import "github.com/prometheus/client_golang/prometheus"

// watchBridge registers cluster mode's own figures, read from the bridge's
// atomics at each scrape: whether Redis answers, what waits in the bridge's
// queue, and what the cluster could not deliver. Registered only with REDIS_URL.
func (m *metrics) watchBridge(b *bridge) {
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("dugout_cluster_engine_up", "1 while Redis answers this node, else 0 (each node then serves its own players).", func() float64 {
		if b.up.Load() {
			return 1
		}
		return 0
	})
	gauge("dugout_cluster_bridge_queue", "Operations waiting in the Redis bridge's queue.", func() float64 { return float64(len(b.ops)) })
	counter("dugout_cluster_events_lost_total", "Game events this node's mailbox missed that the game's stream no longer held.",
		func() float64 { return float64(b.gaps.Load()) })
	counter("dugout_cluster_events_refused_total", "Game events Redis refused to sequence (this node declared dead, the game gone, a script error).",
		func() float64 { return float64(b.refusal.Load()) })
}
