package main

import (
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// The names and labels below are fixed by the metrics spec shared with the
// dashboard and its Grafana JSON: renaming one breaks them silently.
//
// Every labelled child is resolved once, here, into an array or a read-only
// map keyed by a closed set: counting on the hot path is then one atomic add,
// with no allocation and no lock (WithLabelValues takes a lock and hashes its
// labels). A value outside a set counts as "unknown", so that no client can
// grow the number of series.

// metrics is every counter and histogram the server keeps, on a registry of
// its own (a test may build several servers in one process). A nil *metrics
// counts nothing: the hub and conn tests build their parts without one.
type metrics struct {
	// set at construction; the maps are never written again
	reg *prometheus.Registry

	handshakes  [handshakeResults]prometheus.Counter
	sessionEnds map[string]prometheus.Counter // by why the session ended
	closes      map[closeKey]prometheus.Counter
	received    [cmdRefresh + 1]prometheus.Counter            // by cmdKind; 0 is unknown
	sent        [len(serverFrameTypes) + 1]prometheus.Counter // by serverFrame; the last is unknown
	errors      map[string]prometheus.Counter                 // by error code
	resumes     map[string]prometheus.Counter
	refreshes   map[string]prometheus.Counter

	receivedBytes, sentBytes prometheus.Counter
	pongTimeouts, duplicates prometheus.Counter
	bridgeRefused            prometheus.Counter // operations a full bridge queue refused (cluster mode)

	pingRTT, hubStep, gameSize prometheus.Histogram
	awayBack, awayLeft         prometheus.Histogram
}

// handshakeResult is how a /ws handshake ended: the handshakes' label.
type handshakeResult uint8

const (
	handshakeAccepted handshakeResult = iota
	handshakeUnauthorized
	handshakeForbiddenOrigin
	handshakeBusy
	handshakeDraining
	handshakeBadRequest
	handshakeResults // how many there are
)

// handshakeLabels are the label values of handshakeResult, in its order.
var handshakeLabels = [handshakeResults]string{"accepted", "unauthorized", "forbidden_origin", "busy", "draining", "bad_request"}

// sessionEndReasons is the closed set of dugout_session_ends_total; the hub
// counts each ended session under the reason its games hear it left for
// (or, for a loss, the reason it went away for), or shutdown.
var sessionEndReasons = []string{presenceLeft, presenceDisconnected, presenceTimeout, presenceExpired,
	presenceSlowConsumer, presenceTokenExpired, presenceKicked, presenceSuperseded, reasonShutdown.word, reasonTakenOver.word, "unknown"}

// closeCodes are the close codes the closes counter names; any other is "other".
var closeCodes = []websocket.StatusCode{1000, 1001, 1003, 1008, 1009, 1011, 4000, 4001, 4002}

// closeKey is one series of dugout_closes_total: a code label and a close word ("none" without one).
type closeKey struct {
	code string
	word string
}

// clientFrameTypes are the received frames' label values, by cmdKind.
var clientFrameTypes = func() [cmdRefresh + 1]string {
	var names [cmdRefresh + 1]string
	names[0] = "unknown"
	for name, kind := range clientTypes {
		names[kind] = name
	}
	return names
}()

// serverFrameTypes is every type of frame the server writes, in the order
// serverFrame numbers them.
var serverFrameTypes = [...]string{"session", "goodbye", "error", "heartbeat_ack", "presence", "game_joined", "game_left",
	"game_updated", "resumed", "session_expiring", "token_expiring", "token_refreshed",
	"defensive_decision", "offensive_decision", "dice_rolled"}

// errorCodes is every code of an error frame.
var errorCodes = []string{codeInvalidJSON, codeInvalidMessage, codeUnknownType, codeInvalidGameID, codeNotInGame,
	codeTooManyGames, codeRateLimited, codeGameFull, codeResumeFailed, codeIDReused, codeInvalidToken}

// Resume results besides the resume_failed reasons: "expired" is in the
// spec's set, but the hub forgets an expired session and cannot tell its
// token from one it never issued, so such a resume counts as unknown.
const (
	resumeResumed  = "resumed"  // an away session taken up again
	resumeTakeover = "takeover" // a session whose old connection was still open
	resumeInvalid  = "invalid"  // a resume frame that did not decode
)

// resumeResults is the closed set of dugout_resumes_total.
var resumeResults = []string{resumeResumed, resumeTakeover, resumeUnknown, "expired", resumeUserMismatch,
	resumeDisabled, resumeNotFirst, resumeInvalid}

// refreshOK is the result of a refresh_token whose token was verified.
const refreshOK = "refreshed"

// refreshResults is the closed set of dugout_token_refreshes_total.
var refreshResults = []string{refreshOK, tokenMalformed, tokenBadSignature, tokenExpired, tokenUserMismatch}

// gameSizeBuckets are the spec's: the seats of a game, from a pair to a crowd.
var gameSizeBuckets = []float64{1, 2, 3, 4, 6, 8, 12, 16, 25, 50, 100}

// newMetrics builds the registry with the Go and process collectors and every
// counter and histogram, each labelled child resolved. The gauges come once
// the hub exists (watch).
func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(v)
		return v
	}
	byLabel := func(v *prometheus.CounterVec, values []string) map[string]prometheus.Counter {
		out := make(map[string]prometheus.Counter, len(values))
		for _, value := range values {
			out[value] = v.WithLabelValues(value)
		}
		return out
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
		m.reg.MustRegister(h)
		return h
	}

	hs := vec("dugout_handshakes_total", "WebSocket handshakes by how they ended.", "result")
	for i, label := range handshakeLabels {
		m.handshakes[i] = hs.WithLabelValues(label)
	}
	m.sessionEnds = byLabel(vec("dugout_session_ends_total", "Sessions ended, by why.", "reason"), sessionEndReasons)
	m.closes = closeSeries(vec("dugout_closes_total", "Connections ended, by close code and close word.", "code", "reason"))
	rx := vec("dugout_frames_received_total", "Client messages read, by frame type.", "type")
	for kind, name := range clientFrameTypes {
		m.received[kind] = rx.WithLabelValues(name)
	}
	tx := vec("dugout_frames_sent_total", "Server frames written, by frame type.", "type")
	for i, name := range append(serverFrameTypes[:], "unknown") {
		m.sent[i] = tx.WithLabelValues(name)
	}
	m.errors = byLabel(vec("dugout_errors_sent_total", "Error frames written, by error code.", "code"),
		append(errorCodes[:len(errorCodes):len(errorCodes)], "unknown"))
	m.resumes = byLabel(vec("dugout_resumes_total", "Resume requests, by result.", "result"), resumeResults)
	m.refreshes = byLabel(vec("dugout_token_refreshes_total", "refresh_token requests, by result.", "result"), refreshResults)

	m.receivedBytes = counter("dugout_received_bytes_total", "Payload bytes of the WebSocket messages read.")
	m.sentBytes = counter("dugout_sent_bytes_total", "Payload bytes of the WebSocket messages written.")
	m.pongTimeouts = counter("dugout_pong_timeouts_total", "Pings that got no pong within PING_TIMEOUT.")
	m.duplicates = counter("dugout_action_duplicates_total", "Actions retried under an id already executed, answered dup.")
	m.bridgeRefused = counter("dugout_cluster_bridge_full_total", "Operations the Redis bridge's full queue refused (cluster mode); their events reached this node's players only.")

	m.pingRTT = histogram("dugout_ping_rtt_seconds", "Ping round trip.",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})
	m.hubStep = histogram("dugout_hub_step_seconds", "Time the hub spends on one turn of its loop.",
		[]float64{.000005, .00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1})
	away := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dugout_away_seconds",
		Help:    "How long a session was away, by whether it came back or left.",
		Buckets: []float64{.1, .5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600}}, []string{"outcome"})
	m.reg.MustRegister(away)
	m.awayBack, m.awayLeft = away.WithLabelValues("back").(prometheus.Histogram), away.WithLabelValues("left").(prometheus.Histogram)
	m.gameSize = histogram("dugout_game_size", "Seats in a game, observed at each join.", gameSizeBuckets)
	return m
}

