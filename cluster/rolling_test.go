package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"dugout/internal/servertest"
)

// A rolling restart under play: six players spread over three nodes in one
// game, each rolling dice with an id, one roll in flight at a time. The
// nodes are restarted one at a time with SIGTERM, each replaced by a new
// process with the same NODE_ID as soon as the old one has exited, as a
// service manager does. Every player whose node stops gets a goodbye that
// says resumable, with a retry_after_ms; after that delay it reconnects to
// a live node and resumes with the last (epoch, offset) it processed.
// Checked for every player, across all its reconnects:
//   - every resume succeeds, in the same epoch, recovered (no session lost);
//   - it processes every game event exactly once, in order: its offsets are
//     consecutive, the replayed ones included (contract v2 §4: the replay
//     holds every event after its offset, its own away among them; its own
//     back is not sent, and the resumed offset includes it);
//   - an offset names the same event for every player;
//   - each roll runs exactly once across the nodes: a roll whose answer the
//     restart swallowed is retried with its id after the resume and answered
//     dup if (and only if) it ran, and the last answered roll, retried after
//     each resume, is answered dup at its offset.
func TestClusterRollingRestart(t *testing.T) {
	rollingRestart(t, gameID(131), "300ms", false)
}

// The same rolling restart, each replacement started only once every player
// of the node it replaces has resumed elsewhere, and the players coming
// back at once (SHUTDOWN_RETRY_SPREAD=1ms): their resumes reach the other
// nodes while the stopping node is still handing its sessions over.
func TestClusterRollingRestartHandOverFirst(t *testing.T) {
	rollingRestart(t, gameID(132), "1ms", true)
}

// A node stopped with SIGTERM and replaced at once by a process with the
// same NODE_ID (a service manager's restart) must not make the sessions it
// handed over unresumable: the predecessor's client resumes on the other
// node. NODE_TTL is as in production (15 s, the default), so the other
// node's reaper, which runs every NODE_TTL/3, almost never claims the
// stopped node's sessions before the replacement registers.
func TestClusterReplacementKeepsHandedOverSessions(t *testing.T) {
	env := map[string]string{"NODE_TTL": "15s"}
	r, nodes := startCluster(t, 2, env)
	enginesUp(t, nodes...)
	game := gameID(133)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	epoch := a.join(game).field("epoch")
	b.join(game)
	seen := a.presence(b.sid, "joined").offset()

	if err := nodes[0].Stop(10 * time.Second); err != nil {
		t.Fatalf("n1 did not stop cleanly: %v", err)
	}
	if bye := a.expect("goodbye", nil); bye.field("resumable") != true {
		t.Fatalf("goodbye %s, want resumable", bye.raw)
	}
	b.presence(a.sid, "away")
	startNode(t, r.URL(), "n1", env)
	_, res := resumeAt(t, nodes[1].Addr, a, game, epoch, seen)
	if g := resumedEntry(res, game); res.field("sid") != a.sid || g == nil || g["recovered"] != true {
		t.Fatalf("resume on n2 after n1 was replaced: %s", res.raw)
	}
	b.presence(a.sid, "back")
}

