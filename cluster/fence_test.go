package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
)

// A node frozen with SIGSTOP past NODE_TTL is declared dead by the others:
// its players are away (timeout) to the rest of the game within NODE_TTL.
// Woken with SIGCONT, it finds itself fenced (its heartbeat meets the
// tombstone) and closes its connections with goodbye 1001 shutdown,
// resumable, instead of serving ghosts: nothing it does after waking reaches
// the game (a roll its players sent while it was frozen, and one sent right
// after it woke, are never sequenced, nor answered), its players resume on
// the other nodes with nothing missed, and afterwards every node's health
// counts each session once.
func TestClusterFrozenNodeFencesItself(t *testing.T) {
	_, nodes := startCluster(t, 3, nil)
	enginesUp(t, nodes...)
	game := gameID(101)
	f1 := dial(t, nodes[0].Addr) // on the node that freezes
	f2 := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	c := dial(t, nodes[2].Addr)
	epoch := f1.join(game).field("epoch")
	f2.join(game)
	b.join(game)
	c.join(game)
	b.roll(game, "b-1")
	b.expect("dice_rolled", nil)
	lastF1 := f1.expect("dice_rolled", nil).offset()
	lastF2 := f2.expect("dice_rolled", nil).offset()
	lastB := lastF1 // b's own roll is the latest event it processed
	framesUntil(c, 10*time.Second, "b's roll at c", func(f *frame) bool { return f.Type == "dice_rolled" })

	frozen := time.Now()
	if err := nodes[0].Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	contDone := false
	cont := func() {
		if !contDone {
			contDone = true
			_ = nodes[0].Cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(cont) // a failure while frozen must not leave the process stopped

	// The others hear both players away (timeout) within NODE_TTL (+ slack).
	var atB []*frame
	away := map[any]bool{}
	for len(away) < 2 {
		fs := framesUntil(b, nodeTTL+slack, "the frozen node's players away at b", func(f *frame) bool {
			return f.Type == "presence" && f.field("status") == "away" && (f.field("sid") == f1.sid || f.field("sid") == f2.sid)
		})
		atB = append(atB, fs...)
		if last := fs[len(fs)-1]; last.field("reason") != "timeout" {
			t.Fatalf("away for a frozen node's player: %s, want reason timeout", last.raw)
		} else {
			away[last.field("sid")] = true
		}
	}
	t.Logf("both away at b %s after SIGSTOP (NODE_TTL %s)", time.Since(frozen).Round(time.Millisecond), nodeTTL)
	framesUntil(c, slack, "f1 away at c", func(f *frame) bool {
		return f.Type == "presence" && f.field("status") == "away" && f.field("sid") == f1.sid
	})

	// Rolls sent to the frozen node wait in its sockets: they are the first
	// thing the node reads when it wakes, before its heartbeat can tell it
	// it is dead. Another follows right after SIGCONT.
	f1.roll(game, "ghost-1")
	f2.roll(game, "ghost-2")
	cont()
	// Best effort: the node may have closed the connection already.
	_ = sendLoose(f1, "roll_dice", "ghost-3", map[string]any{"game_id": game, "dice": []int{6}})

	// Each of its players gets goodbye 1001 shutdown, resumable, then close 1001.
	for _, x := range []*client{f1, f2} {
		code, fs := closeOf(x, nodeTTL+slack)
		var bye *frame
		for _, f := range fs {
			switch {
			case f.Type == "goodbye":
				bye = f
			case strings.HasPrefix(f.ID, "ghost-"):
				t.Errorf("the fenced node answered %s, which the cluster never sequenced: %s", f.ID, f.raw)
			case f.Type == "dice_rolled" && (f.field("sid") == f1.sid || f.field("sid") == f2.sid):
				t.Errorf("the fenced node delivered a ghost roll to its own player: %s", f.raw)
			}
		}
		if bye == nil {
			t.Fatalf("no goodbye before the close (code %d); frames:\n%s", code, rawFrames(fs))
		}
		if bye.field("code") != 1001.0 || bye.field("reason") != "shutdown" || bye.field("resumable") != true {
			t.Fatalf("goodbye %s, want code 1001, reason shutdown, resumable", bye.raw)
		}
		if code != websocket.StatusGoingAway {
			t.Fatalf("close code %d after the goodbye, want 1001", code)
		}
	}
	// Its log is read by another goroutine: the line may trail the closes.
	eventually(t, 5*time.Second, "the woken node logs that it found itself declared dead", func() bool {
		return strings.Contains(nodes[0].Log(), "declared dead")
	})

	// They resume on the other nodes, recovered, with what they missed:
	// offsets consecutive from their own position to the resumed one (their
	// own back, not sent).
	r1, res1 := resumeAt(t, nodes[1].Addr, f1, game, epoch, lastF1)
	r2, res2 := resumeAt(t, nodes[2].Addr, f2, game, epoch, lastF2)
	for _, x := range []struct {
		name string
		c    *client
		res  *frame
		from uint64
	}{{"f1", r1, res1, lastF1}, {"f2", r2, res2, lastF2}} {
		g := resumedEntry(x.res, game)
		if g == nil || g["recovered"] != true {
			t.Fatalf("%s's resume: %s, want the game recovered", x.name, x.res.raw)
		}
		at := uint64(g["offset"].(float64))
		next := x.from + 1
		for next < at {
			f := framesUntil(x.c, 5*time.Second, x.name+"'s replay", func(f *frame) bool { return f.offset() > 0 })
			got := f[len(f)-1]
			if got.offset() != next {
				t.Fatalf("%s's replay: offset %d, want %d: %s", x.name, got.offset(), next, got.raw)
			}
			if got.Type == "dice_rolled" && (got.field("sid") == f1.sid || got.field("sid") == f2.sid) {
				t.Fatalf("%s's replay holds a roll of the fenced node's players: %s", x.name, got.raw)
			}
			next++
		}
	}

	// The fenced node serves again, as a new incarnation that holds nothing:
	// a join through it is sequenced after whatever it queued on waking, so
	// if any ghost of it reached the game, b hears it before this join.
	eventually(t, 3*nodeTTL+slack, "the fenced node's engine up again", func() bool {
		return healthOf(t, nodes[0], "node")["engine"] == "up"
	})
	s := dial(t, nodes[0].Addr)
	s.join(game)
	fs := framesUntil(b, 10*time.Second, "the sentinel's join at b", func(f *frame) bool {
		return f.Type == "presence" && f.field("sid") == s.sid && f.field("status") == "joined"
	})
	atB = append(atB, fs...)
	backs := map[any]int{}
	for _, f := range atB {
		if f.offset() == 0 {
			continue
		}
		if f.offset() != lastB+1 {
			t.Errorf("b: offset %d after %d: %s", f.offset(), lastB, f.raw)
		}
		lastB = f.offset()
		sid := f.field("sid")
		if sid != f1.sid && sid != f2.sid {
			continue
		}
		switch {
		case f.Type == "presence" && f.field("status") == "away":
		case f.Type == "presence" && f.field("status") == "back":
			backs[sid]++
		default:
			t.Errorf("b heard from the fenced node's player after the freeze: %s", f.raw)
		}
	}
	if backs[f1.sid] != 1 || backs[f2.sid] != 1 {
		t.Errorf("b heard back %d times for f1 and %d for f2, want once each", backs[f1.sid], backs[f2.sid])
	}

	// The ghost rolls never ran: retried on the new node, each runs once,
	// fresh (not dup), and the others hear it once.
	r1.send("roll_dice", "ghost-1", map[string]any{"game_id": game, "dice": []int{6}})
	mine := r1.expect("dice_rolled", func(f *frame) bool { return f.ID == "ghost-1" })
	if mine.Dup {
		t.Fatalf("the ghost roll retried after the resume was answered dup: it ran on the fenced node: %s", mine.raw)
	}
	theirs := framesUntil(b, 5*time.Second, "the retried roll at b", func(f *frame) bool { return f.Type == "dice_rolled" })
	if got := theirs[len(theirs)-1]; got.offset() != mine.offset() || got.field("sid") != f1.sid {
		t.Fatalf("b heard %s, want f1's retried roll at %d", got.raw, mine.offset())
	}

	// No ghost session: every node's cluster view counts the five once,
	// all connected, and the fenced node holds only the sentinel.
	for _, n := range nodes {
		eventually(t, 3*nodeTTL+slack, "one count of every session on "+n.Addr, func() bool {
			h := healthOf(t, n, "")
			per, _ := h["sessions_per_game"].(map[string]any)
			return h["engine"] == "up" && h["total_sessions"] == 5.0 && h["connected_sessions"] == 5.0 &&
				h["away_sessions"] == 0.0 && per[game] == 5.0
		})
	}
	if h := healthOf(t, nodes[0], "node"); h["total_sessions"] != 1.0 {
		t.Fatalf("the fenced node's own view after it came back: %v, want only the sentinel", h)
	}

}

// A fenced node leaves no ghost behind it: whatever it did on waking, before
// it knew it was dead (here: its players' rolls, read first thing), must
// not leave in Redis a record of sessions that now live on other nodes. So
// when that node later dies for good (SIGKILL), its reaper adopts only what
// its new incarnation held (a sentinel player), and the players it was
// fenced from, connected elsewhere, are not declared away. The reaper adopts
// every record of a dead node and tells their games in one step, so once b
// hears the sentinel away, the other nodes' own counts are final.
func TestClusterFencedNodeLeavesNoGhost(t *testing.T) {
	_, nodes := startCluster(t, 3, nil)
	enginesUp(t, nodes...)
	game := gameID(102)
	f1 := dial(t, nodes[0].Addr)
	f2 := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	c := dial(t, nodes[2].Addr)
	epoch := f1.join(game).field("epoch")
	f2.join(game)
	b.join(game)
	last := c.join(game).offset()

	if err := nodes[0].Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nodes[0].Cmd.Process.Signal(syscall.SIGCONT) })
	away := map[any]bool{}
	for len(away) < 2 {
		fs := framesUntil(b, nodeTTL+slack, "the frozen node's players away", func(f *frame) bool {
			return f.Type == "presence" && f.field("status") == "away" && (f.field("sid") == f1.sid || f.field("sid") == f2.sid)
		})
		away[fs[len(fs)-1].field("sid")] = true
	}
	f1.roll(game, "ghost-1")
	f2.roll(game, "ghost-2")
	if err := nodes[0].Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*client{f1, f2} {
		if code, fs := closeOf(x, nodeTTL+slack); code != websocket.StatusGoingAway {
			t.Fatalf("the fenced node's player: close %d, frames:\n%s", code, rawFrames(fs))
		}
	}
	resumeAt(t, nodes[1].Addr, f1, game, epoch, last)
	resumeAt(t, nodes[2].Addr, f2, game, epoch, last)
	eventually(t, 3*nodeTTL+slack, "the fenced node's engine up again", func() bool {
		return healthOf(t, nodes[0], "node")["engine"] == "up"
	})
	s := dial(t, nodes[0].Addr)
	s.join(game)
	framesUntil(b, 10*time.Second, "the sentinel's join at b", func(f *frame) bool {
		return f.Type == "presence" && f.field("sid") == s.sid && f.field("status") == "joined"
	})

	if err := nodes[0].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	fs := framesUntil(b, nodeTTL+slack, "the sentinel away at b", func(f *frame) bool {
		return f.Type == "presence" && f.field("sid") == s.sid && f.field("status") == "away"
	})
	total, aways := 0.0, 0.0
	for _, n := range nodes[1:] {
		h := healthOf(t, n, "node")
		total += h["total_sessions"].(float64)
		aways += h["away_sessions"].(float64)
	}
	if total != 5 || aways != 1 {
		more, _ := framesUntilOrEnd(b, 2*time.Second, func(f *frame) bool {
			sid := f.field("sid")
			return f.Type == "presence" && (sid == f1.sid || sid == f2.sid)
		})
		t.Fatalf("after the fenced node died for good, n2 and n3 hold %v sessions, %v away; want 5, the sentinel alone away.\n"+
			"f1 is %s (on n2), f2 is %s (on n3); b heard meanwhile:\n%s%s", total, aways, f1.sid, f2.sid, rawFrames(fs), rawFrames(more))
	}
}