// closeSeries resolves the closes counter's series: each close-table row's
// code with its word, and every code with none (a client's close frame, or
// a lost connection, which carries no word).
func closeSeries(v *prometheus.CounterVec) map[closeKey]prometheus.Counter {
	out := make(map[closeKey]prometheus.Counter)
	add := func(k closeKey) {
		if out[k] == nil {
			out[k] = v.WithLabelValues(k.code, k.word)
		}
	}
	for _, r := range []closeReason{reasonSlow, reasonExpired, reasonTakenOver, reasonShutdown, reasonTooBig,
		reasonBinary, reasonFlood, reasonTokenExpired} {
		add(closeKey{closeCodeLabel(r.code), r.word})
	}
	for _, code := range closeCodes {
		add(closeKey{closeCodeLabel(code), "none"})
	}
	add(closeKey{"other", "none"})
	return out
}

// closeCodeLabels spells each named close code once: strconv would
// allocate a string per close.
var closeCodeLabels = func() map[websocket.StatusCode]string {
	out := make(map[websocket.StatusCode]string, len(closeCodes))
	for _, c := range closeCodes {
		out[c] = strconv.Itoa(int(c))
	}
	return out
}()

// closeCodeLabel is code's label value: itself when named, else "other".
func closeCodeLabel(code websocket.StatusCode) string {
	if label, ok := closeCodeLabels[code]; ok {
		return label
	}
	return "other"
}

