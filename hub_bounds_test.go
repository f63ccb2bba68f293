package main

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// The hub's bounds (contract v2 §13): a game's seats, error replies that never
// make their sender slow, sweeps in steps, and a health snapshot that costs
// the hub next to nothing however many games there are.

func TestHubGameFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubDefaults
		cfg.maxSeats = 3
		h := startTestHub(t, cfg)
		a, b, c, d := fakeHubConn("sid-a", nil, 64), fakeHubConn("sid-b", nil, 64), fakeHubConn("sid-c", nil, 64), fakeHubConn("sid-d", nil, 64)
		hubRegister(t, h, a, b, c, d)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""), joinCmd(c, hubGame, ""))
		for _, x := range []*conn{a, b, c} {
			takeQueued(t, x)
		}

		hubTell(t, h, joinCmd(d, hubGame, "j4"))
		checkHubError(t, expectQueued(t, d, "error")[0], codeGameFull, "j4")
		for _, x := range []*conn{a, b, c} {
			expectQueued(t, x) // nobody hears of a refused join
		}
		checkHubStats(t, h, 4, 0, map[uuid.UUID]int{hubGame: 3})
		checkConnRunning(t, d)

		hubTell(t, h, joinCmd(a, hubGame, "again")) // a seated member's re-join is not a new seat
		expectQueued(t, a, "game_joined")
		hubTell(t, h, joinCmd(d, hubGame2, "other")) // another game is not full
		expectQueued(t, d, "game_joined")

		hubTell(t, h, leaveCmd(b, hubGame, ""), joinCmd(d, hubGame, "j5"))
		expectQueued(t, d, "game_joined")
		checkHubStats(t, h, 4, 0, map[uuid.UUID]int{hubGame: 3, hubGame2: 1})
		checkHubInvariants(t, h)
	})
}

// TestHubRefusalsNeverMakeTheSenderSlow sends far more refused commands than
// the sender's queue holds: the error replies stop at half the queue, the
// conn is never stopped, and its queue still has room for what it is sent.
func TestHubRefusalsNeverMakeTheSenderSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubDefaults
		cfg.maxSeats = 2
		h := startTestHub(t, cfg)
		a, b, c := fakeHubConn("sid-a", nil, 8), fakeHubConn("sid-b", nil, 64), fakeHubConn("sid-c", nil, 64)
		hubRegister(t, h, a, b, c)
		hubTell(t, h, joinCmd(b, hubGame, ""), joinCmd(c, hubGame, ""))
		for i := range 1000 {
			id := fmt.Sprint(i)
			switch i % 3 {
			case 0:
				hubTell(t, h, leaveCmd(a, hubGame2, id)) // not_in_game
			case 1:
				hubTell(t, h, actionCmd(a, cmdRoll, hubGame3, id, i)) // not_in_game
			default:
				hubTell(t, h, joinCmd(a, hubGame, id)) // game_full
			}
		}
		checkConnRunning(t, a)
		if n := a.out.len(); n != 4 {
			t.Fatalf("a's queue of 8 holds %d error replies after 1000 refusals, want 4 (half)", n)
		}
		hubTell(t, h, heartbeatCmd(a, "hb"), leaveCmd(b, hubGame, ""), joinCmd(a, hubGame, "in"))
		frames := takeQueued(t, a)
		if len(frames) != 6 || frames[4].Type != "heartbeat_ack" || frames[5].Type != "game_joined" {
			t.Fatalf("after the refusals a got %s, want 4 errors, heartbeat_ack, game_joined", dumpHubFrames(frames))
		}
		checkHubInvariants(t, h)
	})
}

// TestHubSweepSteps checks that a sweep of many due sessions is split: no
// step ends more than its share, and together they expire every one.
func TestHubSweepSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 1000
		cfg := hubDefaults
		cfg.maxSeats = n
		cfg.expiryWarning = 0      // every session is due for expiry at once, unwarned
		h := newHub(cfg, hubInbox) // not running: the test takes the steps itself
		conns := make([]*conn, n)
		for i := range conns {
			conns[i] = fakeHubConn(fmt.Sprintf("sid-%04d", i), nil, 2*n) // room for every presence: none is slow
			h.handle(registerMsg{c: conns[i], reply: make(chan bool, 1)})
			if i%2 == 0 {
				h.handle(joinCmd(conns[i], hubGame, "")) // presence for the others as they go
			}
		}
		time.Sleep(cfg.sessionTimeout)
		h.handle(sweepMsg{now: time.Now()})
		steps := 0
		for h.sweeping {
			before := len(h.idx.sessions)
			h.sweepSome()
			h.dropSlow()
			steps++
			if ended := before - len(h.idx.sessions); ended > defaultSweepStep {
				t.Fatalf("step %d ended %d sessions, more than the step's %d", steps, ended, defaultSweepStep)
			}
		}
		if len(h.idx.sessions) != 0 {
			t.Fatalf("%d sessions left after the sweep", len(h.idx.sessions))
		}
		if want := (n + defaultSweepStep - 1) / defaultSweepStep; steps < want {
			t.Fatalf("the sweep took %d steps, want at least %d", steps, want)
		}
		for _, c := range conns {
			checkConnStopped(t, c, reasonExpired)
		}
		checkHubInvariants(t, h)
	})
}

