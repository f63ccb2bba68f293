package main

// One client of the failover mode: it joins its game on its node, sends a
// decision every -interval, checks that its game's offsets follow each other,
// and when its node dies reconnects to a surviving one with jittered backoff
// and resumes, checking the catch-up. See failover.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// foFrame is what the failover mode reads of a server frame.
type foFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		SID         string `json:"sid"`
		ResumeToken string `json:"resume_token"`
		GameID      string `json:"game_id"`
		Epoch       string `json:"epoch"`
		Offset      uint64 `json:"offset"`
		Status      string `json:"status"`
		Reason      string `json:"reason"`
		Code        string `json:"code"`
		Games       []struct {
			GameID    string `json:"game_id"`
			Epoch     string `json:"epoch"`
			Offset    uint64 `json:"offset"`
			Recovered bool   `json:"recovered"`
		} `json:"games"`
	} `json:"data"`
}

func readFo(ctx context.Context, ws *websocket.Conn, within time.Duration) (foFrame, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var f foFrame
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return f, nil, err
	}
	if typ != websocket.MessageText {
		return f, b, errors.New("binary frame from server")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, b, fmt.Errorf("undecodable frame %q: %w", b, err)
	}
	return f, b, nil
}

// foClient is one session. The fields after the atomics are owned by its
// reader goroutine, and read by the run only once every reader has returned.
type foClient struct {
	idx int
	gid string
	cur atomic.Pointer[foConn] // the connection the sender writes to; nil while there is none
	seq atomic.Int64

	node           int
	sid, token     string
	epoch          string
	lastOff        uint64
	gapsBefore     int64 // offset gaps before the kill
	gapsAfter      int64 // after the kill (a survivor), or after the catch-up (a victim)
	victim         bool
	resumed        bool
	recovered      bool
	failReason     string // why its resume failed for good ("" if it did not)
	failSamples    []string
	failAt         []int64 // ns since the kill of each resume_failed answer
	failLat        []int64 // ns from sending resume to each resume_failed answer
	attempts       int     // connections it opened to resume
	resumedAt      int64   // ns since the kill of its resumed frame
	resumeLat      int64   // ns from the last attempt's dial to resumed
	replayFrom     uint64  // its offset when it resumed
	replayUntil    uint64  // the resumed frame's offset for its game: replay ends there
	replayed       int64   // frames it got with offsets in (replayFrom, replayUntil]
	replayDisorder int64   // replayed frames not in increasing order
	inReplay       bool
}

// foConn is a client's connection and the node it is to.
type foConn struct {
	ws   *websocket.Conn
	node int
}

