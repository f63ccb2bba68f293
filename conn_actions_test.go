package main

// End-to-end tests of game events and the actions that make them (contract
// v2 §2 offsets, §5 exactly-once actions) over real clients, and the client
// that the protocol 2 tests share (rsClient: it reads on a goroutine of its
// own, so it answers pings while a test waits, and keeps each frame's raw
// bytes). The other rs* helpers are in conn_resume_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// rsFrame is one server frame as received: decoded, raw, and when.
type rsFrame struct {
	frame
	Dup bool `json:"dup"`
	raw []byte
	at  time.Time
}

// offset returns the frame's data.offset, failing when it has none.
func (f rsFrame) offset(t *testing.T) uint64 {
	t.Helper()
	var d struct {
		Offset *uint64 `json:"offset"`
	}
	if json.Unmarshal(f.Data, &d) != nil || d.Offset == nil {
		t.Fatalf("%s %s carries no data.offset", f.Type, f.Data)
	}
	return *d.Offset
}

// rsClient is a real client whose frames a goroutine of its own reads (so it
// answers pings while the test waits), keeping each frame's raw bytes.
type rsClient struct {
	t       *testing.T
	ws      *websocket.Conn
	session rsSessionData
	hello   []byte // the session frame as received
	frames  chan rsFrame
	start   chan struct{}   // closed to start reading, for a client dialled on hold
	done    chan struct{}   // closed when the read loop has returned
	games   map[string]bool // joined or resumed into, as the test goroutine saw
	err     error           // why it returned; read only after done
}

// rsDial connects, reads the session frame and starts reading.
func rsDial(t *testing.T, url string, opts *websocket.DialOptions) *rsClient {
	t.Helper()
	c := rsDialHeld(t, url, opts)
	c.read()
	return c
}

// rsDialHeld connects and reads the session frame, but reads nothing more
// until read is called: a client that stops reading.
func rsDialHeld(t *testing.T, url string, opts *websocket.DialOptions) *rsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	return rsAttach(t, ws)
}

// rsAttach reads the session frame of a freshly dialed ws and holds it as an
// rsClient that reads nothing more until read is called.
func rsAttach(t *testing.T, ws *websocket.Conn) *rsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws.SetReadLimit(-1)
	typ, b, err := ws.Read(ctx)
	var f frame
	if err != nil || typ != websocket.MessageText || json.Unmarshal(b, &f) != nil || f.Type != "session" {
		_ = ws.CloseNow()
		t.Fatalf("first frame %s (%v), want session", b, err)
	}
	c := &rsClient{t: t, ws: ws, hello: b, games: map[string]bool{}, frames: make(chan rsFrame, 1<<12), start: make(chan struct{}), done: make(chan struct{})}
	e2eWire(t, f, &c.session, "sid", "user_id", "ping_interval_ms", "session_timeout_ms", "protocol", "resume_token", "resume_window_ms", "token_exp")
	rctx, stop := context.WithCancel(context.Background())
	go func() {
		defer close(c.done)
		select {
		case <-c.start:
		case <-rctx.Done():
			c.err = rctx.Err()
			return
		}
		for {
			typ, b, err := ws.Read(rctx)
			if err != nil {
				c.err = err
				return
			}
			f := rsFrame{frame: frame{Type: "<binary>"}, raw: b, at: time.Now()}
			if typ == websocket.MessageText && json.Unmarshal(b, &f) != nil {
				f.Type = "<not json>"
			}
			f.raw, f.at = b, time.Now()
			select {
			case c.frames <- f:
			case <-rctx.Done():
				c.err = rctx.Err()
				return
			}
		}
	}()
	t.Cleanup(func() { stop(); _ = ws.CloseNow(); <-c.done })
	return c
}

// read starts a held client's reading.
func (c *rsClient) read() { close(c.start) }

// send writes one text message.
func (c *rsClient) send(msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// drop loses the connection without a close frame, as a network loss does.
func (c *rsClient) drop() { _ = c.ws.CloseNow() }

// next returns the next frame, failing if none comes within the time or the
// connection ends first.
func (c *rsClient) next(within time.Duration) rsFrame {
	c.t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case f := <-c.frames:
		return f
	case <-c.done:
		select {
		case f := <-c.frames:
			return f
		default:
		}
		c.t.Fatalf("connection ended (%v) while a frame was expected", c.err)
	case <-timer.C:
		c.t.Fatalf("no frame within %s", within)
	}
	return rsFrame{}
}

