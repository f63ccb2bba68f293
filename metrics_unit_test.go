package main

// The counting path's parts: frame types read without decoding, no
// allocation anywhere on it, one hub request per scrape, and the history
// bytes the index keeps as its rings change.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestFrameType(t *testing.T) {
	for _, tc := range []struct {
		name, frame, typ string
	}{
		{"plain", `{"type":"presence","data":{}}`, "presence"},
		{"with id", `{"type":"game_joined","id":"j1","data":{}}`, "game_joined"},
		{"dup", `{"dup":true,"type":"defensive_decision","id":"d1","data":{}}`, "defensive_decision"},
		{"not a frame", `[1,2]`, ""},
		{"type not first", `{"id":"x","type":"presence"}`, ""},
		{"unterminated", `{"type":"pres`, ""},
		{"empty", ``, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(frameType([]byte(tc.frame))); got != tc.typ {
				t.Errorf("frameType(%s) = %q, want %q", tc.frame, got, tc.typ)
			}
		})
	}
}

// TestFrameSentCountsEveryEncoder: each server frame type, built by its own
// encoder, and each error code, counts under its own name, not unknown.
func TestFrameSentCountsEveryEncoder(t *testing.T) {
	m := newMetrics()
	frames := [][]byte{encodeError(&protoError{code: codeNotInGame, id: `a"b\`, message: `"data":{"code":"x"`}),
		encodeHeartbeatAck("h", time.Now()), encodeGoodbye(reasonExpired), withDup(encode("game_joined", "j", gameRef{})),
		encodeTokenRefreshed("t", 0), encodeEvent(command{kind: cmdRoll, dice: []int{6}}, "s", nil, []int{1})}
	for _, f := range frames {
		m.frameSent(f)
	}
	for _, typ := range []string{"error", "heartbeat_ack", "goodbye", "game_joined", "token_refreshed", "dice_rolled"} {
		if n := counterValue(t, m.sent[serverFrame([]byte(typ))]); n != 1 {
			t.Errorf("sent %s = %v, want 1", typ, n)
		}
	}
	if n := counterValue(t, m.errors[codeNotInGame]); n != 1 {
		t.Errorf("errors not_in_game = %v, want 1 (an id that looks like a code must not fool it)", n)
	}
	if n := counterValue(t, m.sent[len(serverFrameTypes)]) + counterValue(t, m.errors["unknown"]); n != 0 {
		t.Errorf("%v frames counted unknown", n)
	}
}

// TestServerFrameNumbers: serverFrame's switch and serverFrameTypes agree.
func TestServerFrameNumbers(t *testing.T) {
	for i, name := range serverFrameTypes {
		if got := serverFrame([]byte(name)); got != i {
			t.Errorf("serverFrame(%q) = %d, want %d", name, got, i)
		}
	}
	if got := serverFrame([]byte("nope")); got != len(serverFrameTypes) {
		t.Errorf("serverFrame(nope) = %d, want %d", got, len(serverFrameTypes))
	}
}

func TestScanType(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		kind      cmdKind
	}{
		{"known", `{"type":"join_game","data":{"game_id":"x"}}`, cmdJoin},
		{"after the id", `{"id":"r","type":"resume","data":5}`, cmdResume},
		{"unknown type", `{"type":"shout"}`, 0},
		{"not json", `not json`, 0},
		{"type not a string", `{"type":7}`, 0},
		{"escaped", `{"type":"heart\u0062eat"}`, 0},
		{"no type", `{"id":"x"}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := scanType([]byte(tc.msg)); got != tc.kind {
				t.Errorf("scanType(%s) = %d, want %d", tc.msg, got, tc.kind)
			}
		})
	}
}

// counterValue reads a counter's value through its Write, as a scrape would.
func counterValue(t *testing.T, c interface{ Write(*dtoMetric) error }) float64 {
	t.Helper()
	var out dtoMetric
	if err := c.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}

// TestCountingDoesNotAllocate: what the reader, the writer, the ping and the
// hub call for each frame, ping, turn, join and end costs no allocation.
func TestCountingDoesNotAllocate(t *testing.T) {
	m := newMetrics()
	event := encodeEvent(command{kind: cmdDefensive, decision: []byte(`{}`)}, "s", nil, nil)
	dup := withDup(withID(event, "d1"))
	errFrame := encodeError(&protoError{code: codeInvalidJSON, id: "x", message: "no"})
	msg := []byte(`{"type":"shout","id":"x"}`)
	for name, fn := range map[string]func(){
		"frameReceived":      func() { m.frameReceived(cmdDefensive, 120) },
		"frameReceived bad":  func() { m.frameReceived(scanType(msg), len(msg)) },
		"frameSent":          func() { m.frameSent(event) },
		"frameSent dup":      func() { m.frameSent(dup) },
		"frameSent error":    func() { m.frameSent(errFrame) },
		"frameSent unknown":  func() { m.frameSent([]byte(`{"type":"nope"}`)) },
		"hubTurn":            func() { m.hubTurn(3 * time.Microsecond) },
		"pingRoundTrip":      func() { m.pingRoundTrip(time.Millisecond) },
		"pongTimeout":        func() { m.pongTimeout() },
		"joined":             func() { m.joined(4) },
		"away":               func() { m.away(time.Second, true); m.away(time.Second, false) },
		"closed":             func() { m.closed(reasonSlow); m.closed(peerClosed(1001)); m.closed(reasonDisconnected) },
		"sessionEnded":       func() { m.sessionEnded(presenceExpired, 1) },
		"handshake":          func() { m.handshake(handshakeAccepted) },
		"resumed, refreshed": func() { m.resumed(resumeResumed); m.refreshed(tokenExpired) },
		"duplicate":          func() { m.duplicate() },
		"nil metrics":        func() { (*metrics)(nil).frameSent(event); (*metrics)(nil).hubTurn(0) },
	} {
		if n := testing.AllocsPerRun(200, fn); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

// TestScrapeAsksTheHubOnce: a scrape is one request to the hub, whatever
// the number of gauges, and the gauges are the hub's counts.
func TestScrapeAsksTheHubOnce(t *testing.T) {
	h := newHub(hubConfig{maxGames: 4, maxSeats: 10}, 16)
	go h.run()
	defer func() { h.send(shutdownMsg{}); <-h.done }()
	c := &conn{sid: "s1", out: newSendQueue(8, testQueueBytes), quit: make(chan struct{})}
	if !h.register(c) {
		t.Fatal("register refused")
	}
	h.send(prepare(c, &command{kind: cmdJoin, game: uuid.New()}, nil))
	m := newMetrics()
	var asked atomic.Int32
	m.watch(func() (hubCounts, bool) { asked.Add(1); return h.askCounts() }, func() bool { return false }, nil)
	srv := httptest.NewServer(m.handler())
	defer srv.Close()
	for scrapes := int32(1); scrapes <= 2; scrapes++ {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if n := asked.Load(); n != scrapes {
			t.Fatalf("%d scrapes asked the hub %d times", scrapes, n)
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		if g := fams["dugout_games"].GetMetric()[0].GetGauge().GetValue(); g != 1 {
			t.Errorf("dugout_games = %v, want 1", g)
		}
		if g := fams["dugout_connections"].GetMetric()[0].GetGauge().GetValue(); g != 1 {
			t.Errorf("dugout_connections = %v, want 1", g)
		}
	}
}

// TestHistoryBytesFollowTheRings: the index's sum of history bytes follows
// events kept, events pushed out of a full ring, and games that empty.
func TestHistoryBytesFollowTheRings(t *testing.T) {
	h := newHub(hubConfig{maxGames: 4, maxSeats: 10, historyFrames: 3}, 1)
	game := uuid.New()
	c := &conn{sid: "s1", out: newSendQueue(64, testQueueBytes), quit: make(chan struct{})}
	h.handle(registerMsg{c: c, reply: make(chan bool, 1)})
	h.handle(prepare(c, &command{kind: cmdJoin, game: game}, nil))
	for i := range 5 {
		h.handle(prepare(c, &command{kind: cmdDefensive, game: game, decision: []byte(`{"n":` + strings.Repeat("1", i+1) + `}`)}, nil))
		checkIndex(t, h.idx)
		if log := h.idx.logs[game]; h.idx.historyHeld != log.bytes || log.n != min(i+2, 3) {
			t.Fatalf("after event %d: held %d, the game's ring %d bytes in %d events", i, h.idx.historyHeld, log.bytes, log.n)
		}
	}
	h.handle(prepare(c, &command{kind: cmdLeave, game: game}, nil))
	if h.idx.historyHeld != 0 {
		t.Fatalf("no game left, %d bytes of history counted", h.idx.historyHeld)
	}
}

// TestMetricsUnknownFrameType: a frame of a type the contract does not have
// counts as unknown, and its error as unknown_type.
func TestMetricsUnknownFrameType(t *testing.T) {
	s := startServer(t, testConfig(t))
	c := dial(t, s.url, nil)
	c.send(`{"type":"dance","id":"u1"}`)
	c.expectError(codeUnknownType, "u1")
	_, fams := scrape(t, s)
	if n := metricValue(t, fams, "dugout_frames_received_total", "type", "unknown"); n != 1 {
		t.Errorf("unknown frames = %v, want 1", n)
	}
	if n := metricValue(t, fams, "dugout_errors_sent_total", "code", codeUnknownType); n != 1 {
		t.Errorf("unknown_type errors = %v, want 1", n)
	}
	for _, name := range clientFrameTypes[1:] {
		if n := metricValue(t, fams, "dugout_frames_received_total", "type", name); n != 0 {
			t.Errorf("%s frames = %v, want 0", name, n)
		}
	}
	if strings.Contains(scrapeText(t, s), "dance") {
		t.Errorf("/metrics names the client's type")
	}
}

// scrapeText is /metrics as text.
func scrapeText(t *testing.T, s *testServer) string {
	text, _ := scrape(t, s)
	return text
}

// TestMetricsPings: a client that answers pings gives round trips; one that
// reads nothing misses its pong, counted as a timeout and a 1006 close
// before the room hears it left.
func TestMetricsPings(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval, cfg.PingTimeout = 100*time.Millisecond, 500*time.Millisecond
	s := startServer(t, cfg)
	game := uuid.NewString()
	live := rsDial(t, s.url, nil) // its reader answers pings
	live.join(game, "l")
	zombie := dial(t, s.url, nil) // reads only when asked to
	zombie.send(e2eGameMsg("join_game", "z", game, nil))
	zombie.expect("game_joined")
	live.presence(game, zombie.session.SID, "joined", "")
	live.presence(game, zombie.session.SID, "left", "timeout")
	eventually(t, "a ping round trip", func() bool {
		_, fams := scrape(t, s)
		return metricValue(t, fams, "dugout_ping_rtt_seconds") > 0
	})
	_, fams := scrape(t, s)
	if n := metricValue(t, fams, "dugout_pong_timeouts_total"); n != 1 {
		t.Errorf("pong timeouts = %v, want 1", n)
	}
	if n := metricValue(t, fams, "dugout_closes_total", "code", "other", "reason", "none"); n != 1 {
		t.Errorf("1006 closes = %v, want 1", n)
	}
	if n := metricValue(t, fams, "dugout_session_ends_total", "reason", presenceTimeout); n != 1 {
		t.Errorf("sessions ended by timeout = %v, want 1", n)
	}
}

// TestMetricsBusyAndDraining: a handshake past MAX_SESSIONS counts busy, one
// during shutdown draining, and draining shows 1.
func TestMetricsBusyAndDraining(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxSessions = 1
	s := startServer(t, cfg)
	dial(t, s.url, nil)
	if st := dialStatus(t, s.url, nil); st != http.StatusServiceUnavailable {
		t.Fatalf("past MAX_SESSIONS: HTTP %d", st)
	}
	s.draining.Store(true) // what shutdown sets first
	if st := dialStatus(t, s.url, nil); st != http.StatusServiceUnavailable {
		t.Fatalf("draining: HTTP %d", st)
	}
	_, fams := scrape(t, s)
	for result, want := range map[string]float64{"accepted": 1, "busy": 1, "draining": 1} {
		if n := metricValue(t, fams, "dugout_handshakes_total", "result", result); n != want {
			t.Errorf("handshakes %s = %v, want %v", result, n, want)
		}
	}
	if n := metricValue(t, fams, "dugout_draining"); n != 1 {
		t.Errorf("draining = %v, want 1", n)
	}
}

// dtoMetric is the client model's metric, named here for counterValue.
type dtoMetric = dto.Metric