// decision builds one submit_defensive_decision, with an id as a real
// client's exactly-once action would carry.
func (c *foClient) decision(seq int64) []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"type":"submit_defensive_decision","id":"d`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `","data":{"game_id":"`...)
	b = append(b, c.gid...)
	b = append(b, `","decision":{"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, `,"from":`+strconv.Itoa(c.idx)+`}}}`...)
}

// sendLoop writes a decision every interval while the client has a
// connection, until ctx ends.
func (c *foClient) sendLoop(ctx context.Context, sh *foShared, interval time.Duration) {
	if sleepCtx(ctx, rand.N(interval)) != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cur := c.cur.Load(); cur != nil && !sh.closing.Load() {
			seq := c.seq.Add(1)
			if err := cur.ws.Write(ctx, websocket.MessageText, c.decision(seq)); err == nil {
				sh.sent.Add(1)
			} else if c.cur.Load() == cur && !sh.closing.Load() && !sh.dep.nodes[cur.node].killed.Load() {
				sh.sendErrors.add("client %d on n%d: %v", c.idx, cur.node+1, err)
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// run is the client's reader: it reads ws until it fails; if the client's
// node was killed, it resumes elsewhere and reads on. It returns when the
// run closes the connections, or the client is done.
func (c *foClient) run(ctx context.Context, sh *foShared, ws *websocket.Conn) {
	for {
		err := c.read(sh, ws)
		c.cur.Store(nil)
		if sh.closing.Load() || ctx.Err() != nil {
			return
		}
		if c.node != sh.killed || !sh.dep.nodes[sh.killed].killed.Load() || c.resumed {
			sh.dropped.add("client %d on n%d: %v", c.idx, c.node+1, err)
			return
		}
		minMax(&sh.lossFirst, &sh.lossLast, sh.since())
		if ws = c.resume(ctx, sh); ws == nil {
			return
		}
		c.cur.Store(&foConn{ws: ws, node: c.node})
		if sh.closing.Load() { // the run closed every connection meanwhile
			_ = ws.CloseNow()
		}
	}
}

// read reads ws until it fails, checking offsets and noting what the
// survivors hear of the victims.
func (c *foClient) read(sh *foShared, ws *websocket.Conn) error {
	for {
		_, b, err := ws.Read(context.Background())
		if err != nil {
			return err
		}
		if off := offsetOf(b); off > 0 {
			c.offset(sh, off)
		}
		if d, ok := parseDecision(b); ok {
			_ = d // decisions carry nothing more the mode checks
			continue
		}
		var f foFrame
		if json.Unmarshal(b, &f) != nil {
			sh.errFrames.Add(1)
			continue
		}
		switch f.Type {
		case "presence":
			// The victims' set is written before the kill's time is stored.
			if !c.victim && sh.killAt.Load() != 0 && sh.victims[f.Data.SID] {
				switch f.Data.Status {
				case "away":
					sh.awaySeen.Add(1)
					minMax(&sh.awayFirst, &sh.awayLast, sh.since())
					sh.awayReasons.add(f.Data.Reason, "%s", f.Data.Reason)
				case "back":
					sh.backSeen.Add(1)
				case "left":
					sh.leftSeen.Add(1)
				}
			}
		case "error":
			sh.errFrames.Add(1)
			sh.errCodes.add(f.Data.Code, "client %d: %s", c.idx, b)
		}
	}
}

// offset checks one game event's offset: before the kill and on the
// survivors they follow each other; a resumed victim first gets the replay,
// offsets up to the resumed frame's, then live events after it.
func (c *foClient) offset(sh *foShared, off uint64) {
	if c.inReplay {
		if off <= c.replayUntil {
			if off <= c.lastOff || off <= c.replayFrom {
				c.replayDisorder++
			} else {
				c.replayed++
			}
			c.lastOff = max(c.lastOff, off)
			return
		}
		c.inReplay = false
		c.lastOff = max(c.lastOff, c.replayUntil)
	}
	if c.lastOff > 0 && off != c.lastOff+1 {
		if sh.killAt.Load() == 0 {
			c.gapsBefore++
		} else {
			c.gapsAfter++
			role := "survivor"
			if c.victim {
				role = "resumed victim"
			}
			at := sh.since()
			sh.gaps.add("%s %d on n%d, game %s: offset %d after %d, +%dms after the kill", role, c.idx, c.node+1,
				c.gid, off, c.lastOff, at/1e6)
			sh.gapMu.Lock()
			sh.gapList = append(sh.gapList, gapRec{gid: c.gid, node: c.node, at: at, from: c.lastOff, to: off})
			sh.gapMu.Unlock()
		}
	}
	c.lastOff = off
}

// backoff is the browser client's: full jitter, a delay in [0, min(cap, base·2^attempt)).
func backoff(attempt int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if attempt < 30 {
		d = min(ceiling, base<<attempt)
	}
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// resume reconnects a victim to a surviving node and resumes its session
// there, as the browser client does: after a jittered backoff, a fresh
// connection, its session frame, then resume with the game's position. It
// returns the connection that now serves the session, or nil when the
// resume failed for good (resume_failed, unless -retry-failed) or ran past
// -storm-wait.
func (c *foClient) resume(ctx context.Context, sh *foShared) *websocket.Conn {
	fo := &sh.o.failover
	end := time.Unix(0, sh.killAt.Load()).Add(fo.stormWait)
	for attempt := 0; ; attempt++ {
		wait := backoff(attempt, fo.backoffBase, fo.backoffCap)
		if attempt == 0 {
			wait += fo.delay
		}
		if sleepCtx(ctx, wait) != nil {
			return nil // the run is over: counted as not resumed
		}
		if time.Now().After(end) {
			c.failReason = "timeout"
			c.note(fmt.Sprintf("not resumed within -storm-wait %s, after %d attempts", fo.stormWait, attempt))
			sh.outcomes.Add(1)
			return nil
		}
		target := sh.survivors[(c.idx+attempt)%len(sh.survivors)] // spread like a balancer
		c.attempts++
		start := time.Now()
		ws, reason, what, lat := c.tryResume(ctx, sh, target)
		if ws != nil {
			c.resumeLat = int64(time.Since(start))
			c.resumedAt = sh.since()
			c.node = target
			c.resumed = true
			sh.outcomes.Add(1)
			return ws
		}
		if lat > 0 {
			c.failAt = append(c.failAt, sh.since())
			c.failLat = append(c.failLat, lat)
		}
		c.note(fmt.Sprintf("attempt %d on n%d, answered +%dms after the kill: %s", attempt+1, target+1, sh.since()/1e6, what))
		if reason != "retry" && !(fo.retryFailed && reason == "unknown") {
			c.failReason = reason
			sh.outcomes.Add(1)
			return nil
		}
	}
}

// note keeps the first few things that went wrong for the client.
func (c *foClient) note(s string) {
	if len(c.failSamples) < 3 {
		c.failSamples = append(c.failSamples, s)
	}
}

// tryResume is one attempt on node target. It returns the connection on
// success; otherwise the reason ("retry" for a dial or read error, which a
// client simply tries again), what happened, and for a resume_failed answer
// how long it took (ns).
func (c *foClient) tryResume(ctx context.Context, sh *foShared, target int) (*websocket.Conn, string, string, int64) {
	ws, err := sh.d.dial(ctx, "ws://"+sh.dep.nodes[target].addr+"/ws", "")
	if err != nil {
		return nil, "retry", "dial: " + err.Error(), 0
	}
	var answered int64
	fail := func(reason, what string) (*websocket.Conn, string, string, int64) {
		// A normal close ends the connection's own fresh session at once.
		_ = ws.Close(websocket.StatusNormalClosure, "")
		return nil, reason, what, answered
	}
	f, _, err := readFo(ctx, ws, 10*time.Second)
	if err != nil || f.Type != "session" {
		return fail("retry", fmt.Sprintf("session frame: type %q, %v", f.Type, err))
	}
	msg, _ := json.Marshal(map[string]any{"type": "resume", "id": "r1", "data": map[string]any{
		"resume_token": c.token, "games": map[string]any{c.gid: map[string]any{"epoch": c.epoch, "offset": c.lastOff}}}})
	if err := write(ctx, ws, msg); err != nil {
		return fail("retry", "write: "+err.Error())
	}
	sentAt := time.Now()
	for {
		f, raw, err := readFo(ctx, ws, 10*time.Second)
		switch {
		case err != nil:
			return fail("retry", "read: "+err.Error())
		case f.Type == "error" && f.Data.Code == "resume_failed":
			answered = int64(time.Since(sentAt))
			if answered < int64(700*time.Millisecond) {
				sh.fastFails.add("client %d on n%d, sent +%dms after the kill, answered in %dms: %s", c.idx, target+1,
					(sh.since()-answered)/1e6, answered/1e6, raw)
			}
			return fail(f.Data.Reason, fmt.Sprintf("resume_failed %s after %dms: %s", f.Data.Reason, time.Since(sentAt).Milliseconds(), raw))
		case f.Type == "error":
			return fail("retry", fmt.Sprintf("error %s: %s", f.Data.Code, raw))
		case f.Type != "resumed":
			continue
		}
		if f.Data.SID != c.sid {
			return fail("wrong_sid", fmt.Sprintf("resumed sid %s, want %s", f.Data.SID, c.sid))
		}
		if len(f.Data.Games) != 1 || f.Data.Games[0].GameID != c.gid {
			return fail("wrong_games", fmt.Sprintf("resumed %s, want just game %s", raw, c.gid))
		}
		g := f.Data.Games[0]
		c.recovered = g.Recovered
		if g.Recovered {
			c.inReplay, c.replayFrom, c.replayUntil = true, c.lastOff, g.Offset
		} else {
			c.epoch, c.lastOff = g.Epoch, g.Offset // resync: the new position
		}
		return ws, "", "", 0
	}
}

// replayMissing is how many events the catch-up should have had and did not:
// everything after the client's offset up to the resumed frame's, less its
// own back event (which a session is never sent). -1: every event up to the
// resumed frame's offset came, so there was no back event of its own (a
// record taken from a dead node before the reap resumes as a takeover,
// which tells the others nothing).
func (c *foClient) replayMissing() int64 {
	if !c.recovered {
		return 0
	}
	return int64(c.replayUntil-c.replayFrom) - 1 - c.replayed
}

// closeAll ends the clients once the run is over: cancel stops those still
// resuming; every connection is dropped; it returns once every reader has.
func closeFoClients(cs []*foClient, sh *foShared, cancel context.CancelFunc, readers *sync.WaitGroup) {
	sh.closing.Store(true)
	cancel()
	for _, c := range cs {
		if c != nil {
			if cur := c.cur.Load(); cur != nil {
				_ = cur.ws.CloseNow()
			}
		}
	}
	readers.Wait()
}