// expect returns the next frame, which must be of type typ.
func (c *rsClient) expect(typ string) rsFrame {
	c.t.Helper()
	f := c.next(waitFor)
	if f.Type != typ {
		c.t.Fatalf("got %s %s, want %s", f.Type, f.raw, typ)
	}
	return f
}

// quiet checks that nothing arrives, and the connection stays open, for window.
func (c *rsClient) quiet(window time.Duration) {
	c.t.Helper()
	timer := time.NewTimer(window)
	defer timer.Stop()
	select {
	case f := <-c.frames:
		c.t.Fatalf("got %s during a window that should be silent", f.raw)
	case <-c.done:
		c.t.Fatalf("connection ended (%v) during a window that should be silent", c.err)
	case <-timer.C:
	}
}

// rsAliveSeq makes liveness probe ids unique.
var rsAliveSeq atomic.Int64

// alive proves the connection open and nothing else pending: a heartbeat is
// answered by the very next frame.
func (c *rsClient) alive() {
	c.t.Helper()
	id := fmt.Sprintf("rs-alive-%d", rsAliveSeq.Add(1))
	c.send(e2eMsg("heartbeat", id, nil))
	if f := c.next(waitFor); f.Type != "heartbeat_ack" || f.ID != id {
		c.t.Fatalf("got %s, want heartbeat_ack id %q", f.raw, id)
	}
}

// end waits for the connection to end and returns the frames before its
// end and the close error (code -1 without a close frame).
func (c *rsClient) end(within time.Duration) ([]rsFrame, websocket.CloseError) {
	c.t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	var before []rsFrame
	for {
		select {
		case f := <-c.frames:
			before = append(before, f)
		case <-c.done:
			for {
				select {
				case f := <-c.frames:
					before = append(before, f)
				default:
					ce := websocket.CloseError{Code: -1}
					errors.As(c.err, &ce)
					return before, ce
				}
			}
		case <-timer.C:
			c.t.Fatalf("connection still open after %s (%d frames meanwhile)", within, len(before))
		}
	}
}

// rsTypes lists frames' types, for messages.
func rsTypes(frames []rsFrame) []string {
	var out []string
	for _, f := range frames {
		out = append(out, f.Type)
	}
	return out
}

// expectDup reads the next frame and checks it is first's bytes again with a
// top-level "dup":true first: {"dup":true,…}.
func (c *rsClient) expectDup(first rsFrame) rsFrame {
	c.t.Helper()
	f := c.next(waitFor)
	if !bytes.HasPrefix(f.raw, []byte(`{"dup":true,`)) || !f.Dup || f.Type != first.Type || f.ID != first.ID ||
		!bytes.Equal(f.Data, first.Data) {
		c.t.Fatalf("retry got %s, want the first reply %s again, marked {\"dup\":true,…}", f.raw, first.raw)
	}
	return f
}

// TestActionRetriesAreDups: for every action type sent with an id, the same
// id, type and data again gets the remembered reply with "dup":true (the
// same offset, the same dice results), nobody else hears anything, and the
// game's offsets go on without a gap.
func TestActionRetriesAreDups(t *testing.T) {
	s := startServer(t, rsResilient(t, time.Second))
	game, side := uuid.NewString(), uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	_, last := rsJoinAll(t, game, a, b)
	b.join(side, "b-side")
	actions := []struct {
		name, msg string
		hears     bool // b hears the first try
	}{
		{"defensive decision", e2eGameMsg("submit_defensive_decision", "def", game, map[string]any{"decision": map[string]any{"x": 1}}), true},
		{"offensive decision", e2eGameMsg("submit_offensive_decision", "off", game, map[string]any{"decision": map[string]any{"y": 2}}), true},
		{"roll", e2eGameMsg("roll_dice", "roll", game, map[string]any{"dice": []int{100, 100, 100}}), true},
		{"join", e2eGameMsg("join_game", "join", side, nil), true},
		{"leave", e2eGameMsg("leave_game", "leave", side, nil), true},
	}
	for _, act := range actions {
		t.Run(act.name, func(t *testing.T) {
			a, b := a.e2eAsRS(t), b.e2eAsRS(t)
			a.send(act.msg)
			first := a.next(waitFor)
			if first.Dup || first.Type == "error" {
				t.Fatalf("first try got %s", first.raw)
			}
			if act.hears {
				b.next(waitFor)
			}
			for range 2 {
				a.send(act.msg)
				a.expectDup(first)
			}
			b.alive() // the retries reached nobody else
			a.alive()
		})
	}
	// Three game events ran in game, one each; the retries sequenced nothing.
	a.decide(game, "", 0)
	if f := b.expect("defensive_decision"); f.offset(t) != last+4 {
		t.Fatalf("next event at offset %d, want %d", f.offset(t), last+4)
	}
	a.expect("defensive_decision")
	rsEnd(t, s, a, b)
}

