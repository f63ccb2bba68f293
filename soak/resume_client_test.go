package soak

// The resume soak's client: a peer that keeps its resume token and its
// (epoch, offset) position, processes its game's events by offset, and is
// cut and resumed by its driver goroutine. See resume_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
)

// rFrame is every server frame the resume soak reads, with protocol 2's
// fields: offsets, epochs, the resume token, the resumed reply, dup.
type rFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Dup  bool   `json:"dup"`
	Data struct {
		SID         string    `json:"sid"`
		GameID      string    `json:"game_id"`
		Status      string    `json:"status"`
		Reason      string    `json:"reason"`
		Code        frameCode `json:"code"`
		Message     string    `json:"message"`
		Offset      uint64    `json:"offset"`
		Epoch       string    `json:"epoch"`
		ResumeToken string    `json:"resume_token"`
		AwayMS      int64     `json:"away_ms"`
		Decision    *decision `json:"decision"`
		Games       []struct {
			GameID    string `json:"game_id"`
			Epoch     string `json:"epoch"`
			Offset    uint64 `json:"offset"`
			Recovered bool   `json:"recovered"`
		} `json:"games"`
	} `json:"data"`
}

// Event kinds, as a peer records what it processed at each offset.
const (
	evJoined uint8 = iota + 1
	evAway
	evBack
	evLeft
	evPresence // any other status
	evDefensive
	evOffensive
	evOther // dice_rolled, game_updated: this test sends none
)

// evRec is one event a peer processed: its offset, what it was, whose it
// was (the sender's index among the peers; -1 for a stranger) and, for a
// decision, its seq. Every member of a game must record the same evRec at
// an offset.
type evRec struct {
	off  uint64
	kind uint8
	who  int32
	seq  int32
}

func (r evRec) String() string {
	names := [...]string{"?", "joined", "away", "back", "left", "presence", "defensive", "offensive", "other"}
	return fmt.Sprintf("%d:%s(peer %d seq %d)", r.off, names[min(int(r.kind), len(names)-1)], r.who, r.seq)
}

// rconn is one connection of a peer.
type rconn struct {
	ws   *websocket.Conn
	done chan struct{} // closed when its reader has returned
	err  error         // why the reader stopped; read after done

	// A half-open cut abandons the connection without closing it: from then
	// on its reader reads on but processes nothing, as if the network had
	// stopped carrying its frames, and the peer's state is the driver's.
	mu        sync.Mutex
	abandoned bool
}

// abandon stops c's reader from processing anything more; when it returns,
// no frame is being processed.
func (c *rconn) abandon() {
	c.mu.Lock()
	c.abandoned = true
	c.mu.Unlock()
}

// resumePeer is one soak client across all its connections. Fields are
// owned by whoever the comment says; the reader of one connection has
// returned (done), or been abandoned, before the driver touches them and
// before the next connection's reader starts, so they pass between
// goroutines without a lock.
type resumePeer struct {
	idx   int
	game  string
	sid   string // the session's, kept across resumes
	token string
	sids  map[string]int32 // every peer's sid to its index; read-only once readers run

	// driver-owned
	conn      *rconn
	sent      int          // decisions sent: seqs 1..sent
	sentA     atomic.Int64 // sent, for the reader's checks
	decisions []decision   // what was sent, by seq-1, so a retry is byte for byte the same
	resumes   int
	resumeLat []time.Duration // resume frame written to resumed read
	reconnect []time.Duration // dial begun to resumed read
	retried   int             // decisions sent again after a resume
	resyncs   int             // resumed with recovered:false
	midSend   int             // cuts right after a send
	halfOpen  int             // cuts that left the old connection open until the resume
	lateSends int             // decisions written on a half-open connection after the resume
	driverErr error
	joined    *countdown // the reader counts it down at game_joined

	// reader-owned (the driver between connections)
	epoch      string
	pos        uint64 // the offset processed last
	resumeAt   uint64 // the offset a resume named, until pos passes it: its own back event's, when it was away
	recs       []evRec
	holes      []uint64    // offsets skipped as its own back event (checked against the others afterwards)
	excused    [][2]uint64 // offsets given up by a recovered:false resync, inclusive
	ownOff     map[int]uint64
	ids        map[string]int   // ids on its own live copies
	dups       int              // dup:true replies
	skipped    int              // events at or below its position
	events     int              // events processed
	lastSeq    map[int32]int32  // per sender, the seq of its last decision processed
	lastOff    map[int32]uint64 // and its offset
	joinedOnce bool

	at       atomic.Uint64 // effective position (pos, or resumeAt when only its own back event is missing)
	echoed   atomic.Int64  // highest own seq the server has answered (its event, or a dup)
	progress chan struct{} // a non-blocking nudge per own answer

	mu       sync.Mutex
	problems []string
	nProblem int
}

