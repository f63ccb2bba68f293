package main

import (
	"bytes"
	"crypto/rand"
	"strconv"
)

// gameLog is one game's sequencer and its bounded history: every game event
// is given the game's next offset and kept here, in one step, so that the
// order members receive events in is the offset order, and a member back from
// a dropped connection can be sent what it missed. It is the one type cluster
// mode replaces (offsets and histories then live in Redis).
//
// History costs memory per game, never per member: what is kept is the very
// frame every member was sent. It is hub-owned data.
type gameLog struct {
	// set at construction
	epoch     string // names this unbroken run of offsets; a new game, or a lost history, gets a new one
	maxFrames int
	maxBytes  int

	last   uint64   // the offset of the latest event; 0 before the first
	frames [][]byte // ring of the most recent events, oldest at head
	head   int
	n      int
	bytes  int
	held   *int // the index's sum of every game's bytes, kept as the ring changes; nil for none
}

// newGameLog returns the log of a game that has just been created.
func newGameLog(maxFrames, maxBytes int) *gameLog {
	return &gameLog{epoch: rand.Text(), maxFrames: maxFrames, maxBytes: maxBytes}
}

// sequence gives frame (a game event encoded without an offset, shared by
// every member) the game's next offset, keeps it, and returns it.
func (g *gameLog) sequence(frame []byte) []byte {
	g.last++
	framed := withOffset(frame, g.last)
	g.keep(framed)
	return framed
}

// keep appends framed to the history, dropping the oldest events until it
// holds at most maxFrames and maxBytes. An event larger than maxBytes on its
// own is not kept: a member that missed it cannot be caught up.
func (g *gameLog) keep(framed []byte) {
	for g.n > 0 && (g.n >= g.maxFrames || g.bytes+len(framed) > g.maxBytes) {
		g.dropOldest()
	}
	if len(framed) > g.maxBytes {
		return
	}
	if g.n == len(g.frames) { // grows on demand: most games keep far fewer than maxFrames
		ring := make([][]byte, min(max(2*len(g.frames), 4), g.maxFrames))
		for i := range g.n {
			ring[i] = g.frames[(g.head+i)%len(g.frames)]
		}
		g.frames, g.head = ring, 0
	}
	g.frames[(g.head+g.n)%len(g.frames)] = framed
	g.n++
	g.bytes += len(framed)
	if g.held != nil {
		*g.held += len(framed)
	}
}

// dropOldest forgets the oldest event kept.
func (g *gameLog) dropOldest() {
	g.bytes -= len(g.frames[g.head])
	if g.held != nil {
		*g.held -= len(g.frames[g.head])
	}
	g.frames[g.head] = nil
	g.head = (g.head + 1) % len(g.frames)
	g.n--
}

// since returns the events after offset, oldest first, and whether they are
// all held: false when the client claims an offset this epoch never reached,
// or when part of what followed it has been dropped.
func (g *gameLog) since(offset uint64) ([][]byte, bool) {
	if offset > g.last {
		return nil, false
	}
	missed := int(g.last - offset)
	if missed > g.n {
		return nil, false
	}
	out := make([][]byte, 0, missed)
	for i := g.n - missed; i < g.n; i++ {
		out = append(out, g.frames[(g.head+i)%len(g.frames)])
	}
	return out, true
}

// withOffset returns frame, an event encoded as {"type":…,"data":{…}}, with
// "offset":n first in its data: the members' copies and the history share one
// serialisation, sequenced after it was made.
func withOffset(frame []byte, n uint64) []byte {
	cut := bytes.Index(frame, []byte(`"data":{`))
	if cut < 0 {
		return frame // not an encoded event: only a test makes those
	}
	cut += len(`"data":{`)
	out := make([]byte, 0, len(frame)+len(`"offset":,`)+20)
	out = append(out, frame[:cut]...)
	out = append(out, `"offset":`...)
	out = strconv.AppendUint(out, n, 10)
	if frame[cut] != '}' {
		out = append(out, ',')
	}
	return append(out, frame[cut:]...)
}

// mirror keeps an event sequenced elsewhere (in Redis, cluster mode) at the
// offset it was given: a new epoch starts the history afresh, and so does a
// gap, since a ring with a hole would replay the wrong events.
func (g *gameLog) mirror(epoch string, offset uint64, framed []byte) {
	if epoch == g.epoch && offset <= g.last {
		return // kept already: read from Redis (a resume's fetch) before the mailbox brought it
	}
	if epoch != g.epoch || offset != g.last+1 {
		g.seed(epoch, offset-1, nil)
	}
	g.last = offset
	g.keep(framed)
}

// seed replaces the history with frames, the events up to last of epoch
// (oldest first; fewer than last when older ones were dropped).
func (g *gameLog) seed(epoch string, last uint64, frames [][]byte) {
	for g.n > 0 {
		g.dropOldest()
	}
	g.epoch, g.last = epoch, last
	for _, f := range frames {
		g.keep(f)
	}
}

// offsetOf reads the offset withOffset put first in an event's data; 0 for none.
func offsetOf(framed []byte) uint64 {
	cut := bytes.Index(framed, []byte(`"data":{"offset":`))
	if cut < 0 {
		return 0
	}
	var n uint64
	for _, c := range framed[cut+len(`"data":{"offset":`):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}