// enginesUp waits until every node of nodes says its engine is up: Redis
// answers it and its mailbox is subscribed, so the events it sequences from
// then on reach the other nodes. (A node serves its own players alone
// until then: see TestClusterNewNodeServesTheClusterAtOnce.)
func enginesUp(t *testing.T, nodes ...*servertest.Proc) {
	t.Helper()
	for _, n := range nodes {
		eventually(t, 10*time.Second, "engine up on "+n.Addr, func() bool { return engineIsUp(t, n) })
	}
}

// engineIsUp reports whether n's own health says its engine is up.
func engineIsUp(t *testing.T, n *servertest.Proc) bool {
	t.Helper()
	return healthOf(t, n, "node")["engine"] == "up"
}

// framesUntil reads c's frames until one that match accepts, and returns every
// frame read, the match last. It fails the test after d, or when the
// connection ends first.
func framesUntil(c *client, d time.Duration, what string, match func(*frame) bool) []*frame {
	c.t.Helper()
	deadline := time.After(d)
	var got []*frame
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.mu.Lock()
				err := c.err
				c.mu.Unlock()
				c.t.Fatalf("%s: the connection ended first (%v); frames:\n%s", what, err, rawFrames(got))
			}
			got = append(got, f)
			if match(f) {
				return got
			}
		case <-deadline:
			c.t.Fatalf("%s: not within %s; frames:\n%s", what, d, rawFrames(got))
		}
	}
}

