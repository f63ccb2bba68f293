package main

// /metrics end to end: a scripted session over real WebSockets against the
// real mux, and every counter and gauge of the spec checked against what the
// script did; no identifier in the text; an unknown frame type; pings.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics and parses it with the Prometheus text parser.
func scrape(t *testing.T, s *testServer) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get(s.ts.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return string(body), fams
}

// metricValue returns the value of the series of name with exactly the
// label pairs given (a histogram's sample count), failing when it is absent.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, pairs ...string) float64 {
	t.Helper()
	fam := fams[name]
	if fam == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range fam.GetMetric() {
		if len(m.GetLabel())*2 != len(pairs) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			found := false
			for j := 0; j < len(pairs); j += 2 {
				if l.GetName() == pairs[j] && l.GetValue() == pairs[j+1] {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, pairs)
	return 0
}

// mtScript keeps what a scripted session did, to derive the expected
// values from: the bytes it sent, the frames its clients received, and
// every identifier that must not appear in /metrics.
type mtScript struct {
	t       *testing.T
	s       *testServer
	sentB   int
	clients []*rsClient
	secrets []string
	mu      sync.Mutex
	remotes []string // the clients' own addresses, as the server sees them
}

// dialOpts returns dial options whose connections record their local
// address, which is the remote address the server logs.
func (m *mtScript) dialOpts(header http.Header) *websocket.DialOptions {
	d := &net.Dialer{}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			m.mu.Lock()
			m.remotes = append(m.remotes, c.LocalAddr().String())
			m.mu.Unlock()
		}
		return c, err
	}}
	m.t.Cleanup(tr.CloseIdleConnections)
	return &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: header}
}

// dial connects as user sub with a fresh token.
func (m *mtScript) dial(sub string) *rsClient {
	m.t.Helper()
	tok := mint(m.t, jwt.SigningMethodHS256, []byte(testSecret), valid(sub))
	c := rsDial(m.t, withQueryToken(m.s.url, tok), m.dialOpts(nil))
	m.clients = append(m.clients, c)
	m.secrets = append(m.secrets, tok, c.session.SID, c.session.ResumeToken, sub)
	return c
}

// send writes msg from c, counting its bytes.
func (m *mtScript) send(c *rsClient, msg string) {
	m.t.Helper()
	m.sentB += len(msg)
	c.send(msg)
}

// received tallies every frame the script's clients read, by type, and their bytes.
func (m *mtScript) received(frames map[*rsClient][]rsFrame) (map[string]int, int) {
	byType, n := map[string]int{}, 0
	for _, c := range m.clients {
		byType["session"]++
		n += len(c.hello)
		for _, f := range frames[c] {
			byType[f.Type]++
			n += len(f.raw)
		}
	}
	return byType, n
}

