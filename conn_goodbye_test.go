package main

// End-to-end tests of how connections end in protocol 2 (contract v2 §3
// away, back and left; §6 goodbye, close codes and shutdown; §7 health), over
// real clients. The rs* helpers are in conn_resume_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// rsGoodbye is the goodbye frame's data.
type rsGoodbye struct {
	Code         int    `json:"code"`
	Reason       string `json:"reason"`
	RetryAfterMS *int64 `json:"retry_after_ms"`
	Resumable    bool   `json:"resumable"`
}

// rsHealth is /health/connections with protocol 2's fields.
type rsHealth struct {
	Status          string         `json:"status"`
	TotalSessions   int            `json:"total_sessions"`
	Connected       int            `json:"connected_sessions"`
	Away            int            `json:"away_sessions"`
	Draining        bool           `json:"draining"`
	ActiveGames     int            `json:"active_games"`
	SessionsPerGame map[string]int `json:"sessions_per_game"`
}

// rsHealthOf fetches /health/connections, checking protocol 2's keys are there.
func rsHealthOf(t *testing.T, s *testServer) rsHealth {
	t.Helper()
	resp, err := http.Get(s.ts.URL + "/health/connections")
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	var raw map[string]json.RawMessage
	var h rsHealth
	if json.Unmarshal(body.Bytes(), &raw) != nil || json.Unmarshal(body.Bytes(), &h) != nil {
		t.Fatalf("health body %s", body.String())
	}
	for _, k := range []string{"connected_sessions", "away_sessions", "draining", "total_sessions", "sessions_per_game"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("health %s lacks %q", body.String(), k)
		}
	}
	return h
}

// rsHealthIs waits until health reports connected and away sessions, total
// their sum, draining false and these seats per game (away seats included).
func rsHealthIs(t *testing.T, s *testServer, connected, away int, perGame map[string]int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		h := rsHealthOf(t, s)
		if h.Connected == connected && h.Away == away && h.TotalSessions == connected+away && !h.Draining &&
			h.ActiveGames == len(perGame) && len(h.SessionsPerGame) == len(perGame) && rsSeatsAre(h.SessionsPerGame, perGame) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %+v, want %d connected + %d away, not draining, seats %v", h, connected, away, perGame)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, under a deadline
	}
}

// rsSeatsAre reports whether got holds want's counts.
func rsSeatsAre(got, want map[string]int) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// goodbye decodes a goodbye frame, checking every key is present.
func (c *rsClient) goodbye(f rsFrame) rsGoodbye {
	c.t.Helper()
	var g rsGoodbye
	e2eWire(c.t, f.frame, &g, "code", "reason", "retry_after_ms", "resumable")
	return g
}

// expectGoodbye reads the connection to its end and checks that its last
// frame is goodbye {code, word, retry_after_ms null, resumable} and the close
// frame has that code and reason text word. It returns the frames before.
func (c *rsClient) expectGoodbye(within time.Duration, code int, word string, resumable bool) []rsFrame {
	c.t.Helper()
	frames, ce := c.end(within)
	if len(frames) == 0 || frames[len(frames)-1].Type != "goodbye" {
		c.t.Fatalf("connection ended (close %d %q) without a goodbye; frames %v", ce.Code, ce.Reason, rsTypes(frames))
	}
	last := frames[len(frames)-1]
	if g := c.goodbye(last); g.Code != code || g.Reason != word || g.RetryAfterMS != nil || g.Resumable != resumable {
		c.t.Fatalf("goodbye %s, want code %d reason %q retry_after_ms null resumable %t", last.Data, code, word, resumable)
	}
	if int(ce.Code) != code || ce.Reason != word {
		c.t.Fatalf("close code %d reason %q, want %d %q", ce.Code, ce.Reason, code, word)
	}
	return frames[:len(frames)-1]
}

