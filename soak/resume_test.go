package soak

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

var (
	flagResumeClients  = flag.Int("soak.resume.clients", 200, "clients of the resume soak, all connected at once")
	flagResumeGames    = flag.Int("soak.resume.games", 50, "games the resume soak's clients spread over (capped at clients/2)")
	flagResumeDuration = flag.Duration("soak.resume.duration", 10*time.Second, "how long the resume soak's clients are cut and resumed while their games play")
	flagResumeRate     = flag.Float64("soak.resume.rate", 4, "decisions per second each resume soak client sends (RATE_LIMIT is 20)")
)

// The resume soak's cuts: each client is cut at a time drawn from
// [resumeCutMin, resumeCutMax) after its last resume, and redials after a
// pause drawn from [0, resumePauseMax): sometimes before the server has
// noticed the loss (the resume takes the half-open session over), mostly
// after (it was away, its game heard it, and hears it back).
const (
	resumeCutMin   = time.Second
	resumeCutMax   = 4 * time.Second
	resumePauseMax = 200 * time.Millisecond
	resumeWindow   = 10 * time.Second
)

// resumeStats are one run's figures.
type resumeStats struct {
	clients, games            int
	storm, wall               time.Duration
	resumes, resyncs, midSend int
	halfOpen, lateSends       int
	retried, dups             int
	sent, deliveries, events  int
	skipped, holes            int
	resumeLat, reconnect      []time.Duration
	loadedGoroutines          int
}

