package main

import (
	"encoding/json"
	"net/http"
	"runtime"
	"strconv"
	"sync"

	"github.com/google/uuid"
)

// healthCache keeps the last rendering of sessions_per_game, the one part of
// /health/connections that grows with the server (4 MB at 100,000 games).
// It is rendered off the hub from a copy-on-write snapshot, once per version
// of the counts, and one rendering at a time: a client calling health in a
// loop costs the hub a few microseconds a call and the server at most one
// rendering at a time.
type healthCache struct {
	mu      sync.Mutex
	version uint64
	perGame []byte // the JSON object, braces included; read-only once made
}

// current returns the hub's counts and the rendering of its seat counts,
// rendering them anew only when they changed. A rendering is never written
// to again once made, so the caller writes it out without the lock: a client
// that reads its response slowly holds up nobody else's.
func (c *healthCache) current(h *hub) (stats, []byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := h.stats(c.version)
	if !ok {
		return stats{}, nil, false
	}
	if st.seats != nil {
		c.version, c.perGame = st.version, renderSeats(st.seats, nil)
	}
	return st, c.perGame, true
}

// serveConnections answers /health/connections from a snapshot the hub makes
// on request, so the numbers are the hub's own at one instant.
// With HEALTH_GAME_IDS=operator, a caller without the operator token gets
// the counts alone: the hub makes no copy of the seat counts for it.
func (s *server) serveConnections(w http.ResponseWriter, r *http.Request) {
	if s.bridge != nil && s.serveClusterConnections(w, r) {
		return
	}
	hidden := s.gameIDsHidden(r)
	var st stats
	var perGame []byte
	var ok bool
	if hidden {
		st, ok = s.hub.stats(noSeats)
		perGame = []byte("{}")
	} else {
		st, perGame, ok = s.health.current(s.hub)
	}
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return
	}
	head := make([]byte, 0, 160)
	head = append(head, `{"status":"healthy","total_sessions":`...)
	head = strconv.AppendInt(head, int64(st.TotalSessions), 10)
	head = append(head, `,"connected_sessions":`...)
	head = strconv.AppendInt(head, int64(st.Connected), 10)
	head = append(head, `,"away_sessions":`...)
	head = strconv.AppendInt(head, int64(st.Away), 10)
	head = append(head, `,"draining":`...)
	head = strconv.AppendBool(head, s.draining.Load())
	head = append(head, `,"unique_users":`...)
	head = strconv.AppendInt(head, int64(st.UniqueUsers), 10)
	head = append(head, `,"active_games":`...)
	head = strconv.AppendInt(head, int64(st.ActiveGames), 10)
	head = append(head, `,"game_ids_hidden":`...)
	head = strconv.AppendBool(head, hidden)
	head = append(head, `,"sessions_per_game":`...)
	// Goroutines lets an operator (and the soak test) see that nothing
	// outlives its connection: at rest it returns to the same baseline.
	tail := append([]byte(`,"goroutines":`), strconv.Itoa(runtime.NumGoroutine())...)
	if s.bridge != nil {
		tail = append(tail, s.engineFields()...)
	}
	tail = append(tail, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Vary", "Authorization")
	w.Header().Set("Content-Length", strconv.Itoa(len(head)+len(perGame)+len(tail)))
	w.WriteHeader(http.StatusOK)
	// The rendering is written as it is, not copied: at 100,000 games it is 4 MB.
	for _, part := range [][]byte{head, perGame, tail} {
		if _, err := w.Write(part); err != nil {
			return
		}
	}
}

// renderSeats appends the JSON object {"<game id>":seats,...} to buf, game
// ids in canonical form.
func renderSeats(snap *seatSnapshot, buf []byte) []byte {
	if buf == nil {
		buf = make([]byte, 0, 2+snap.count()*42) // "<36>":N, per game
	}
	buf = append(buf, '{')
	first := true
	snap.each(func(g uuid.UUID, n int) {
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, '"')
		buf = appendUUID(buf, g)
		buf = append(buf, '"', ':')
		buf = strconv.AppendInt(buf, int64(n), 10)
	})
	return append(buf, '}')
}

// appendUUID appends g's canonical form (as g.String(), without allocating).
func appendUUID(buf []byte, g uuid.UUID) []byte {
	const hexDigits = "0123456789abcdef"
	for i, b := range g {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			buf = append(buf, '-')
		}
		buf = append(buf, hexDigits[b>>4], hexDigits[b&0x0f])
	}
	return buf
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