// handshake counts a handshake that ended with r.
func (m *metrics) handshake(r handshakeResult) {
	if m != nil {
		m.handshakes[r].Inc()
	}
}

// frameReceived counts a client message of n bytes, of kind (0 when its type is unknown or unread).
func (m *metrics) frameReceived(kind cmdKind, n int) {
	if m == nil {
		return
	}
	if int(kind) >= len(m.received) {
		kind = 0
	}
	m.received[kind].Inc()
	m.receivedBytes.Add(float64(n))
}

// closed counts a connection that ended for r.
func (m *metrics) closed(r closeReason) {
	if m == nil {
		return
	}
	word := r.word
	if word == "" {
		word = "none"
	}
	code := closeCodeLabel(r.code)
	c := m.closes[closeKey{code, word}]
	if c == nil {
		c = m.closes[closeKey{code, "none"}]
	}
	c.Inc()
}

// sessionEnded counts a session the hub forgot, for reason.
func (m *metrics) sessionEnded(reason string, n int) {
	if m == nil {
		return
	}
	c := m.sessionEnds[reason]
	if c == nil {
		c = m.sessionEnds["unknown"]
	}
	c.Add(float64(n))
}

// resumed counts a resume's result; a word outside the set counts nothing
// (the results are the code's own words, never a client's).
func (m *metrics) resumed(result string) {
	if m == nil {
		return
	}
	if c := m.resumes[result]; c != nil {
		c.Inc()
	}
}

// refreshed counts a refresh_token's result, like resumed.
func (m *metrics) refreshed(result string) {
	if m == nil {
		return
	}
	if c := m.refreshes[result]; c != nil {
		c.Inc()
	}
}

// pongTimeout counts a ping that got no pong in time.
func (m *metrics) pongTimeout() {
	if m != nil {
		m.pongTimeouts.Inc()
	}
}

// bridgeFull counts an operation the bridge's full queue refused.
func (m *metrics) bridgeFull() {
	if m != nil {
		m.bridgeRefused.Inc()
	}
}

// duplicate counts an action answered from memory.
func (m *metrics) duplicate() {
	if m != nil {
		m.duplicates.Inc()
	}
}

// pingRoundTrip records a ping answered after d.
func (m *metrics) pingRoundTrip(d time.Duration) {
	if m != nil {
		m.pingRTT.Observe(d.Seconds())
	}
}

// hubTurn records one turn of the hub loop that took d.
func (m *metrics) hubTurn(d time.Duration) {
	if m != nil {
		m.hubStep.Observe(d.Seconds())
	}
}

// away records a session that was away for d and then came back, or left.
func (m *metrics) away(d time.Duration, back bool) {
	switch {
	case m == nil:
	case back:
		m.awayBack.Observe(d.Seconds())
	default:
		m.awayLeft.Observe(d.Seconds())
	}
}

// joined records a game's seat count right after a join.
func (m *metrics) joined(seats int) {
	if m != nil {
		m.gameSize.Observe(float64(seats))
	}
}