// rollingRestart runs the rolling restart of TestClusterRollingRestart on
// game, with SHUTDOWN_RETRY_SPREAD spread; handOverFirst holds each
// replacement until the node's players have all resumed elsewhere.
func rollingRestart(t *testing.T, game, spread string, handOverFirst bool) {
	env := map[string]string{"SHUTDOWN_RETRY_SPREAD": spread}
	r, nodes := startCluster(t, 3, env)
	enginesUp(t, nodes...)
	run := &rollingRun{t: t, game: game, nodes: nodes, live: []bool{true, true, true}, ledger: map[uint64]gameEvent{}}
	for i := range 6 {
		n := i % 3
		c := dial(t, nodes[n].Addr)
		j := c.join(run.game)
		if run.epoch == nil {
			run.epoch = j.field("epoch")
		} else if j.field("epoch") != run.epoch {
			t.Fatalf("player %d joined epoch %v, want %v", i, j.field("epoch"), run.epoch)
		}
		run.players = append(run.players, &rollPlayer{idx: i, c: c, sid: c.sid, token: c.token, node: n, last: j.offset(),
			tags: map[string]string{}, sequenced: map[string]uint64{}})
	}
	deadline := time.Now().Add(90 * time.Second)
	run.rolling = true

	run.playUntil(deadline, "warm-up", func() bool { return run.everyoneAnswered(3) })
	for i := range nodes {
		stopped := make(chan error, 1)
		run.live[i] = false
		p := run.nodes[i]
		go func() { stopped <- p.Stop(15 * time.Second) }()
		var stopErr error
		done := false
		run.playUntil(deadline, fmt.Sprintf("n%d stopped", i+1), func() bool {
			select {
			case stopErr = <-stopped:
				done = true
			default:
			}
			return done
		})
		if stopErr != nil {
			t.Fatalf("n%d did not stop cleanly: %v", i+1, stopErr)
		}
		if handOverFirst {
			run.playUntil(deadline, fmt.Sprintf("n%d's players resumed elsewhere", i+1), func() bool {
				for _, pl := range run.players {
					if pl.node == i || pl.leaving || pl.resuming {
						return false
					}
				}
				return true
			})
		}
		run.nodes[i] = startNode(t, r.URL(), fmt.Sprintf("n%d", i+1), env)
		var polled time.Time
		run.playUntil(deadline, fmt.Sprintf("the new n%d's engine up", i+1), func() bool {
			if time.Since(polled) < 100*time.Millisecond {
				return false
			}
			polled = time.Now()
			return engineIsUp(t, run.nodes[i])
		})
		run.live[i] = true
		for _, pl := range run.players {
			pl.answeredMark = pl.answered
		}
		run.playUntil(deadline, fmt.Sprintf("everyone back and playing after n%d's restart", i+1), func() bool {
			return run.everyoneAnswered(2)
		})
	}
	moved := 0
	for _, pl := range run.players {
		moved += pl.resumes
	}
	if moved < 6 {
		t.Fatalf("%d resumes in all: every player's node was restarted, so each must have resumed at least once", moved)
	}

	// Quiet down: no new rolls; every roll answered; then a last roll that
	// every player must reach.
	run.rolling = false
	run.playUntil(deadline, "every roll answered", func() bool {
		for _, pl := range run.players {
			if pl.pending != "" || pl.resuming || pl.leaving {
				return false
			}
		}
		return true
	})
	last := run.players[0]
	last.seq++
	last.roll(run)
	run.playUntil(deadline, "the last roll answered", func() bool { return last.pending == "" })
	end := last.sequenced[last.lastAnswered]
	run.playUntil(deadline, "every player at the last roll", func() bool {
		for _, pl := range run.players {
			if pl.last < end {
				return false
			}
		}
		return true
	})

	// Every roll ran once: each tag in the game's history once, and every
	// answered roll's tag among them.
	seen := map[string]uint64{}
	for off, e := range run.ledger {
		if e.typ != "dice_rolled" {
			continue
		}
		if prev, ok := seen[e.tag]; ok {
			t.Errorf("one roll ran twice: dice %s at offsets %d and %d", e.tag, prev, off)
		}
		seen[e.tag] = off
	}
	for _, pl := range run.players {
		for id, off := range pl.sequenced {
			if e := run.ledger[off]; e.typ != "dice_rolled" || e.sid != pl.sid || e.tag != pl.tags[id] {
				t.Errorf("player %d's roll %s answered at offset %d, where the game has %v", pl.idx, id, off, e)
			}
		}
		t.Logf("player %d: %d rolls answered, %d resumes, last offset %d", pl.idx, pl.answered, pl.resumes, pl.last)
	}
}

// rollingRun is the state of TestClusterRollingRestart, driven from the
// test goroutine alone.
type rollingRun struct {
	t       *testing.T
	game    string
	epoch   any
	nodes   []*servertest.Proc
	live    []bool // nodes a player may reconnect to
	players []*rollPlayer
	ledger  map[uint64]gameEvent // the game event at each offset, as the first player to process it saw it
	rolling bool                 // players roll while set
	turn    int                  // round robin over the live nodes for reconnects
}