// TestLostConnectionIsAwayThenLeft: b's socket is closed without a close
// frame; at once (< 100 ms) the others hear away (reason disconnected, the
// window, an offset); health counts b away and its seat; a newcomer sees b
// listed away; between RESUME_WINDOW and RESUME_WINDOW + 1 s after away the
// others hear left with the same reason, and health forgets b.
func TestLostConnectionIsAwayThenLeft(t *testing.T) {
	cfg := rsResilient(t, 600*time.Millisecond)
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	_, pos := rsJoinAll(t, game, a, b)
	dropped := time.Now()
	b.drop()
	f := a.next(waitFor)
	p := rsPresenceIs(t, f, game, b.session.SID, "away", "disconnected")
	if p.Offset != pos+1 || p.ResumeWindowMS == nil || *p.ResumeWindowMS != 600 || p.UserID != nil {
		t.Fatalf("away %s, want offset %d, resume_window_ms 600, user_id null", f.Data, pos+1)
	}
	awayAt := f.at
	if late := awayAt.Sub(dropped); late > 100*time.Millisecond+e2eSlack {
		t.Errorf("away came %s after the drop, want < 100 ms", late)
	}
	rsHealthIs(t, s, 1, 1, map[string]int{game: 2})
	c := rsDial(t, s.url, nil)
	j := c.join(game, "c")
	a.presence(game, c.session.SID, "joined", "")
	if len(j.Members) != 3 {
		t.Fatalf("members %+v, want 3", j.Members)
	}
	for _, m := range j.Members {
		if want := map[bool]string{true: "away", false: "connected"}[m.SID == b.session.SID]; m.Status != want {
			t.Fatalf("member %s status %q, want %q", m.SID, m.Status, want)
		}
	}
	rsHealthIs(t, s, 2, 1, map[string]int{game: 3})
	f = a.next(cfg.ResumeWindow + waitFor)
	rsPresenceIs(t, f, game, b.session.SID, "left", "disconnected")
	const jitter = 100 * time.Millisecond // the client reads the two frames with its own scheduling delay
	if after := f.at.Sub(awayAt); after < cfg.ResumeWindow-jitter || after > cfg.ResumeWindow+time.Second {
		t.Errorf("left %s after away, want between RESUME_WINDOW %s and 1 s more", after, cfg.ResumeWindow)
	}
	c.presence(game, b.session.SID, "left", "disconnected")
	rsHealthIs(t, s, 2, 0, map[string]int{game: 2})
	rsEnd(t, s, a, c)
}

// TestClientCloseCodes: a client close frame with 1000 ends the session at
// once (left, disconnected); any other code (1001, as a browser tab sends, or
// a private one) leaves it away.
func TestClientCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code   websocket.StatusCode
		status string
	}{{websocket.StatusNormalClosure, "left"}, {websocket.StatusGoingAway, "away"}, {4321, "away"}} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			s := startServer(t, rsResilient(t, 2*time.Second))
			game := uuid.NewString()
			a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
			rsJoinAll(t, game, a, b)
			_ = b.ws.Close(tc.code, "bye")
			a.presence(game, b.session.SID, tc.status, "disconnected")
			if tc.status == "away" {
				rsHealthIs(t, s, 1, 1, map[string]int{game: 2})
				a.presence(game, b.session.SID, "left", "disconnected")
			}
			rsHealthIs(t, s, 1, 0, map[string]int{game: 1})
			rsEnd(t, s, a)
		})
	}
}

// TestNormalCloseWhileReceiving: a client that closes with 1000 while the
// server is writing it frames has still said goodbye: its session ends at
// once, and its game hears left, never away. Each round, b closes while a's
// burst of decisions is being relayed to it. (The window is longer than any
// wait here, so a session wrongly left away cannot end in time to pass.)
func TestNormalCloseWhileReceiving(t *testing.T) {
	s := startServer(t, rsResilient(t, time.Minute))
	const rounds, burst = 200, 20
	for round := range rounds {
		game := uuid.NewString()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b)
		for i := range burst {
			a.decide(game, "", i)
		}
		_ = b.ws.Close(websocket.StatusNormalClosure, "")
		echoes, heard := 0, false
		for echoes < burst || !heard {
			f := a.next(waitFor)
			if f.Type == "defensive_decision" {
				echoes++
				continue
			}
			var p rsPresence
			if f.Type != "presence" || json.Unmarshal(f.Data, &p) != nil || p.Status != "left" || p.Reason != "disconnected" {
				t.Fatalf("round %d: after b closed with 1000, a got %s, want presence left disconnected", round, f.raw)
			}
			heard = true
		}
		rsHealthIs(t, s, 1, 0, map[string]int{game: 1})
		rsEnd(t, s, a) // nothing is on its way to a now
	}
}