// e2eAsRS returns c bound to t, for a subtest.
func (c *rsClient) e2eAsRS(t *testing.T) *rsClient {
	cc := *c
	cc.t = t
	return &cc
}

// TestIDReused: an id already used, sent with other data or another type,
// gets error id_reused with its id, and nothing runs; the first action's
// retry is still a dup afterwards.
func TestIDReused(t *testing.T) {
	s := startServer(t, rsResilient(t, time.Second))
	game := uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	rsJoinAll(t, game, a, b)
	orig := e2eGameMsg("submit_defensive_decision", "x", game, map[string]any{"decision": map[string]any{"n": 1}})
	a.send(orig)
	first := a.expect("defensive_decision")
	b.expect("defensive_decision")
	for _, other := range []string{
		e2eGameMsg("submit_defensive_decision", "x", game, map[string]any{"decision": map[string]any{"n": 2}}),
		e2eGameMsg("submit_offensive_decision", "x", game, map[string]any{"decision": map[string]any{"n": 1}}),
		e2eGameMsg("roll_dice", "x", game, nil),
		e2eGameMsg("leave_game", "x", game, nil),
	} {
		a.send(other)
		f := a.expect("error")
		var e rsErr
		e2eWire(t, f.frame, &e, "code", "message")
		if e.Code != "id_reused" || f.ID != "x" {
			t.Fatalf("%s got %s, want error id_reused with id x", other, f.raw)
		}
	}
	b.alive() // nothing ran
	a.send(orig)
	a.expectDup(first)
	rsHealthIs(t, s, 2, 0, map[string]int{game: 2}) // the leave under a used id did not run
	rsEnd(t, s, a, b)
}

// TestRefusedActionIsNotRemembered: an action answered by error is not
// remembered, so its retry runs; actions without an id run every time.
func TestRefusedActionIsNotRemembered(t *testing.T) {
	s := startServer(t, rsResilient(t, time.Second))
	game := uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	rsJoinAll(t, game, b)
	msg := e2eGameMsg("roll_dice", "early", game, nil)
	a.send(msg)
	if f := a.expect("error"); f.ID != "early" {
		t.Fatalf("error id %q", f.ID)
	}
	a.join(game, "now")
	b.presence(game, a.session.SID, "joined", "")
	a.send(msg)
	if f := a.expect("dice_rolled"); f.Dup || f.ID != "early" {
		t.Fatalf("retry after an error got %s, want it to run", f.raw)
	}
	b.expect("dice_rolled")
	for range 2 {
		a.decide(game, "", 5)
		if f := a.expect("defensive_decision"); f.Dup {
			t.Fatalf("an action without id got %s", f.raw)
		}
		b.expect("defensive_decision")
	}
	rsEnd(t, s, a, b)
}

