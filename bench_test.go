package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The hot paths, measured with allocations. Run:
//   go test -run '^$' -bench . -benchmem -count 6 | tee new.txt   (benchstat to compare)

// BenchmarkDecode measures decoding and validating one client frame.
func BenchmarkDecode(b *testing.B) {
	frames := map[string]string{
		"heartbeat": `{"type":"heartbeat","id":"h1"}`,
		"join":      `{"type":"join_game","id":"j1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8"}}`,
		"decision":  `{"type":"submit_defensive_decision","id":"d1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","decision":{"shift":"infield_in","seq":12345}}}`,
		"dice":      `{"type":"roll_dice","id":"r1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","dice":[6,6,6,20]}}`,
		"bad_json":  `{"type":"heartbeat"`,
	}
	for name, f := range frames {
		msg := []byte(f)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = decode(msg)
			}
		})
	}
}

// benchHub is a hub stepped directly on the benchmark goroutine, the way its
// own goroutine steps it, with members whose queues are drained in place.
type benchHub struct {
	h     *hub
	conns []*conn
}

// newBenchHub registers n sessions, all active at now.
func newBenchHub(b *testing.B, n int, cfg hubConfig, now time.Time) *benchHub {
	b.Helper()
	bh := &benchHub{h: newHub(cfg, 1)}
	for i := range n {
		c := &conn{sid: fmt.Sprintf("s%07d", i), out: newSendQueue(8, testQueueBytes), quit: make(chan struct{})}
		bh.conns = append(bh.conns, c)
		if !bh.h.idx.add(newSession(c), now) {
			b.Fatal("duplicate sid")
		}
	}
	return bh
}

// drain empties every member's queue so that nobody becomes a slow consumer.
func (bh *benchHub) drain(conns []*conn) {
	for _, c := range conns {
		for c.out.len() > 0 {
			c.out.next()
		}
	}
}

// BenchmarkRelay measures the hub's part of a decision relayed to a game of 4:
// membership check, activity, and four queue sends of one shared encoding.
func BenchmarkRelay(b *testing.B) {
	cfg := hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 16, maxSeats: 100}
	bh := newBenchHub(b, 4, cfg, time.Now())
	game := uuid.New()
	for _, c := range bh.conns {
		bh.h.handle(commandMsg{c: c, cmd: command{kind: cmdJoin, game: game}, others: []byte("{}")})
	}
	bh.drain(bh.conns)
	sender := bh.conns[0]
	cmd := command{kind: cmdDefensive, id: "d1", game: game, decision: []byte(`{"seq":1}`)}
	self, others := encodeEvent(cmd, sender.sid, nil, nil)
	msg := commandMsg{c: sender, cmd: cmd, self: self, others: others}
	b.ReportAllocs()
	for b.Loop() {
		bh.h.handle(msg)
		bh.drain(bh.conns)
	}
}

// BenchmarkRelayWithEncode adds the reader's part: decoding the frame and
// encoding the event once for the sender and once for everyone else.
func BenchmarkRelayWithEncode(b *testing.B) {
	cfg := hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 16, maxSeats: 100}
	bh := newBenchHub(b, 4, cfg, time.Now())
	game := uuid.MustParse("6f9619ff-8b86-d011-b42d-00c04fd430c8")
	for _, c := range bh.conns {
		bh.h.handle(commandMsg{c: c, cmd: command{kind: cmdJoin, game: game}, others: []byte("{}")})
	}
	bh.drain(bh.conns)
	sender := bh.conns[0]
	frame := []byte(`{"type":"submit_defensive_decision","id":"d1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","decision":{"seq":1}}}`)
	b.ReportAllocs()
	for b.Loop() {
		cmd, perr := decode(frame)
		if perr != nil {
			b.Fatal(perr)
		}
		self, others := encodeEvent(cmd, sender.sid, nil, nil)
		bh.h.handle(commandMsg{c: sender, cmd: cmd, self: self, others: others})
		bh.drain(bh.conns)
	}
}

// BenchmarkJoinLeave measures a session joining a game of 3 and leaving it.
func BenchmarkJoinLeave(b *testing.B) {
	cfg := hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 16, maxSeats: 100}
	bh := newBenchHub(b, 4, cfg, time.Now())
	game := uuid.New()
	for _, c := range bh.conns[1:] {
		bh.h.handle(commandMsg{c: c, cmd: command{kind: cmdJoin, game: game}, others: []byte("{}")})
	}
	bh.drain(bh.conns)
	c := bh.conns[0]
	join := commandMsg{c: c, cmd: command{kind: cmdJoin, game: game}, others: []byte("{}")}
	leave := commandMsg{c: c, cmd: command{kind: cmdLeave, game: game}, self: []byte("{}"), others: []byte("{}")}
	b.ReportAllocs()
	for b.Loop() {
		bh.h.handle(join)
		bh.h.handle(leave)
		bh.drain(bh.conns)
	}
}

// BenchmarkSweep measures one janitor sweep over n sessions of which `due`
// are due: half for expiry, half for a warning; the rest are fresh. The
// sweep's cost should follow the due sessions, not n.
func BenchmarkSweep(b *testing.B) {
	const timeout, warning = 300 * time.Second, 60 * time.Second
	cfg := hubConfig{sessionTimeout: timeout, expiryWarning: warning, maxGames: 16, maxSeats: 100}
	now := time.Unix(1_000_000, 0)
	for _, n := range []int{10_000, 100_000} {
		for _, due := range []int{0, 100, 1000} {
			b.Run(fmt.Sprintf("sessions=%d/due=%d", n, due), func(b *testing.B) {
				bh := newBenchHub(b, n, cfg, now)
				dueConns := bh.conns[:due]
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					bh.drain(dueConns)
					// Re-arm: expired sessions come back, warned ones forget the
					// warning, and all of them go to the idle end of the list.
					for i, c := range dueConns {
						s := bh.h.idx.sessions[c.sid]
						if s == nil {
							s = newSession(c)
							bh.h.idx.add(s, now)
						}
						s.warned = false
						s.lastActivity = now.Add(-timeout + warning/2) // warn
						if i < due/2 {
							s.lastActivity = now.Add(-timeout - time.Second) // expire
						}
					}
					for i := due - 1; i >= 0; i-- {
						pushOldest(bh.h.idx, bh.h.idx.sessions[dueConns[i].sid])
					}
					b.StartTimer()
					bh.h.handle(sweepMsg{now: now})
				}
			})
		}
	}
}

// pushOldest moves s to the longest-idle end of the idle list.
func pushOldest(x *index, s *session) {
	x.unlink(s)
	s.newer, s.older = x.oldest, nil
	if x.oldest != nil {
		x.oldest.older = s
	} else {
		x.newest = s
	}
	x.oldest = s
}
