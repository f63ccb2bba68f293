package main

import (
	"encoding/json"
	"net/http"
	"runtime"
)

// connectionsReport is the body of /health/connections.
type connectionsReport struct {
	Status string `json:"status"`
	stats
	// Goroutines lets an operator (and the soak test) see that nothing
	// outlives its connection: at rest it returns to the same baseline.
	Goroutines int `json:"goroutines"`
}

// serveConnections answers /health/connections from a snapshot the hub makes
// on request, so the numbers are the hub's own at one instant.
func (s *server) serveConnections(w http.ResponseWriter, r *http.Request) {
	st, ok := s.hub.stats()
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return
	}
	writeJSON(w, http.StatusOK, connectionsReport{Status: "healthy", stats: st, Goroutines: runtime.NumGoroutine()})
}

// serveReady answers /healthz and /readyz: 200 while serving, 503 from the
// moment shutdown begins, so a load balancer stops sending new players first.
func (s *server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// serveLive answers /livez: 200 for as long as the process can answer at all.
func serveLive(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// writeJSON writes v as a JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