// TestServerClosesSayGoodbye: every close the server starts with a close
// frame is preceded by goodbye {code, reason, retry_after_ms null,
// resumable}, and the close frame's reason text is the goodbye's reason; the
// session ends at once (its game hears left, nothing is away).
func TestServerClosesSayGoodbye(t *testing.T) {
	cases := []struct {
		name, word, left string
		code             int
		setup            func(*config)
		provoke          func(t *testing.T, a, b *rsClient)
	}{
		{"expired", "expired", "expired", 4000, func(c *config) {
			c.SessionTimeout, c.ExpiryWarning, c.ExpiryCheckInterval = 300*time.Millisecond, 150*time.Millisecond, 20*time.Millisecond
		}, nil},
		{"too big", "too_big", "disconnected", 1009, func(c *config) { c.MaxMessageBytes = 1024 }, func(t *testing.T, a, _ *rsClient) {
			a.send(`{"type":"heartbeat","data":"` + strings.Repeat("x", 2000) + `"}`)
		}},
		{"binary", "binary", "disconnected", 1003, nil, func(t *testing.T, a, _ *rsClient) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			if err := a.ws.Write(ctx, websocket.MessageBinary, []byte(`{"type":"heartbeat"}`)); err != nil {
				t.Fatal(err)
			}
		}},
		{"rate limited", "rate_limited", "disconnected", 1008, func(c *config) {
			c.RateLimit, c.RateBurst, c.rateLimitGrace, c.SendQueueSize = 5, 5, 200*time.Millisecond, 1<<14
		}, func(t *testing.T, a, _ *rsClient) {
			for i := 0; ; i++ { // a flood, paced at one message a millisecond, until the server ends it
				select {
				case <-a.done:
					return
				case <-time.After(time.Millisecond):
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				err := a.ws.Write(ctx, websocket.MessageText, []byte(e2eMsg("heartbeat", strconv.Itoa(i), nil)))
				cancel()
				if err != nil || i > 20000 {
					return
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := rsResilient(t, 2*time.Second)
			if tc.setup != nil {
				tc.setup(&cfg)
			}
			s := startServer(t, cfg)
			game := uuid.NewString()
			a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
			rsJoinAll(t, game, a, b)
			if tc.provoke != nil {
				tc.provoke(t, a, b)
			} else { // b keeps active while a idles into expiry
				go func() {
					for i := 0; ; i++ {
						select {
						case <-a.done:
							return
						case <-time.After(50 * time.Millisecond):
						}
						ctx, cancel := context.WithTimeout(context.Background(), waitFor)
						_ = b.ws.Write(ctx, websocket.MessageText, []byte(e2eMsg("heartbeat", "keep", nil)))
						cancel()
					}
				}()
			}
			for _, f := range a.expectGoodbye(10*time.Second, tc.code, tc.word, false) {
				if f.Type == "goodbye" {
					t.Fatalf("two goodbyes")
				}
			}
			for {
				f := b.next(waitFor)
				if f.Type == "heartbeat_ack" || f.Type == "session_expiring" {
					continue
				}
				rsPresenceIs(t, f, game, a.session.SID, "left", tc.left)
				break
			}
			rsHealthIs(t, s, 1, 0, map[string]int{game: 1})
		})
	}
}

// TestSlowConsumerIsAwayAndResumable: a member that stops reading while
// another floods its game ends as a slow consumer: once it reads again it
// finds a prefix of the flood, then goodbye 1008 slow_consumer resumable,
// and close 1008 "slow_consumer"; the others hear away reason slow_consumer,
// and left with that reason once the window is over.
func TestSlowConsumerIsAwayAndResumable(t *testing.T) {
	cfg := rsResilient(t, 800*time.Millisecond)
	cfg.SendQueueSize = 8
	cfg.PingInterval, cfg.PingTimeout = time.Minute, time.Minute
	cfg.RateLimit, cfg.RateBurst = 1e6, 1_000_000
	s := startServer(t, cfg)
	game := uuid.NewString()
	a := rsDial(t, s.url, nil)
	b := rsDialHeld(t, s.url, nil)
	a.join(game, "a")
	b.send(e2eGameMsg("join_game", "b", game, nil))
	a.presence(game, b.session.SID, "joined", "")
	// b reads nothing from here on. a floods 32 KiB decisions, at most four
	// ahead of its own echoes, until health has b away.
	pad := strings.Repeat("x", 32<<10)
	var awayAt time.Time
	sent, echoed := 0, 0
	for awayAt.IsZero() {
		if sent == 2000 {
			t.Fatalf("b still connected after %d frames of 32 KiB", sent)
		}
		a.send(`{"type":"submit_defensive_decision","data":{"game_id":"` + game + `","decision":{"pad":"` + pad + `"}}}`)
		sent++
		for sent-echoed > 4 || (sent%8 == 0 && awayAt.IsZero() && rsHealthOf(t, s).Away == 1 && echoed < sent) {
			f := a.next(waitFor)
			if f.Type == "presence" {
				rsPresenceIs(t, f, game, b.session.SID, "away", "slow_consumer")
				awayAt = f.at
				continue
			}
			echoed++
		}
	}
	rsHealthIs(t, s, 1, 1, map[string]int{game: 2})
	b.read()
	for _, f := range b.expectGoodbye(waitFor, 1008, "slow_consumer", true) {
		if f.Type != "game_joined" && f.Type != "defensive_decision" {
			t.Fatalf("slow consumer got %s before its goodbye", f.Type)
		}
	}
	for {
		f := a.next(cfg.ResumeWindow + waitFor)
		if f.Type == "defensive_decision" {
			continue
		}
		rsPresenceIs(t, f, game, b.session.SID, "left", "slow_consumer")
		// The client reads the two presences with its own scheduling delay: 100 ms of it is allowed.
		if after := f.at.Sub(awayAt); after < cfg.ResumeWindow-100*time.Millisecond || after > cfg.ResumeWindow+time.Second {
			t.Errorf("left %s after away, want between %s and 1 s more", after, cfg.ResumeWindow)
		}
		break
	}
	rsHealthIs(t, s, 1, 0, map[string]int{game: 1})
	rsEnd(t, s, a)
}

// TestShutdownGoodbyes: at shutdown, with 50 connections, health says
// draining, a handshake gets 503 with a Retry-After of whole seconds >= 1,
// and every connection gets goodbye 1001 shutdown, not resumable, with its own
// retry_after_ms drawn from [0, SHUTDOWN_RETRY_SPREAD), then close 1001
// "shutdown", all within SHUTDOWN_TIMEOUT.
func TestShutdownGoodbyes(t *testing.T) {
	cfg := rsResilient(t, 2*time.Second)
	cfg.ShutdownRetrySpread = 10 * time.Second
	cfg.PingInterval = time.Minute
	s := startServer(t, cfg)
	const n = 50
	game := uuid.NewString()
	clients := make([]*rsClient, n)
	for i := range clients {
		clients[i] = rsDial(t, s.url, nil)
		if i%2 == 0 {
			clients[i].join(game, "j") // half of them in a game: shutdown ends them alike
		}
	}
	type probe struct {
		h      rsHealth
		status int
		retry  string
	}
	probed, result := make(chan probe, 1), make(chan error, 1)
	start := time.Now()
	go func() {
		// The listener stays open while the real shutdown runs, so health and
		// a handshake can be tried once draining has begun.
		result <- s.shutdown(cfg.ShutdownTimeout, func(context.Context) error {
			var p probe
			if resp, err := http.Get(s.ts.URL + "/health/connections"); err == nil {
				_ = json.NewDecoder(resp.Body).Decode(&p.h)
				resp.Body.Close()
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			if ws, resp, err := websocket.Dial(ctx, s.url, nil); err == nil {
				_ = ws.CloseNow()
			} else if resp != nil {
				p.status, p.retry = resp.StatusCode, resp.Header.Get("Retry-After")
			}
			probed <- p
			return nil
		})
	}()
	p := <-probed
	if !p.h.Draining || p.h.TotalSessions != n {
		t.Errorf("health during shutdown %+v, want draining and %d sessions", p.h, n)
	}
	if secs, err := strconv.Atoi(p.retry); p.status != http.StatusServiceUnavailable || err != nil || secs < 1 {
		t.Errorf("handshake while draining: HTTP %d Retry-After %q, want 503 and whole seconds >= 1", p.status, p.retry)
	}
	var retries []int64
	for i, c := range clients {
		frames, ce := c.end(cfg.ShutdownTimeout)
		if len(frames) == 0 || frames[len(frames)-1].Type != "goodbye" {
			t.Fatalf("client %d ended (close %d) without a goodbye: %v", i, ce.Code, rsTypes(frames))
		}
		g := c.goodbye(frames[len(frames)-1])
		if g.Code != 1001 || g.Reason != "shutdown" || g.Resumable || g.RetryAfterMS == nil ||
			*g.RetryAfterMS < 0 || *g.RetryAfterMS >= cfg.ShutdownRetrySpread.Milliseconds() {
			t.Fatalf("client %d goodbye %s, want 1001 shutdown, not resumable, retry_after_ms in [0, %d)",
				i, frames[len(frames)-1].Data, cfg.ShutdownRetrySpread.Milliseconds())
		}
		if ce.Code != websocket.StatusGoingAway || ce.Reason != "shutdown" {
			t.Fatalf("client %d close %d %q, want 1001 shutdown", i, ce.Code, ce.Reason)
		}
		retries = append(retries, *g.RetryAfterMS)
	}
	if err := <-result; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(start); took > cfg.ShutdownTimeout {
		t.Errorf("shutdown took %s, more than SHUTDOWN_TIMEOUT", took)
	}
	// Drawn uniformly from 10,000 values, 50 draws repeat a value about once
	// in nine runs: a few repeats are chance, many would be one shared delay.
	// All four quarters of the spread are hit but for odds of 1 in 400,000.
	slices.Sort(retries)
	distinct := len(slices.Compact(slices.Clone(retries)))
	quarters := map[int64]bool{}
	for _, r := range retries {
		quarters[r*4/cfg.ShutdownRetrySpread.Milliseconds()] = true
	}
	if distinct < n-3 || len(quarters) != 4 {
		t.Fatalf("retry_after_ms %v: %d distinct of %d, %d quarters of the spread hit; want each connection its own draw", retries, distinct, n, len(quarters))
	}
	t.Logf("retry_after_ms from %d to %d, %d distinct of %d", retries[0], retries[n-1], distinct, n)
}

// TestMaxSessionsRetryAfter: with MAX_SESSIONS=2 a third handshake gets 503
// with Retry-After in whole seconds >= 1; an away session holds no slot, so
// once one connection is lost another is accepted.
func TestMaxSessionsRetryAfter(t *testing.T) {
	cfg := rsResilient(t, 2*time.Second)
	cfg.MaxSessions = 2
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	rsJoinAll(t, game, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, s.url, nil)
	if err == nil {
		_ = ws.CloseNow()
		t.Fatal("a third handshake was accepted with MAX_SESSIONS=2")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third handshake: %v %v, want 503", resp, err)
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
	}
	b.drop()
	a.presence(game, b.session.SID, "away", "disconnected")
	// The connection that gets the freed slot is the one that resumes: a probe
	// closed first would hold its own slot until its conn had fully ended.
	eventually(t, "a slot freed by the lost connection", func() bool {
		ws, _, err = websocket.Dial(ctx, s.url, nil)
		return err == nil
	})
	c := rsAttach(t, ws)
	c.read()
	c.resume("r", b.session.ResumeToken, nil, b)
	a.presence(game, b.session.SID, "back", "")
	rsHealthIs(t, s, 2, 0, map[string]int{game: 2})
	rsEnd(t, s, a, c)
}

// TestZombieIsAwayWithTimeout: a client that stops reading (and so answers no
// ping) leaves its session away with reason timeout within PING_INTERVAL +
// PING_TIMEOUT, and left with the same reason when the window is over.
func TestZombieIsAwayWithTimeout(t *testing.T) {
	cfg := rsResilient(t, 1500*time.Millisecond)
	cfg.PingInterval, cfg.PingTimeout = 200*time.Millisecond, 200*time.Millisecond
	s := startServer(t, cfg)
	game := uuid.NewString()
	a := rsDial(t, s.url, nil)
	a.join(game, "a")
	z := dial(t, s.url, nil) // reads only when the test asks it to
	z.send(`{"type":"join_game","id":"z","data":{"game_id":"` + game + `"}}`)
	z.expect("game_joined")
	stopped := time.Now() // z reads nothing from here on
	a.presence(game, z.session.SID, "joined", "")
	a.presence(game, z.session.SID, "away", "timeout")
	if late := time.Since(stopped); late > cfg.PingInterval+cfg.PingTimeout+e2eSlack {
		t.Errorf("away came %s after the zombie stopped reading, want within PING_INTERVAL + PING_TIMEOUT (%s)", late, cfg.PingInterval+cfg.PingTimeout)
	}
	rsHealthIs(t, s, 1, 1, map[string]int{game: 2})
	a.presence(game, z.session.SID, "left", "timeout")
	rsHealthIs(t, s, 1, 0, map[string]int{game: 1})
	rsEnd(t, s, a)
}