// TestSoakResume is the contract's resilient-sessions soak: clients in games,
// each cut (no close frame) and resumed at random while the games play. Every
// member of every game must process every event exactly once, in offset
// order, the same event at each offset as every other member; every decision
// sent must reach every member exactly once, in its sender's order, however
// often its sender retried it; and once everyone has closed with 1000 the
// server holds no session and is back to its baseline goroutines.
func TestSoakResume(t *testing.T) {
	n, games, dur, rate := *flagResumeClients, *flagResumeGames, *flagResumeDuration, *flagResumeRate
	if n < 2 || games < 1 || dur <= 0 || rate <= 0 || rate > 10 {
		t.Fatalf("need -soak.resume.clients >= 2, -soak.resume.games >= 1, -soak.resume.duration > 0, 0 < -soak.resume.rate <= 10 (half RATE_LIMIT, for the retries)")
	}
	games = min(games, n/2) // two members at least, so that each has someone to hear
	p := startServer(t, map[string]string{
		"RESUME_WINDOW":   resumeWindow.String(),
		"SESSION_TIMEOUT": "0",
		"LOG_LEVEL":       "info", // one line per ended connection, with its reason
	})

	// Warm-up, so lazily started goroutines are in the baseline.
	warm := runResume(t, p, 4, 1, time.Second, rate)
	waitHealth(t, p, 30*time.Second, "idle after the warm-up", health.idle)
	baseG := restingGoroutines(t, p)

	s := runResume(t, p, n, games, dur, rate)

	var afterG int
	waitHealth(t, p, 30*time.Second, "back to baseline goroutines after everyone closed", func(h health) bool {
		afterG = h.Goroutines
		return h.idle() && h.Goroutines >= baseG-2 && h.Goroutines <= baseG+2
	})

	// Every connection ended because its client went: a cut (no close
	// frame: 1006), a cut the resume found still connected (taken over:
	// 4001), or the final close (1000). None by a missed pong, none as a
	// slow consumer. The lines come once each connection's goroutines are gone.
	cuts, closes := warm.resumes+s.resumes, warm.clients+s.clients
	var counts map[string]int
	ok, _ := poll(10*time.Second, 50*time.Millisecond, func() (bool, string) {
		counts, _ = endingCounts(p)
		return counts["disconnected/1000"] >= closes && counts["disconnected/1006"]+counts["/4001"] >= cuts, ""
	})
	if other := sum(counts) - counts["disconnected/1000"] - counts["disconnected/1006"] - counts["/4001"]; !ok || other != 0 ||
		counts["disconnected/1000"] != closes || counts["disconnected/1006"]+counts["/4001"] != cuts {
		t.Errorf("connections ended: %v; want %d closed with 1000 and %d cut (1006, or 4001 when the resume came first), nothing else: %s",
			counts, closes, cuts, endings(p))
	}

	rl, rc := percentiles(s.resumeLat), percentiles(s.reconnect)
	table(t, fmt.Sprintf("resume soak: %d clients in %d games for %s, %.0f decisions/s each; cut every %s to %s, redial after 0 to %s; RESUME_WINDOW %s, GAME_HISTORY_FRAMES 256",
		s.clients, s.games, dur, rate, resumeCutMin, resumeCutMax, resumePauseMax, resumeWindow), [][]string{
		{"resumes", strconv.Itoa(s.resumes), fmt.Sprintf("%.0f/s", float64(s.resumes)/s.storm.Seconds())},
		{"  half-open (old connection left open until the resume)", strconv.Itoa(s.halfOpen), ""},
		{"  taken over, per the server's log (warm-up included)", strconv.Itoa(counts["/4001"]), ""},
		{"  cut right behind a send", strconv.Itoa(s.midSend), ""},
		{"  decision written on the half-open connection after the resume", strconv.Itoa(s.lateSends), ""},
		{"resume latency (resume sent to resumed) p50/p90/p99/max", ms(rl[0]) + " / " + ms(rl[1]) + " / " + ms(rl[2]) + " / " + ms(rl[3]), ""},
		{"reconnect (dial to resumed) p50/p90/p99/max", ms(rc[0]) + " / " + ms(rc[1]) + " / " + ms(rc[2]) + " / " + ms(rc[3]), ""},
		{"recovered:false (resyncs)", strconv.Itoa(s.resyncs), ""},
		{"events processed (all members)", strconv.Itoa(s.events), fmt.Sprintf("%.0f/s", float64(s.events)/s.storm.Seconds())},
		{"  own back events (sent to the others only)", strconv.Itoa(s.holes), ""},
		{"  events at or below the position (skipped)", strconv.Itoa(s.skipped), ""},
		{"decisions sent", strconv.Itoa(s.sent), ""},
		{"decisions delivered (every member, sender included)", strconv.Itoa(s.deliveries), ""},
		{"decisions retried after a resume", strconv.Itoa(s.retried), ""},
		{"  answered dup:true (had run)", strconv.Itoa(s.dups), ""},
		{"  ran on the retry (lost in the cut)", strconv.Itoa(s.retried - s.dups), ""},
		{"server goroutines baseline / loaded / after", fmt.Sprintf("%d / %d / %d", baseG, s.loadedGoroutines, afterG), ""},
		{"storm / wall", s.storm.Round(time.Millisecond).String() + " / " + s.wall.Round(time.Millisecond).String(), ""},
	})
	if rl[3] > time.Second {
		t.Errorf("slowest resume answered after %s; the contract (section 4) gives 1 s", rl[3])
	}
	if t.Failed() {
		t.Logf("server: %s", endings(p))
	}
}