func newResumePeer(idx int, game string) *resumePeer {
	return &resumePeer{idx: idx, game: game, ownOff: map[int]uint64{}, ids: map[string]int{},
		lastSeq: map[int32]int32{}, lastOff: map[int32]uint64{}, progress: make(chan struct{}, 1)}
}

// problem records a failure for the test goroutine to report.
func (p *resumePeer) problem(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nProblem++
	if len(p.problems) < 5 {
		p.problems = append(p.problems, fmt.Sprintf(format, args...))
	}
}

// dialSession opens a connection and reads its session frame within timeout.
func dialSession(ctx context.Context, p *servertest.Proc, timeout time.Duration) (*websocket.Conn, *rFrame, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, p.WSURL(), &websocket.DialOptions{HTTPClient: httpClient})
	if err != nil {
		if resp != nil {
			return nil, nil, fmt.Errorf("dial: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadLimit(1 << 20)
	f, err := readRFrame(ctx, ws)
	if err != nil {
		_ = ws.CloseNow()
		return nil, nil, fmt.Errorf("reading the session frame: %w", err)
	}
	if f.Type != "session" || f.Data.SID == "" || f.Data.ResumeToken == "" {
		_ = ws.CloseNow()
		return nil, nil, fmt.Errorf("first frame is %q (sid %q), not a session frame with a resume token", f.Type, f.Data.SID)
	}
	return ws, f, nil
}

// readRFrame reads and decodes one frame.
func readRFrame(ctx context.Context, ws *websocket.Conn) (*rFrame, error) {
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("a %v message; dugout sends text only", typ)
	}
	f := new(rFrame)
	if err := json.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("undecodable frame %q: %w", b, err)
	}
	return f, nil
}

// sendFrame writes one frame within 5 s.
func sendFrame(ws *websocket.Conn, typ, id string, data any) error {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
		Data any    `json:"data,omitempty"`
	}{typ, id, data})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return ws.Write(ctx, websocket.MessageText, b)
}

// submitDecision sends decision d (seq d.Seq) with the id d<seq>,
// alternating the two decision types as client.submit does.
func submitDecision(ws *websocket.Conn, game string, d decision) error {
	typ := "submit_defensive_decision"
	if d.Seq%2 == 0 {
		typ = "submit_offensive_decision"
	}
	return sendFrame(ws, typ, "d"+strconv.Itoa(d.Seq), map[string]any{"game_id": game, "decision": d})
}

// serve starts the reader of ws and makes it the peer's connection.
func (p *resumePeer) serve(ws *websocket.Conn) {
	c := &rconn{ws: ws, done: make(chan struct{})}
	p.conn = c
	go func() {
		defer close(c.done)
		for {
			f, err := readRFrame(context.Background(), ws)
			if err != nil {
				c.err = err
				return
			}
			c.mu.Lock()
			if !c.abandoned {
				p.handle(f)
			}
			c.mu.Unlock()
		}
	}()
}

// settle publishes the effective position: pos, or the offset a resume
// named when all that is missing below it is that one offset (its own back
// event, which the server sends only to the others).
func (p *resumePeer) settle() {
	if p.resumeAt != 0 && p.pos+1 == p.resumeAt {
		p.at.Store(p.resumeAt)
		return
	}
	p.at.Store(p.pos)
}

// answered notes that the server has answered own seq.
func (p *resumePeer) answered(seq int) {
	if int64(seq) > p.echoed.Load() {
		p.echoed.Store(int64(seq))
	}
	select {
	case p.progress <- struct{}{}:
	default:
	}
}

// excusedAt reports whether off lies in a range a resync gave up.
func (p *resumePeer) excusedAt(off uint64) bool {
	for _, r := range p.excused {
		if off >= r[0] && off <= r[1] {
			return true
		}
	}
	return false
}

// resyncedSince reports whether a resync gave up offsets after off: a
// sender's seqs may then jump.
func (p *resumePeer) resyncedSince(off uint64) bool {
	for _, r := range p.excused {
		if r[1] > off {
			return true
		}
	}
	return false
}