// TestMetricsScriptedSession: handshakes refused three ways; a and b join a
// game; a decides, retries the decision, rolls, sends bad JSON, an unknown
// type, a bad token and a heartbeat; b is dropped and resumes on a new
// connection, caught up from offset 0; c expires in a game whose state times
// out fast; d is dropped and its window passes; b closes with 1000; e
// resumes with a token nobody holds. Then every counter and gauge of the
// spec has the value the script implies, the frames and bytes sent are those
// the clients read, and the text holds none of the script's identifiers.
func TestMetricsScriptedSession(t *testing.T) {
	const window, overTimeout, warning = time.Second, 400 * time.Millisecond, 150 * time.Millisecond
	cfg := rsResilient(t, window)
	cfg.ServiceToken, cfg.JWTSecret = apiToken, testSecret
	cfg.PingInterval, cfg.PingTimeout = time.Minute, 2*time.Second // no pings here: TestMetricsPings counts them
	cfg.ExpiryWarning, cfg.ExpiryCheckInterval = warning, 20*time.Millisecond
	cfg.stateTimeouts = map[string]time.Duration{"over": overTimeout}
	s := startServer(t, cfg)
	m := &mtScript{t: t, s: s}
	frames := map[*rsClient][]rsFrame{}
	read := func(c *rsClient, typ string) rsFrame {
		t.Helper()
		f := c.expect(typ)
		frames[c] = append(frames[c], f)
		return f
	}
	game, over := uuid.NewString(), uuid.NewString()
	m.secrets = append(m.secrets, game, over)
	if r := api(t, s, "PUT", "/api/games/"+over, `{"state":"over"}`); r.status != http.StatusOK {
		t.Fatalf("PUT state: %d %s", r.status, r.body)
	}

	// Refused handshakes: a bad token, a foreign Origin, a plain GET.
	if st := dialStatus(t, withQueryToken(s.url, "not-a-jwt"), m.dialOpts(nil)); st != http.StatusUnauthorized {
		t.Fatalf("bad token: HTTP %d", st)
	}
	if st := dialStatus(t, s.url, m.dialOpts(http.Header{"Origin": {"https://evil.example"}})); st != http.StatusForbidden {
		t.Fatalf("foreign origin: HTTP %d", st)
	}
	resp, err := http.Get(s.ts.URL + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 4 {
		t.Fatalf("plain GET /ws: HTTP %d", resp.StatusCode)
	}

	a, b := m.dial("770001"), m.dial("770002")
	m.send(a, e2eGameMsg("join_game", "ja", game, nil))
	var j rsJoined
	if err := json.Unmarshal(read(a, "game_joined").Data, &j); err != nil {
		t.Fatal(err)
	}
	m.send(b, e2eGameMsg("join_game", "jb", game, nil))
	read(b, "game_joined")
	read(a, "presence") // ev2: b joined (ev1, a joined, went to nobody)
	decision := e2eGameMsg("submit_defensive_decision", "d1", game, map[string]any{"decision": map[string]any{"seq": 1}})
	m.send(a, decision)
	read(a, "defensive_decision")
	read(b, "defensive_decision") // ev3
	m.send(a, decision)
	if f := read(a, "defensive_decision"); !f.Dup {
		t.Fatalf("retried decision %s is not a dup", f.raw)
	}
	m.send(a, e2eGameMsg("roll_dice", "r1", game, nil))
	read(a, "dice_rolled")
	read(b, "dice_rolled") // ev4
	m.send(a, `not json`)
	read(a, "error")
	m.send(a, `{"type":"shout","id":"x1"}`)
	read(a, "error")
	m.send(a, e2eMsg("refresh_token", "t1", map[string]any{"token": "garbage"}))
	read(a, "error")
	m.send(a, e2eMsg("heartbeat", "h1", nil))
	read(a, "heartbeat_ack")

	b.drop()
	read(a, "presence") // ev5: b away
	b2 := m.dial("770002")
	m.send(b2, rsResumeMsg("rs1", b.session.ResumeToken, map[string]rsPos{game: {Epoch: j.Epoch, Offset: 0}}))
	read(b2, "resumed")
	for _, typ := range []string{"presence", "presence", "defensive_decision", "dice_rolled", "presence"} {
		read(b2, typ) // ev1 to ev5, replayed
	}
	read(a, "presence") // ev6: b back

	c := m.dial("770003")
	m.send(c, e2eGameMsg("join_game", "jc", over, nil))
	read(c, "game_joined")
	rest, ce := c.end(waitFor)
	if len(rest) != 2 || rest[0].Type != "session_expiring" || rest[1].Type != "goodbye" || ce.Code != 4000 {
		t.Fatalf("c's end: %v, close %d; want session_expiring, goodbye, 4000", rsTypes(rest), ce.Code)
	}
	frames[c] = append(frames[c], rest...)

	d := m.dial("770004")
	m.send(d, e2eGameMsg("join_game", "jd", game, nil))
	read(d, "game_joined")
	for i := range 3 { // ev7 to ev9: d joined, away, and left once its window is over
		read(a, "presence")
		read(b2, "presence")
		if i == 0 {
			d.drop()
		}
	}
	_ = b2.ws.Close(websocket.StatusNormalClosure, "")
	read(a, "presence") // ev10: b left

	e := m.dial("770005")
	m.send(e, rsResumeMsg("rs2", "nope-token", nil))
	read(e, "error")
	m.secrets = append(m.secrets, "nope-token")

	text, fams := scrape(t, s)
	check := func(name string, want float64, pairs ...string) {
		t.Helper()
		if got := metricValue(t, fams, name, pairs...); got != want {
			t.Errorf("%s%v = %v, want %v", name, pairs, got, want)
		}
	}
	// every series of a labelled counter: want holds the non-zero ones
	each := func(name, label string, values []string, want map[string]float64) {
		t.Helper()
		for _, v := range values {
			check(name, want[v], label, v)
		}
	}
	each("dugout_handshakes_total", "result", handshakeLabels[:],
		map[string]float64{"accepted": 6, "unauthorized": 1, "forbidden_origin": 1, "bad_request": 1})
	each("dugout_session_ends_total", "reason", sessionEndReasons,
		map[string]float64{"expired": 1, "disconnected": 2}) // c; d's window, and b's 1000
	check("dugout_closes_total", 2, "code", "other", "reason", "none") // b and d dropped: 1006
	check("dugout_closes_total", 1, "code", "4000", "reason", "expired")
	check("dugout_closes_total", 1, "code", "1000", "reason", "none")
	check("dugout_closes_total", 0, "code", "1008", "reason", "slow_consumer")
	if n := len(fams["dugout_closes_total"].GetMetric()); n != len(s.met.closes) {
		t.Errorf("%d closes series, want the %d resolved at start-up", n, len(s.met.closes))
	}
	each("dugout_frames_received_total", "type", clientFrameTypes[:], map[string]float64{"join_game": 4,
		"submit_defensive_decision": 2, "roll_dice": 1, "unknown": 2, "refresh_token": 1, "heartbeat": 1, "resume": 2})
	check("dugout_received_bytes_total", float64(m.sentB))
	wantSent := map[string]float64{"session": 6, "game_joined": 4, "presence": 13, "defensive_decision": 4,
		"dice_rolled": 3, "error": 4, "heartbeat_ack": 1, "resumed": 1, "session_expiring": 1, "goodbye": 1}
	each("dugout_frames_sent_total", "type", append(serverFrameTypes[:], "unknown"), wantSent)
	byType, readBytes := m.received(frames)
	for typ, n := range byType {
		if float64(n) != wantSent[typ] {
			t.Errorf("the clients read %d %s frames; the script says %v", n, typ, wantSent[typ])
		}
	}
	check("dugout_sent_bytes_total", float64(readBytes))
	each("dugout_errors_sent_total", "code", append(errorCodes, "unknown"), map[string]float64{
		codeInvalidJSON: 1, codeUnknownType: 1, codeInvalidToken: 1, codeResumeFailed: 1})
	each("dugout_resumes_total", "result", resumeResults, map[string]float64{"resumed": 1, "unknown": 1})
	each("dugout_token_refreshes_total", "result", refreshResults, map[string]float64{"malformed": 1})
	each("dugout_webhook_deliveries_total", "result", []string{"ok", "failed", "dropped"}, nil)
	check("dugout_pong_timeouts_total", 0)
	check("dugout_action_duplicates_total", 1)

	// The gauges: a and e connected, a alone in the game, which holds ev1 to
	// ev10: ev1 to ev5 as b2 was sent them, ev6 to ev10 as a was.
	history := 0
	for _, f := range frames[b2][1:6] {
		history += len(f.raw)
	}
	aPresence := []rsFrame{}
	for _, f := range frames[a] {
		if f.Type == "presence" {
			aPresence = append(aPresence, f)
		}
	}
	for _, f := range aPresence[len(aPresence)-5:] {
		history += len(f.raw)
	}
	check("dugout_connections", 2)
	check("dugout_sessions", 2, "state", "connected")
	check("dugout_sessions", 0, "state", "away")
	check("dugout_users", 2)
	check("dugout_games", 1)
	check("dugout_history_bytes", float64(history))
	check("dugout_draining", 0)

	// The histograms' counts, where the script decides them.
	check("dugout_away_seconds", 1, "outcome", "back")
	check("dugout_away_seconds", 1, "outcome", "left")
	check("dugout_game_size", 4) // a, b, c, d: seats 1, 2, 1, 3
	if sum := fams["dugout_game_size"].GetMetric()[0].GetHistogram().GetSampleSum(); sum != 7 {
		t.Errorf("game sizes sum to %v, want 7", sum)
	}
	if metricValue(t, fams, "dugout_hub_step_seconds") == 0 {
		t.Errorf("no hub step observed")
	}
	check("dugout_ping_rtt_seconds", 0)

	m.mu.Lock()
	defer m.mu.Unlock()
	for _, secret := range append(m.secrets, m.remotes...) {
		if strings.Contains(text, secret) {
			t.Errorf("/metrics holds %q", secret)
		}
	}
	for _, g := range []string{game, over} {
		if strings.Contains(text, strings.ReplaceAll(g, "-", "")) {
			t.Errorf("/metrics holds game %s", g)
		}
	}
}