// rollPlayer is one client of the game across its reconnects.
type rollPlayer struct {
	idx        int
	c          *client
	sid, token string
	node       int
	last       uint64 // the last offset processed
	backAt     uint64 // after a resume: its own back, which it is not sent

	leaving  bool      // got a goodbye; reconnects at retryAt once closed
	retryAt  time.Time // when it may reconnect
	resuming bool      // sent resume, no resumed yet
	resumes  int

	seq          int
	pending      string            // the roll in flight: sent, not answered
	nextRoll     time.Time         // no new roll before this
	tags         map[string]string // roll id -> its dice, as event.tag shows them
	dice         map[string][]int  // roll id -> the dice it asked for
	sequenced    map[string]uint64 // roll id -> the offset the game gave it
	lastAnswered string
	answered     int
	answeredMark int // answered at the last restart
	recent       []string
}

// everyoneAnswered reports whether each player had n more rolls answered
// since the last restart and is connected.
func (run *rollingRun) everyoneAnswered(n int) bool {
	for _, pl := range run.players {
		if pl.answered-pl.answeredMark < n || pl.leaving || pl.resuming {
			return false
		}
	}
	return true
}

// playUntil runs the players until cond holds: each reads its frames,
// reconnects when its delay is over, and rolls when it has nothing in
// flight. It fails the test at deadline.
func (run *rollingRun) playUntil(deadline time.Time, what string, cond func() bool) {
	run.t.Helper()
	for !cond() {
		if time.Now().After(deadline) {
			run.fail(nil, "%s: not by the deadline", what)
		}
		busy := false
		for _, pl := range run.players {
			busy = run.serve(pl) || busy
		}
		if !busy {
			time.Sleep(5 * time.Millisecond) // polling six clients, not waiting for anything to settle
		}
	}
}

// serve handles what p has to do now and reports whether it did anything.
func (run *rollingRun) serve(p *rollPlayer) bool {
	run.t.Helper()
	did := false
	closed := false
drain:
	for {
		select {
		case f, ok := <-p.c.frames:
			if !ok {
				closed = true
				break drain
			}
			did = true
			run.handle(p, f)
		default:
			break drain
		}
	}
	now := time.Now()
	switch {
	case closed && !p.leaving:
		p.c.mu.Lock()
		err := p.c.err
		p.c.mu.Unlock()
		run.fail(p, "connection ended without a goodbye: %v", err)
	case closed && now.After(p.retryAt):
		run.reconnect(p)
		return true
	case !p.leaving && !p.resuming && p.pending == "" && run.rolling && now.After(p.nextRoll):
		p.seq++
		p.roll(run)
		return true
	}
	return did
}

// roll sends p's next roll, tagged by its dice so that any player can tell
// whose roll, and which, an event is.
func (p *rollPlayer) roll(run *rollingRun) {
	id := fmt.Sprintf("p%d-%d", p.idx, p.seq)
	dice := []int{2 + p.idx, 2 + p.seq/99, 2 + p.seq%99}
	if p.dice == nil {
		p.dice = map[string][]int{}
	}
	p.dice[id] = dice
	p.tags[id] = fmt.Sprint(dice)
	p.pending = id
	p.send(run, id)
}

// send writes roll id, as first sent or again; a write that races the
// connection's end is let go: the roll is retried after the resume.
func (p *rollPlayer) send(run *rollingRun, id string) {
	err := sendLoose(p.c, "roll_dice", id, map[string]any{"game_id": run.game, "dice": p.dice[id]})
	p.note(fmt.Sprintf("-> roll %s (%v)", id, err))
}

// note keeps the last few things p did or got, for a failure message.
func (p *rollPlayer) note(s string) {
	p.recent = append(p.recent, s)
	if len(p.recent) > 40 {
		p.recent = p.recent[1:]
	}
}