// TestExactlyOnceAcrossResume: a rolls and loses its connection before it
// reads the result. Resumed, it finds the roll in what it missed; retrying the
// roll gets the same results marked dup, and b, which saw the roll once,
// hears nothing more. A fresh session using the same id runs it.
func TestExactlyOnceAcrossResume(t *testing.T) {
	s := startServer(t, rsResilient(t, 3*time.Second))
	game := uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	epoch, pos := rsJoinAll(t, game, a, b)
	roll := e2eGameMsg("roll_dice", "r1", game, map[string]any{"dice": []int{100, 100, 100, 100}})
	a.send(roll)
	a.drop() // the roll was written before the socket went: the server runs it, then finds the loss
	seen := b.expect("dice_rolled")
	b.presence(game, a.session.SID, "away", "disconnected")

	a2 := rsDial(t, s.url, nil)
	r := a2.resume("res", a.session.ResumeToken, map[string]rsPos{game: {epoch, pos}}, a)
	if len(r.Games) != 1 || !r.Games[0].Recovered {
		t.Fatalf("resumed %+v, want the game recovered", r.Games)
	}
	if f := a2.next(waitFor); !bytes.Equal(f.raw, seen.raw) {
		t.Fatalf("first replayed %s, want the roll b saw %s", f.raw, seen.raw)
	}
	a2.presence(game, a.session.SID, "away", "disconnected") // a's own away, replayed
	b.presence(game, a.session.SID, "back", "")
	a2.send(roll)
	f := a2.next(waitFor)
	if !f.Dup || f.Type != "dice_rolled" || f.ID != "r1" || !bytes.Equal(f.Data, seen.Data) {
		t.Fatalf("retried roll after resume got %s, want dup of %s", f.raw, seen.raw)
	}
	b.alive()

	fresh := rsDial(t, s.url, nil)
	fresh.join(game, "fresh")
	b.presence(game, fresh.session.SID, "joined", "")
	a2.presence(game, fresh.session.SID, "joined", "")
	fresh.send(roll)
	if f := fresh.expect("dice_rolled"); f.Dup {
		t.Fatalf("a fresh session's first use of the id got %s", f.raw)
	}
	b.expect("dice_rolled")
	a2.expect("dice_rolled")
	rsEnd(t, s, a2, b, fresh)
}

// TestActionMemoryBounds: with ACTION_ID_MAX=2 the oldest id is forgotten
// first (its retry runs again), and with ACTION_ID_TTL an id is remembered
// for no less and not much more than the TTL.
func TestActionMemoryBounds(t *testing.T) {
	t.Run("ACTION_ID_MAX", func(t *testing.T) {
		cfg := rsResilient(t, time.Second)
		cfg.ActionIDMax = 2
		s := startServer(t, cfg)
		game := uuid.NewString()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b) // with ids, which count too: the two actions below push them out
		var replies []rsFrame
		for i := range 3 {
			a.decide(game, fmt.Sprint(i), i)
			replies = append(replies, a.expect("defensive_decision"))
			b.expect("defensive_decision")
		}
		a.decide(game, "2", 2)
		a.expectDup(replies[2])
		a.decide(game, "0", 0)
		if f := a.expect("defensive_decision"); f.Dup {
			t.Fatalf("the oldest of three ids with ACTION_ID_MAX=2 was still remembered: %s", f.raw)
		}
		b.expect("defensive_decision")
		rsEnd(t, s, a, b)
	})
	t.Run("ACTION_ID_TTL", func(t *testing.T) {
		cfg := rsResilient(t, 200*time.Millisecond)
		cfg.ActionIDTTL = 400 * time.Millisecond
		s := startServer(t, cfg)
		game := uuid.NewString()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b)
		msg := e2eGameMsg("submit_offensive_decision", "ttl", game, map[string]any{"decision": map[string]any{}})
		sent := time.Now()
		a.send(msg)
		first := a.expect("offensive_decision")
		b.expect("offensive_decision")
		for {
			time.Sleep(40 * time.Millisecond) // paced retries, not a wait for something to settle
			at := time.Now()
			a.send(msg)
			f := a.next(waitFor)
			if f.Dup {
				if !bytes.Equal(f.Data, first.Data) {
					t.Fatalf("dup %s differs from %s", f.raw, first.raw)
				}
				if at.Sub(sent) > cfg.ActionIDTTL+time.Second {
					t.Fatalf("still remembered %s after the first try, ACTION_ID_TTL %s", at.Sub(sent), cfg.ActionIDTTL)
				}
				continue
			}
			if f.Type != "offensive_decision" || f.ID != "ttl" {
				t.Fatalf("got %s", f.raw)
			}
			if since := time.Since(first.at); since < cfg.ActionIDTTL {
				t.Fatalf("forgotten %s after the first reply, before ACTION_ID_TTL %s", since, cfg.ActionIDTTL)
			}
			b.expect("offensive_decision")
			break
		}
		rsEnd(t, s, a, b)
	})
}