// closeOf waits up to d for c's connection to end, and returns its close
// code (-1 for none: no close frame) and every frame read meanwhile.
func closeOf(c *client, d time.Duration) (websocket.StatusCode, []*frame) {
	c.t.Helper()
	deadline := time.After(d)
	var got []*frame
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.mu.Lock()
				err := c.err
				c.mu.Unlock()
				return websocket.CloseStatus(err), got
			}
			got = append(got, f)
		case <-deadline:
			c.t.Fatalf("connection still open after %s; frames:\n%s", d, rawFrames(got))
		}
	}
}

// resumeAt opens a client on addr and resumes old's session with its
// position in game; it returns the new client and its resumed frame.
func resumeAt(t *testing.T, addr string, old *client, game string, epoch any, offset uint64) (*client, *frame) {
	t.Helper()
	n := dial(t, addr)
	n.send("resume", "r-"+old.sid, map[string]any{"resume_token": old.token,
		"games": map[string]any{game: map[string]any{"epoch": epoch, "offset": offset}}})
	fs := framesUntil(n, 5*time.Second, "the resume's answer", func(f *frame) bool { return f.Type == "resumed" || f.Type == "error" })
	f := fs[len(fs)-1]
	if f.Type != "resumed" {
		t.Fatalf("resume of session %s on %s refused: %s", old.sid, addr, f.raw)
	}
	n.sid = old.sid
	n.token = old.token
	return n, f
}

// resumedEntry returns game's entry in a resumed frame, nil when absent.
func resumedEntry(r *frame, game string) map[string]any {
	games, _ := r.field("games").([]any)
	for _, g := range games {
		if m, _ := g.(map[string]any); m != nil && m["game_id"] == game {
			return m
		}
	}
	return nil
}

// sendLoose writes one client frame and returns the error instead of failing
// the test: for a frame that races the connection's end.
func sendLoose(c *client, typ, id string, data any) error {
	b, _ := json.Marshal(map[string]any{"type": typ, "id": id, "data": data})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// rawFrames lists frames for a failure message, one a line.
func rawFrames(fs []*frame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.raw)
		b.WriteByte('\n')
	}
	return b.String()
}