// handle processes one frame. Runs on the reader goroutine.
func (p *resumePeer) handle(f *rFrame) {
	switch f.Type {
	case "presence", "defensive_decision", "offensive_decision", "dice_rolled", "game_updated":
	case "game_joined":
		if f.Data.GameID != p.game || f.Data.Epoch == "" || f.Data.Offset == 0 {
			p.problem("game_joined %+v for game %s", f.Data, p.game)
			return
		}
		p.epoch, p.pos = f.Data.Epoch, f.Data.Offset
		p.settle()
		if !p.joinedOnce {
			p.joinedOnce = true
			p.joined.done()
		}
		return
	case "error", "goodbye":
		p.problem("%s frame (id %q): code %s reason %q: %s", f.Type, f.ID, f.Data.Code, f.Data.Reason, f.Data.Message)
		return
	case "resumed":
		p.problem("a resumed frame the driver did not ask for")
		return
	default:
		return // heartbeat_ack, session_expiring: nothing to do with the games
	}

	off := f.Data.Offset
	if f.Data.GameID != p.game || off == 0 {
		p.problem("%s event for game %q at offset %d; this peer is in %s", f.Type, f.Data.GameID, off, p.game)
		return
	}
	if f.Dup { // a retry's remembered reply: never an event to process
		p.dups++
		d := f.Data.Decision
		switch {
		case f.Data.SID != p.sid || d == nil || f.ID != "d"+strconv.Itoa(d.Seq):
			p.problem("dup reply %s id %q sid %s is not one of its own decisions", f.Type, f.ID, f.Data.SID)
		case d.Seq > p.sentSoFar():
			p.problem("dup reply for seq %d, never sent", d.Seq)
		case p.ownOff[d.Seq] != off && !p.excusedAt(off):
			p.problem("dup reply for seq %d at offset %d; it was processed at offset %d", d.Seq, off, p.ownOff[d.Seq])
		case off > p.pos:
			p.problem("dup reply for seq %d at offset %d, ahead of its position %d", d.Seq, off, p.pos)
		default:
			p.answered(d.Seq)
		}
		return
	}
	if off <= p.pos {
		p.skipped++
		return
	}
	if off != p.pos+1 {
		if p.resumeAt != 0 && p.pos+1 == p.resumeAt && off == p.resumeAt+1 {
			p.holes = append(p.holes, p.resumeAt) // its own back event, sent only to the others
		} else {
			p.problem("gap: event %s at offset %d after %d (the last resume named %d)", f.Type, off, p.pos, p.resumeAt)
		}
	}
	p.pos = off
	if p.pos >= p.resumeAt {
		p.resumeAt = 0
	}
	p.events++

	rec := evRec{off: off, who: -1}
	if i, ok := p.sids[f.Data.SID]; ok {
		rec.who = i
	}
	switch f.Type {
	case "presence":
		rec.kind = map[string]uint8{"joined": evJoined, "away": evAway, "back": evBack, "left": evLeft}[f.Data.Status]
		if rec.kind == 0 {
			rec.kind = evPresence
		}
	case "defensive_decision", "offensive_decision":
		rec.kind = evDefensive
		if f.Type == "offensive_decision" {
			rec.kind = evOffensive
		}
		d := f.Data.Decision
		if d == nil {
			p.problem("%s at offset %d without a decision", f.Type, off)
			break
		}
		rec.seq = int32(d.Seq)
		if rec.seq != p.lastSeq[rec.who]+1 && !p.resyncedSince(p.lastOff[rec.who]) {
			p.problem("offset %d: seq %d of peer %d after its seq %d", off, d.Seq, rec.who, p.lastSeq[rec.who])
		}
		p.lastSeq[rec.who], p.lastOff[rec.who] = rec.seq, off
		if f.Data.SID == p.sid {
			if prev, ok := p.ownOff[d.Seq]; ok {
				p.problem("own seq %d processed twice: offsets %d and %d", d.Seq, prev, off)
			}
			p.ownOff[d.Seq] = off
			if f.ID != "" { // the live copy carries the id; a replayed one does not
				if f.ID != "d"+strconv.Itoa(d.Seq) {
					p.problem("own seq %d relayed with id %q", d.Seq, f.ID)
				}
				if p.ids[f.ID]++; p.ids[f.ID] > 1 {
					p.problem("id %s relayed %d times", f.ID, p.ids[f.ID])
				}
			}
			p.answered(d.Seq)
		} else if f.ID != "" {
			p.problem("another peer's decision relayed with id %q", f.ID)
		}
	default:
		rec.kind = evOther
	}
	p.recs = append(p.recs, rec)
	p.settle()
}