// handle processes one frame of p.
func (run *rollingRun) handle(p *rollPlayer, f *frame) {
	run.t.Helper()
	p.note(f.raw)
	switch {
	case f.Type == "goodbye":
		if f.field("resumable") != true || f.field("code") != 1001.0 || f.field("retry_after_ms") == nil {
			run.fail(p, "goodbye %s, want 1001, resumable, with a retry delay", f.raw)
		}
		p.leaving = true
		p.retryAt = time.Now().Add(time.Duration(f.field("retry_after_ms").(float64)) * time.Millisecond)
		return
	case f.Type == "resumed":
		run.resumed(p, f)
		return
	case f.Type == "error":
		run.fail(p, "error frame: %s", f.raw)
	case f.offset() == 0 || f.Type == "game_joined":
		return
	}
	if f.Dup {
		run.dup(p, f)
		return
	}
	if f.offset() != p.last+1 {
		run.fail(p, "processed offset %d after %d (own back at %d): %s", f.offset(), p.last, p.backAt, f.raw)
	}
	p.last = f.offset()
	e := gameEventOf(f)
	if old, ok := run.ledger[p.last]; ok && old != e {
		run.fail(p, "offset %d is %v to another player, %v to this one", p.last, old, e)
	}
	run.ledger[p.last] = e
	if p.backAt != 0 && p.last+1 == p.backAt {
		p.last, p.backAt = p.backAt, 0
	}
	if f.Type != "dice_rolled" || f.field("sid") != p.sid {
		return
	}
	// One of its own rolls: answered (with its id) or replayed from the
	// history (without: its answer was lost to the restart).
	id := f.ID
	if id == "" {
		for k, dice := range p.dice {
			if fmt.Sprint(dice) == fmt.Sprint(f.field("dice")) {
				id = k
			}
		}
	}
	if _, twice := p.sequenced[id]; twice {
		run.fail(p, "its roll %s ran twice: at %d, and again at %d", id, p.sequenced[id], p.last)
	}
	p.sequenced[id] = p.last
	if f.ID != "" && f.ID == p.pending {
		p.answer(id)
	}
}

// answer records that p's pending roll id was answered.
func (p *rollPlayer) answer(id string) {
	p.pending, p.lastAnswered = "", id
	p.answered++
	p.nextRoll = time.Now().Add(100 * time.Millisecond)
}

// dup checks a dup answer: it names the offset the roll ran at.
func (run *rollingRun) dup(p *rollPlayer, f *frame) {
	run.t.Helper()
	at, ran := p.sequenced[f.ID]
	if !ran {
		run.fail(p, "roll %s answered dup (offset %d), but it never ran: the game has no such roll", f.ID, f.offset())
	}
	if f.offset() != at {
		run.fail(p, "roll %s answered dup at offset %d, but it ran at %d", f.ID, f.offset(), at)
	}
	if f.ID == p.pending {
		p.answer(f.ID)
	}
}

// resumed checks p's resume and sets its position; then p retries its last
// answered roll (which must be dup) and its unanswered one.
func (run *rollingRun) resumed(p *rollPlayer, f *frame) {
	run.t.Helper()
	if !p.resuming {
		run.fail(p, "resumed without a resume: %s", f.raw)
	}
	p.resuming = false
	p.resumes++
	g := resumedEntry(f, run.game)
	if f.field("sid") != p.sid || g == nil || g["recovered"] != true || g["epoch"] != run.epoch {
		run.fail(p, "resumed %s, want its session, the game recovered in epoch %v", f.raw, run.epoch)
	}
	at := uint64(g["offset"].(float64))
	if at <= p.last {
		run.fail(p, "resumed at offset %d, not past its own position %d (its own back is after it)", at, p.last)
	}
	p.backAt = at
	if p.last+1 == at {
		p.last, p.backAt = at, 0
	}
	if p.lastAnswered != "" {
		p.send(run, p.lastAnswered)
	}
	if p.pending != "" {
		p.send(run, p.pending)
	}
}

// reconnect opens a connection for p on a live node other than its own
// (which is the one stopping), and resumes its session there.
func (run *rollingRun) reconnect(p *rollPlayer) {
	run.t.Helper()
	n := -1
	for range run.nodes {
		run.turn++
		if i := run.turn % len(run.nodes); run.live[i] && i != p.node {
			n = i
			break
		}
	}
	if n < 0 {
		run.fail(p, "no live node to reconnect to")
	}
	c := dial(run.t, run.nodes[n].Addr)
	p.note(fmt.Sprintf("reconnected to n%d as %s, resuming from %d", n+1, c.sid, p.last))
	p.c, p.node, p.leaving, p.resuming = c, n, false, true
	err := sendLoose(c, "resume", "r", map[string]any{"resume_token": p.token,
		"games": map[string]any{run.game: map[string]any{"epoch": run.epoch, "offset": p.last}}})
	if err != nil {
		run.fail(p, "resume: %v", err)
	}
}