// TestSessionFrameProtocol2: session adds protocol 2, a resume token of at
// least 128 bits' worth of characters, distinct per session, and the window.
func TestSessionFrameProtocol2(t *testing.T) {
	s := startServer(t, rsResilient(t, 1500*time.Millisecond))
	seen := map[string]bool{}
	var clients []*rsClient
	for range 3 {
		c := rsDial(t, s.url, nil)
		d := c.session
		if d.Protocol != 2 || d.ResumeWindowMS != 1500 || len(d.ResumeToken) < 22 || seen[d.ResumeToken] {
			t.Fatalf("session %+v, want protocol 2, resume_window_ms 1500, a fresh token of >= 22 characters", d)
		}
		seen[d.ResumeToken] = true
		clients = append(clients, c)
	}
	rsEnd(t, s, clients...)
}

// TestGameEventOffsets: every game event carries data.offset, 1 for the
// game's first and +1 per event, the same for every member (the sender's own
// copy, with its id, too); game_joined carries the epoch and the joiner's own
// joined offset, or the latest on a re-join; a game that empties and is
// created again has a new epoch and starts again at 1.
func TestGameEventOffsets(t *testing.T) {
	s := startServer(t, rsResilient(t, time.Second))
	game := uuid.NewString()
	a, b, c := rsDial(t, s.url, nil), rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	epoch, last := rsJoinAll(t, game, a, b, c) // offsets 1, 2, 3
	everyone := []*rsClient{a, b, c}
	sameOffset := func(want uint64, typ string, sender *rsClient, id string) {
		t.Helper()
		for _, m := range everyone {
			f := m.expect(typ)
			if got := f.offset(t); got != want {
				t.Fatalf("%s copy of %s has offset %d, want %d", m.session.SID, typ, got, want)
			}
			if wantID := map[bool]string{true: id, false: ""}[m == sender]; f.ID != wantID {
				t.Fatalf("%s id %q, want %q", typ, f.ID, wantID)
			}
		}
	}
	a.decide(game, "d1", 1)
	sameOffset(last+1, "defensive_decision", a, "d1")
	b.send(e2eGameMsg("submit_offensive_decision", "o1", game, map[string]any{"decision": map[string]any{}}))
	sameOffset(last+2, "offensive_decision", b, "o1")
	c.send(e2eGameMsg("roll_dice", "r1", game, nil))
	sameOffset(last+3, "dice_rolled", c, "r1")

	b.send(e2eGameMsg("leave_game", "l1", game, nil))
	b.expect("game_left")
	for _, m := range []*rsClient{a, c} {
		if p := m.presence(game, b.session.SID, "left", "left"); p.Offset != last+4 {
			t.Fatalf("left presence offset %d, want %d", p.Offset, last+4)
		}
	}
	j := b.join(game, "j2")
	if j.Epoch != epoch || j.Offset != last+5 {
		t.Fatalf("re-join after leave: epoch %q offset %d, want %q and its own joined event %d", j.Epoch, j.Offset, epoch, last+5)
	}
	for _, m := range []*rsClient{a, c} {
		if p := m.presence(game, b.session.SID, "joined", ""); p.Offset != last+5 {
			t.Fatalf("joined presence offset %d, want %d", p.Offset, last+5)
		}
	}
	if j := a.join(game, "j3"); j.Epoch != epoch || j.Offset != last+5 || len(j.Members) != 3 {
		t.Fatalf("re-join while in the game: %+v, want epoch %q, the latest offset %d and 3 members", j, epoch, last+5)
	}
	for _, m := range everyone {
		m.alive() // the re-join made no event
	}
	rsEnd(t, s, a, b, c)

	d := rsDial(t, s.url, nil)
	if j := d.join(game, "again"); j.Epoch == epoch || j.Offset != 1 {
		t.Fatalf("game created again: epoch %q offset %d, want a new epoch and offset 1", j.Epoch, j.Offset)
	}
	rsEnd(t, s, d)
}