// sentSoFar is how many decisions the driver has sent, for the reader: the
// driver counts a decision before it writes it, so no reply is ahead of it.
func (p *resumePeer) sentSoFar() int { return int(p.sentA.Load()) }

// resumePlan is how a driver paces its peer.
type resumePlan struct {
	end        time.Time     // stop cutting and sending
	interval   time.Duration // mean time between two decisions
	cutMin     time.Duration // a cut comes uniformly within [cutMin, cutMax) after the last resume
	cutMax     time.Duration
	pauseMax   time.Duration // a cut client waits uniformly within [0, pauseMax) before it redials
	settle     time.Duration // after end, how long its own decisions have to come back
	seed       uint64
	serverProc *servertest.Proc
}

// drive is a peer's driver goroutine: it sends decisions at plan's pace and
// cuts and resumes the connection at random until plan.end, then waits for
// the server to answer every decision it sent. It reports failure in
// p.driverErr.
func (p *resumePeer) drive(plan resumePlan) {
	rng := rand.New(rand.NewPCG(plan.seed, uint64(p.idx)))
	jitter := func(mean time.Duration) time.Duration { return mean/2 + time.Duration(rng.Int64N(int64(mean))) } // [mean/2, 3mean/2)
	nextSend := time.Now().Add(time.Duration(rng.Int64N(int64(plan.interval))))
	nextCut := time.Now().Add(plan.cutMin + time.Duration(rng.Int64N(int64(plan.cutMax-plan.cutMin))))
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		now := time.Now()
		if !now.Before(plan.end) {
			break
		}
		wake := plan.end
		for _, at := range []time.Time{nextSend, nextCut} {
			if at.Before(wake) {
				wake = at
			}
		}
		timer.Reset(wake.Sub(now))
		select {
		case <-timer.C:
		case <-p.conn.done:
			p.driverErr = fmt.Errorf("connection ended by the server: %s", describeEnd(p.conn.err))
			return
		}
		now = time.Now()
		if !now.Before(nextSend) && now.Before(plan.end) {
			if err := p.sendNext(); err != nil {
				p.driverErr = err
				return
			}
			nextSend = now.Add(jitter(plan.interval))
		}
		if !now.Before(nextCut) && now.Before(plan.end) {
			if rng.IntN(2) == 0 { // cut right behind a send: it may or may not have reached the server
				p.midSend++
				if err := p.sendNext(); err != nil {
					p.driverErr = err
					return
				}
			}
			pause := time.Duration(rng.Int64N(int64(plan.pauseMax)))
			halfOpen := rng.IntN(4) == 0
			late := halfOpen && rng.IntN(2) == 0
			if err := p.cutAndResume(plan.serverProc, pause, halfOpen, late); err != nil {
				p.driverErr = fmt.Errorf("resume %d: %w", p.resumes, err)
				return
			}
			nextCut = time.Now().Add(plan.cutMin + time.Duration(rng.Int64N(int64(plan.cutMax-plan.cutMin))))
		}
	}
	// Every decision sent must be answered: its event, or a dup reply.
	deadline := time.NewTimer(plan.settle)
	defer deadline.Stop()
	for p.echoed.Load() < int64(p.sent) {
		select {
		case <-p.progress:
		case <-p.conn.done:
			p.driverErr = fmt.Errorf("connection ended by the server: %s", describeEnd(p.conn.err))
			return
		case <-deadline.C:
			p.driverErr = fmt.Errorf("%d of its %d decisions unanswered %s after the end", int64(p.sent)-p.echoed.Load(), p.sent, plan.settle)
			return
		}
	}
}

// sendNext sends the next decision.
func (p *resumePeer) sendNext() error {
	d := decision{Seq: p.sent + 1, Sent: now()}
	p.decisions = append(p.decisions, d)
	p.sent++
	p.sentA.Store(int64(p.sent))
	if err := submitDecision(p.conn.ws, p.game, d); err != nil {
		select {
		case <-p.conn.done:
			return fmt.Errorf("sending seq %d: connection ended by the server: %s", d.Seq, describeEnd(p.conn.err))
		default:
			return fmt.Errorf("sending seq %d: %w", d.Seq, err)
		}
	}
	return nil
}