// TestHubSweepLetsTheInboxIn checks that a message waiting behind a large
// sweep is handled after one step of it, not after the whole sweep: a
// bystander in a game of 600 expiring members gets its heartbeat_ack before
// all but a step's worth of their presence frames.
func TestHubSweepLetsTheInboxIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 600
		cfg := hubDefaults
		cfg.maxSeats = n + 1
		cfg.expiryWarning = 0 // every session is due for expiry at once, unwarned
		h := newHub(cfg, hubInbox)
		for i := range n {
			c := fakeHubConn(fmt.Sprintf("sid-%04d", i), nil, 2*n) // room for every presence: none is slow
			h.handle(registerMsg{c: c, reply: make(chan bool, 1)})
			h.handle(joinCmd(c, hubGame, ""))
		}
		time.Sleep(cfg.sessionTimeout - time.Second)
		by := fakeHubConn("sid-by", nil, 4*n)
		h.handle(registerMsg{c: by, reply: make(chan bool, 1)})
		h.handle(joinCmd(by, hubGame, ""))
		takeQueued(t, by)
		time.Sleep(time.Second)
		h.inbox <- sweepMsg{now: time.Now()}
		h.inbox <- heartbeatCmd(by, "hb")
		go h.run()
		t.Cleanup(func() { stopTestHub(h) })
		synctest.Wait()
		frames := takeQueued(t, by)
		ack := -1
		for i, f := range frames {
			if f.Type == "heartbeat_ack" {
				ack = i
			}
		}
		if ack < 0 || ack > defaultSweepStep || len(frames) != n+1 {
			t.Fatalf("heartbeat_ack is frame %d of %d, want it before at most %d of the %d presence frames", ack, len(frames), defaultSweepStep, n)
		}
		checkHubStats(t, h, 1, 0, map[uuid.UUID]int{hubGame: 1})
	})
}

// TestHubSnapshotIsCheap checks that health costs the hub one small copy at
// 100,000 games, and nothing at all when the caller's copy is current.
func TestHubSnapshotIsCheap(t *testing.T) {
	h := newHub(hubDefaults, hubInbox)
	for i := range 100_000 / 16 {
		s := newSession(fakeHubConn(fmt.Sprintf("sid-%05d", i), nil, 4))
		h.idx.add(s, time.Now())
		for range 16 {
			h.idx.join(s, uuid.New())
		}
	}
	st := h.snapshot(0)
	if st.seats == nil || st.seats.count() != 100_000 || st.ActiveGames != 100_000 {
		t.Fatalf("snapshot lists %v games, want 100000", st.ActiveGames)
	}
	if again := h.snapshot(st.version); again.seats != nil || again.version != st.version {
		t.Fatalf("a snapshot for a caller with the current version copied the seats again")
	}
	if allocs := testing.AllocsPerRun(50, func() { h.snapshot(0) }); allocs > 1 {
		t.Fatalf("a snapshot of 100,000 games allocates %.0f times, want at most 1", allocs)
	}
}

// TestStopReleasesTheQueue checks that a conn's queued frames are let go of
// the moment it is stopped, however it ends.
func TestStopReleasesTheQueue(t *testing.T) {
	c := fakeHubConn("sid-a", nil, 64)
	for range 10 {
		c.out.push(make([]byte, 1<<20))
	}
	c.stop(reasonSlow)
	if c.out.len() != 0 || c.out.size() != 0 {
		t.Fatalf("a stopped conn still queues %d frames, %d bytes", c.out.len(), c.out.size())
	}
	if !c.out.push([]byte("late")) || c.out.len() != 0 {
		t.Fatal("a stopped conn's queue kept a frame pushed after stop, or reported it slow")
	}
}