// runResume runs n clients over games new games for dur and checks what
// they saw; it returns the figures.
func runResume(t *testing.T, p *servertest.Proc, n, games int, dur time.Duration, rate float64) resumeStats {
	t.Helper()
	start := time.Now()
	s := resumeStats{clients: n, games: games}
	ids := make([]string, games)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	peers := make([]*resumePeer, n)
	fresh := make([]*websocket.Conn, n) // dialled, reader not started yet
	// Whatever happens, no client outlives the test. The drivers have
	// returned before any t.Fatal below, so the connections are ours here.
	defer func() {
		for i, pr := range peers {
			switch {
			case pr != nil && pr.conn != nil:
				_ = pr.conn.ws.CloseNow()
				<-pr.conn.done
			case fresh[i] != nil:
				_ = fresh[i].CloseNow()
			}
		}
	}()

	// Connect everyone first, so that every reader can name every sender.
	failed, first := pool(n, dialParallelism, func(i int) error {
		ws, f, err := dialSession(t.Context(), p, 30*time.Second)
		if err != nil {
			return err
		}
		pr := newResumePeer(i, ids[i%games])
		pr.sid, pr.token = f.Data.SID, f.Data.ResumeToken
		peers[i], fresh[i] = pr, ws
		return nil
	})
	if failed > 0 {
		t.Fatalf("%d of %d clients failed to connect; first: %v", failed, n, first)
	}
	sids := make(map[string]int32, n)
	for i, pr := range peers {
		sids[pr.sid] = int32(i)
	}
	joined := newCountdown(n)
	failed, first = pool(n, dialParallelism, func(i int) error {
		pr := peers[i]
		pr.sids, pr.joined = sids, joined
		ws := fresh[i]
		fresh[i] = nil
		pr.serve(ws)
		return sendFrame(ws, "join_game", "j", map[string]string{"game_id": pr.game})
	})
	if failed > 0 {
		t.Fatalf("%d of %d clients failed to join; first: %v", failed, n, first)
	}
	if !joined.wait(60 * time.Second) {
		t.Fatalf("%d of %d clients got no game_joined within 60 s", joined.n.Load(), n)
	}

	// The storm: every client sends at its pace and is cut and resumed at
	// random. The drivers end by themselves: each waits at most plan.settle
	// past the end, and every network step it takes has its own deadline.
	seed := uint64(time.Now().UnixNano())
	plan := resumePlan{end: time.Now().Add(dur), interval: time.Duration(float64(time.Second) / rate),
		cutMin: resumeCutMin, cutMax: resumeCutMax, pauseMax: resumePauseMax, settle: 20 * time.Second,
		seed: seed, serverProc: p}
	stormStart := time.Now()
	var wg sync.WaitGroup
	for _, pr := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr.drive(plan)
		}()
	}
	wg.Wait()
	s.storm = time.Since(stormStart)
	bad := 0
	for _, pr := range peers {
		if pr.driverErr != nil {
			if bad++; bad <= 5 {
				t.Errorf("client %d (%s, game %s): %v", pr.idx, pr.sid, pr.game, pr.driverErr)
			}
		}
	}
	if bad > 0 {
		reportProblems(t, peers)
		t.Fatalf("%d of %d clients failed during the storm (seed %d)", bad, n, seed)
	}

	// Nothing more happens in the games: every member must come to the same
	// position, its game's last offset.
	byGame := map[string][]*resumePeer{}
	for _, pr := range peers {
		byGame[pr.game] = append(byGame[pr.game], pr)
	}
	ok, desc := poll(30*time.Second, 20*time.Millisecond, func() (bool, string) {
		for g, members := range byGame {
			var top uint64
			for _, m := range members {
				top = max(top, m.at.Load())
			}
			for _, m := range members {
				if at := m.at.Load(); at != top {
					return false, fmt.Sprintf("game %s: client %d is at offset %d, another at %d", g, m.idx, at, top)
				}
			}
		}
		return true, ""
	})
	if !ok {
		reportProblems(t, peers)
		t.Fatalf("the members did not all reach their game's last offset within 30 s: %s", desc)
	}

	h, err := getHealth(p)
	if err != nil {
		t.Fatal(err)
	}
	s.loadedGoroutines = h.Goroutines
	if h.TotalSessions != n || h.ActiveGames != games {
		t.Errorf("health with every client back: %s; want total_sessions=%d active_games=%d", h, n, games)
	}

	// Everyone closes with 1000: the sessions end at once.
	failed, first = pool(n, dialParallelism, func(i int) error {
		pr := peers[i]
		err := pr.conn.ws.Close(websocket.StatusNormalClosure, "bye")
		<-pr.conn.done
		if err != nil {
			return fmt.Errorf("close handshake: %w", err)
		}
		return nil
	})
	if failed > 0 {
		t.Errorf("%d of %d clients did not close cleanly; first: %v", failed, n, first)
	}
	waitHealth(t, p, 30*time.Second, "no session left after everyone closed with 1000", health.idle)

	// Every reader has returned: check what each member processed.
	reportProblems(t, peers)
	for _, g := range slices.Sorted(maps.Keys(byGame)) {
		checkGame(t, g, byGame[g], peers)
	}
	for _, pr := range peers {
		s.resumes += pr.resumes
		s.resyncs += pr.resyncs
		s.midSend += pr.midSend
		s.halfOpen += pr.halfOpen
		s.lateSends += pr.lateSends
		s.retried += pr.retried
		s.dups += pr.dups
		s.sent += pr.sent
		s.events += pr.events
		s.skipped += pr.skipped
		s.holes += len(pr.holes)
		s.resumeLat = append(s.resumeLat, pr.resumeLat...)
		s.reconnect = append(s.reconnect, pr.reconnect...)
		for _, r := range pr.recs {
			if r.kind == evDefensive || r.kind == evOffensive {
				s.deliveries++
			}
		}
	}
	s.wall = time.Since(start)
	return s
}