// fail ends the test with what p (nil for none) last did and got.
func (run *rollingRun) fail(p *rollPlayer, format string, args ...any) {
	run.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if p != nil {
		msg = fmt.Sprintf("player %d (sid %s, on n%d): %s\nits last frames:\n%s", p.idx, p.sid, p.node+1, msg, strings.Join(p.recent, "\n"))
	}
	run.t.Fatal(msg)
}

// A session resumed onto a node takes nothing from that node's other
// members: the node reads the session's games from Redis when the session
// moves to it, and the events sequenced meanwhile (between the move and
// that read) must still reach its members there. Here one player rolls in
// bursts on n1 while a session is resumed back and forth between n2 and
// n3, forty times; a watcher seated on n3 must process every event once, in
// order: its offsets consecutive.
func TestClusterResumeOntoNodeKeepsItsMembersWhole(t *testing.T) {
	_, nodes := startCluster(t, 3, map[string]string{"RATE_LIMIT": "2000", "RATE_BURST": "2000"})
	enginesUp(t, nodes...)
	game := gameID(134)
	fl := dial(t, nodes[0].Addr)
	m := dial(t, nodes[2].Addr)
	x := dial(t, nodes[1].Addr)
	fl.join(game)
	last := m.join(game).offset()
	x.join(game)
	token := x.token
	var gaps []string
	watch := func() {
		for {
			select {
			case f, ok := <-m.frames:
				if !ok {
					t.Fatalf("the watcher's connection ended")
				}
				if off := f.offset(); off > 0 {
					if off != last+1 {
						gaps = append(gaps, fmt.Sprintf("offset %d after %d: %s", off, last, f.raw))
					}
					last = off
				}
			default:
				return
			}
		}
	}
	drain := func(c *client) {
		for {
			select {
			case _, ok := <-c.frames:
				if !ok {
					return
				}
			default:
				return
			}
		}
	}
	for i := range 40 {
		for range 20 {
			fl.roll(game, "")
		}
		to := nodes[1+i%2]
		next := dial(t, to.Addr)
		next.send("resume", "r", map[string]any{"resume_token": token})
		if f := framesUntil(next, 5*time.Second, "resumed", func(f *frame) bool { return f.Type == "resumed" || f.Type == "error" }); f[len(f)-1].Type != "resumed" {
			t.Fatalf("resume %d: %s", i, f[len(f)-1].raw)
		}
		watch()
		drain(fl)
	}
	fl.roll(game, "end")
	end := fl.expect("dice_rolled", func(f *frame) bool { return f.ID == "end" }).offset()
	eventually(t, 10*time.Second, "the watcher at the last roll", func() bool { watch(); return last >= end })
	if len(gaps) > 0 {
		t.Fatalf("the watcher on n3 missed events while sessions were resumed onto its node (%d gaps):\n%s", len(gaps), strings.Join(gaps, "\n"))
	}
}

// A node that accepts players serves them as members of the cluster at
// once: a player joining a game on a node just started (a replacement in a
// rolling restart, say, as soon as it is listening) is heard by the game's
// members on the other nodes, and hears them. NODE_TTL is long (12 s, as in
// production; the default is 15 s), so a node that waited for a later
// heartbeat to start sequencing its events in Redis would show.
func TestClusterNewNodeServesTheClusterAtOnce(t *testing.T) {
	env := map[string]string{"NODE_TTL": "12s"}
	r, nodes := startCluster(t, 1, env)
	enginesUp(t, nodes...)
	game := gameID(135)
	a := dial(t, nodes[0].Addr)
	a.join(game)

	n2 := startNode(t, r.URL(), "n2", env)
	b := dial(t, n2.Addr)
	joined := b.join(game)
	if members, _ := joined.field("members").([]any); len(members) != 2 {
		t.Errorf("game_joined on the new node lists %d members, want 2 (a is on n1): %s", len(members), joined.raw)
	}
	a.expectWithin(2*time.Second, "presence", func(f *frame) bool { return f.field("sid") == b.sid && f.field("status") == "joined" })
	b.roll(game, "")
	a.expectWithin(2*time.Second, "dice_rolled", func(f *frame) bool { return f.field("sid") == b.sid })
}