// cutAndResume drops the connection without a close frame, waits pause,
// opens a new one, resumes the session with its position, and sends again
// every decision the server has not answered. A half-open cut leaves the
// old connection open, unread, as a socket whose network went quiet: the
// resume takes its session over, and the old one is dropped after. With
// late, a decision is written on the old connection just after the resume
// is: the server runs it if it reads it before the resume, and must drop it
// after; the retry must then run it, once, either way.
func (p *resumePeer) cutAndResume(proc *servertest.Proc, pause time.Duration, halfOpen, late bool) error {
	old := p.conn
	if halfOpen {
		p.halfOpen++
		old.abandon()
		defer func() {
			_ = old.ws.CloseNow()
			<-old.done
		}()
	} else {
		_ = old.ws.CloseNow()
		<-old.done
	}
	// The reader has returned or processes nothing more: its state is the
	// driver's until the next one starts.
	if pause > 0 {
		t := time.NewTimer(pause) // the client's reconnect delay, part of the workload
		<-t.C
	}
	dialAt := time.Now()
	ws, _, err := dialSession(context.Background(), proc, 10*time.Second)
	if err != nil {
		return err
	}
	p.resumes++
	writeAt := time.Now()
	games := map[string]any{p.game: map[string]any{"epoch": p.epoch, "offset": p.pos}}
	if err := sendFrame(ws, "resume", "r"+strconv.Itoa(p.resumes), map[string]any{"resume_token": p.token, "games": games}); err != nil {
		_ = ws.CloseNow()
		return fmt.Errorf("sending resume: %w", err)
	}
	if late {
		p.lateSends++
		d := decision{Seq: p.sent + 1, Sent: now()}
		p.decisions = append(p.decisions, d)
		p.sent++
		p.sentA.Store(int64(p.sent))
		_ = submitDecision(old.ws, p.game, d) // the old connection may be closed by now: then it was lost
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	f, err := readRFrame(ctx, ws)
	cancel()
	if err != nil {
		_ = ws.CloseNow()
		return fmt.Errorf("waiting for resumed: %w", err)
	}
	at := time.Now()
	if f.Type != "resumed" || f.Data.SID != p.sid {
		_ = ws.CloseNow()
		return fmt.Errorf("answered %s (sid %q, code %s reason %q: %s), want resumed for %s", f.Type, f.Data.SID, f.Data.Code, f.Data.Reason, f.Data.Message, p.sid)
	}
	p.resumeLat = append(p.resumeLat, at.Sub(writeAt))
	p.reconnect = append(p.reconnect, at.Sub(dialAt))
	found := false
	for _, g := range f.Data.Games {
		if g.GameID != p.game {
			_ = ws.CloseNow()
			return fmt.Errorf("resumed lists game %s; the session is only in %s", g.GameID, p.game)
		}
		found = true
		switch {
		case g.Epoch != p.epoch:
			_ = ws.CloseNow()
			return fmt.Errorf("game %s: epoch %q, was %q: its history was lost though it always had seats", p.game, g.Epoch, p.epoch)
		case g.Offset < p.pos:
			_ = ws.CloseNow()
			return fmt.Errorf("game %s: resumed at offset %d, behind the %d processed", p.game, g.Offset, p.pos)
		case !g.Recovered:
			p.resyncs++
			if g.Offset > p.pos {
				p.excused = append(p.excused, [2]uint64{p.pos + 1, g.Offset})
			}
			p.pos, p.resumeAt = g.Offset, 0
		default:
			p.resumeAt = g.Offset
			if p.resumeAt == p.pos {
				p.resumeAt = 0
			}
		}
	}
	if !found {
		_ = ws.CloseNow()
		return fmt.Errorf("resumed does not list game %s: the session lost its seat", p.game)
	}
	p.settle()
	p.serve(ws)
	// What was sent and not answered may have been lost in the cut: the same
	// id and data again must get the remembered reply (dup) or run now, once.
	for seq := int(p.echoed.Load()) + 1; seq <= p.sent; seq++ {
		p.retried++
		if err := submitDecision(ws, p.game, p.decisions[seq-1]); err != nil {
			return fmt.Errorf("retrying seq %d: %w", seq, err)
		}
	}
	return nil
}

// describeEnd describes why a connection ended.
func describeEnd(err error) string {
	code, reason := closeStatus(err)
	return fmt.Sprintf("close %d %q (%v)", code, reason, err)
}