// reportProblems fails the test with what the readers recorded.
func reportProblems(t *testing.T, peers []*resumePeer) {
	t.Helper()
	shown := 0
	for _, pr := range peers {
		pr.mu.Lock()
		for _, msg := range pr.problems {
			if shown++; shown <= 10 {
				t.Errorf("client %d (%s): %s", pr.idx, pr.sid, msg)
			}
		}
		if pr.nProblem > len(pr.problems) && shown <= 10 {
			t.Errorf("client %d (%s): and %d more problems", pr.idx, pr.sid, pr.nProblem-len(pr.problems))
		}
		pr.mu.Unlock()
	}
}

// checkGame checks one game's members against each other: the same event at
// every offset; every own back event a member skipped is its own; every
// decision its sender sent was given one offset (so it ran once) and was
// processed exactly once by every member, unless a recovered:false resync
// gave that offset up.
func checkGame(t *testing.T, game string, members, peers []*resumePeer) {
	t.Helper()
	errs := 0
	fail := func(format string, args ...any) {
		if errs++; errs <= 5 {
			t.Errorf("game %s: "+format, append([]any{game}, args...)...)
		}
	}
	defer func() {
		if errs > 5 {
			t.Errorf("game %s: and %d more", game, errs-5)
		}
	}()

	canon := map[uint64]evRec{}
	seenBy := map[uint64]int{}
	for _, m := range members {
		for _, r := range m.recs {
			if prev, ok := canon[r.off]; ok && prev != r {
				fail("at offset %d client %d processed %s, client %d %s", r.off, m.idx, r, seenBy[r.off], prev)
				continue
			}
			canon[r.off], seenBy[r.off] = r, m.idx
		}
	}
	type key struct{ who, seq int32 }
	offOf := map[key]uint64{}
	for off, r := range canon {
		if r.kind != evDefensive && r.kind != evOffensive {
			continue
		}
		k := key{r.who, r.seq}
		if prev, ok := offOf[k]; ok {
			fail("peer %d's seq %d ran twice: offsets %d and %d", r.who, r.seq, min(prev, off), max(prev, off))
		}
		offOf[k] = off
	}
	for _, m := range members {
		for _, h := range m.holes {
			if r, ok := canon[h]; !ok || r.kind != evBack || r.who != int32(m.idx) {
				fail("client %d skipped offset %d as its own back event; the others processed %s there (seen: %v)", m.idx, h, r, ok)
			}
		}
	}
	for _, m := range members {
		count := map[key]int{}
		for _, r := range m.recs {
			if r.kind == evDefensive || r.kind == evOffensive {
				count[key{r.who, r.seq}]++
			}
		}
		for k, c := range count {
			if k.who < 0 || k.seq < 1 || int(k.seq) > peers[k.who].sent || peers[k.who].game != game {
				fail("client %d processed peer %d's seq %d, which it never sent in this game", m.idx, k.who, k.seq)
			} else if c != 1 {
				fail("client %d processed peer %d's seq %d %d times", m.idx, k.who, k.seq, c)
			}
		}
		for _, sender := range members {
			for seq := 1; seq <= sender.sent; seq++ {
				k := key{int32(sender.idx), int32(seq)}
				if count[k] > 0 {
					continue
				}
				off, ran := offOf[k]
				switch {
				case !ran:
					fail("client %d's seq %d reached no member at all", sender.idx, seq)
				case !m.excusedAt(off):
					fail("client %d never processed client %d's seq %d (offset %d; it is at %d)", m.idx, sender.idx, seq, off, m.pos)
				}
			}
		}
	}
}
