package soak

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// churnDecisions is how many decisions each churn client submits per wave.
const churnDecisions = 3

// dialParallelism bounds the handshakes (and closes) in flight at once.
const dialParallelism = 64

// churnPeer is one churn client and what it has seen. The reader goroutine
// alone writes the fields below the client; the test reads them after done.
type churnPeer struct {
	*client
	game      string
	groupSize int
	joined    *countdown    // counts down once this peer knows its whole group
	delivered *countdown    // counts down once this peer has every decision of its group
	ownBack   chan struct{} // closed once its own decisions have all come back

	members    map[string]bool
	lastSeq    map[string]int // per sender sid
	got        int            // decisions from the others
	own        int            // own decisions relayed back
	outOfOrder int
	foreign    int    // decision frames for a game it is not in
	errFrames  int    // error frames
	firstErr   string // the first of them
	joinedOnce bool
	allOnce    bool
}

func (p *churnPeer) handle(f *frameIn, _ int64) {
	switch {
	case f.Type == "game_joined":
		for _, m := range f.Data.Members {
			p.members[m.SID] = true
		}
	case f.Type == "presence" && f.Data.Status == "joined":
		p.members[f.Data.SID] = true
	case f.isDecision():
		switch {
		case f.Data.GameID != p.game:
			p.foreign++
		case f.Data.SID == p.sid:
			if p.own++; p.own == churnDecisions {
				close(p.ownBack)
			}
		default:
			seq := f.Data.Decision.Seq
			if seq != p.lastSeq[f.Data.SID]+1 {
				p.outOfOrder++
			}
			p.lastSeq[f.Data.SID] = seq
			p.got++
		}
		if !p.allOnce && p.own == churnDecisions && p.got == (p.groupSize-1)*churnDecisions {
			p.allOnce = true
			p.delivered.done()
		}
	case f.Type == "error":
		p.errFrames++
		if p.firstErr == "" {
			p.firstErr = string(f.Data.Code) + ": " + f.Data.Message
		}
	}
	if !p.joinedOnce && len(p.members) == p.groupSize {
		p.joinedOnce = true
		p.joined.done()
	}
}

// waveStats are one wave's figures.
type waveStats struct {
	clients, games        int
	connect               time.Duration // every handshake, session frame and join sent
	joinAll               time.Duration // until every peer knew its whole group
	exchange              time.Duration // from the first decision sent to the last delivered
	drain                 time.Duration // from the first close to an idle health
	wall                  time.Duration
	expected, delivered   int // decisions to the other members
	outOfOrder, earlyEnds int
	peakRSS, restRSS      int64
	loadedGoroutines      int // the server's, with every client in
	pings                 int64
	maxPingGap            time.Duration // the longest between two pings at one client
}

// TestSoakChurn connects waves of clients into games, has every member send
// decisions, checks that every other member receives every one of them, then
// ends the sessions (half with a close handshake, half by dropping the TCP
// connection) and checks that the server returns to rest: no session, no
// game, its baseline goroutine count, and its memory within a bound.
func TestSoakChurn(t *testing.T) {
	n, waves, games := *flagClients, *flagWaves, *flagGames
	if n < 2 || waves < 1 || games < 1 {
		t.Fatalf("need -soak.clients >= 2, -soak.waves >= 1, -soak.games >= 1")
	}
	games = min(games, n/2) // at least two members per game, so there is someone to hear each decision
	largest := (n + games - 1) / games
	// The queue holds what may reach a member in one burst: a decision from
	// everyone in its game and their presence, twice over. Only a reader
	// that stops altogether overflows it; the slow-consumer policy itself is
	// TestSoakSlowConsumer's subject.
	queue := max(256, 2*largest*(churnDecisions+2))
	// Pings every 500 ms keep the ping goroutines busy through the churn. The
	// pong allowance is 5 s, or 2 s per 1,000 clients when that is more, not
	// 1 s: every client's reader lives in this one process, which shares 2
	// cores with the server, and a ping waits behind whatever the reader has
	// not yet read. Measured with 1 s: 1 of 640 clients missed a pong at CI
	// size under -race (about one run in ten), 1 of 5,000 without -race; the
	// wave table's "max ping gap" (ping to ping at one client, normally one
	// PING_INTERVAL) reaches about 1.5 s at CI size under -race and 3.2 s
	// at 5,000 without. A client dropped for a missed pong fails the endings
	// check below.
	pingTimeout := time.Second * time.Duration(max(5, 2*((n+999)/1000)))
	p := startServer(t, map[string]string{
		"PING_INTERVAL":   "500ms",
		"PING_TIMEOUT":    pingTimeout.String(),
		"SESSION_TIMEOUT": "0",
		"RATE_LIMIT":      "100000",
		"RATE_BURST":      "100000",
		"SEND_QUEUE_SIZE": strconv.Itoa(queue),
		"LOG_LEVEL":       "info", // one line per ended connection, with its reason
	})

	// Warm-up: one small wave, so lazily started runtime and library
	// goroutines and the first heap growth are in the baseline.
	warm := runWave(t, p, min(n, 40), min(games, 4))
	waitHealth(t, p, 30*time.Second, "idle after the warm-up", health.idle)
	baseG := restingGoroutines(t, p)
	baseRSS, err := p.RSS()
	if err != nil {
		t.Fatal(err)
	}

	sampler := sampleRSS(p, 50*time.Millisecond)
	defer sampler.Stop()
	stats := make([]waveStats, 0, waves)
	for range waves {
		s := runWave(t, p, n, games)
		s.peakRSS = sampler.takePeak()
		s.restRSS, _ = p.RSS()
		stats = append(stats, s)
		if t.Failed() {
			break
		}
	}
	sampler.Stop()

	// Back to rest: nothing held, and every goroutine a session started has
	// ended (health's own request goroutine is in the baseline too).
	var afterG int
	waitHealth(t, p, 30*time.Second, "back to baseline goroutines after the last wave", func(h health) bool {
		afterG = h.Goroutines
		return h.idle() && h.Goroutines >= baseG-2 && h.Goroutines <= baseG+2
	})

	// Every session ended because its client went: none for a missed pong,
	// none as a slow consumer. (A clean close and a vanished client both read
	// "disconnected", with the client's 1000 and with 1006, no close frame;
	// the line comes once the connection's goroutines have returned.)
	total := warm.clients
	for _, s := range stats {
		total += s.clients
	}
	var counts map[string]int
	okEnd, _ := poll(10*time.Second, 50*time.Millisecond, func() (bool, string) {
		counts, _ = endingCounts(p)
		return counts["disconnected/1000"]+counts["disconnected/1006"] >= total, ""
	})
	otherEnds := sum(counts) - counts["disconnected/1000"] - counts["disconnected/1006"]
	if !okEnd || otherEnds != 0 {
		t.Errorf("server ended %d connections; want all %d as disconnected: %s", sum(counts), total, endings(p))
	}

	// Memory. Go returns freed memory to the OS lazily: the heap goal stays
	// where the peak left it until the next GC, which an idle server may not
	// run for two minutes (the forced GC), and the scavenger releases pages
	// in the background. So RSS does not come back to its baseline within a
	// test's time (measured: 10 waves of 600 clients rest between 36 and 49
	// MiB from a 10 MiB baseline, with no trend). The bound is baseline + 50%
	// or baseline + 20 MiB, whichever is larger — or, when the first wave's
	// own peak is above that, 1.5 x that peak: what is asserted is that
	// memory does not ratchet up wave after wave (vacuous with one wave; the
	// goroutine count above is the exact check). RSS is given a bounded while
	// to come down.
	limit := max(baseRSS*3/2, baseRSS+20<<20)
	if len(stats) > 0 {
		limit = max(limit, stats[0].peakRSS*3/2)
	}
	var afterRSS int64
	okRSS, _ := poll(5*time.Second, 200*time.Millisecond, func() (bool, string) {
		afterRSS, err = p.RSS()
		return err == nil && afterRSS <= limit, ""
	})

	rows := [][]string{{"wave", "clients", "games", "connect", "conn/s", "join all", "exchange", "delivered", "deliv/s", "lost", "disorder", "early ends", "drain", "wall", "pings", "max ping gap", "goroutines", "peak RSS", "RSS at rest"}}
	var totalDelivered, totalLost int
	peakRSS, peakG := int64(0), 0
	for i, s := range stats {
		peakG = max(peakG, s.loadedGoroutines)
		lost := s.expected - s.delivered
		totalDelivered += s.delivered
		totalLost += lost
		peakRSS = max(peakRSS, s.peakRSS)
		rows = append(rows, []string{
			strconv.Itoa(i + 1), strconv.Itoa(s.clients), strconv.Itoa(s.games),
			s.connect.Round(time.Millisecond).String(),
			fmt.Sprintf("%.0f", float64(s.clients)/s.connect.Seconds()),
			s.joinAll.Round(time.Millisecond).String(),
			s.exchange.Round(time.Millisecond).String(),
			strconv.Itoa(s.delivered), fmt.Sprintf("%.0f", float64(s.delivered)/s.exchange.Seconds()), strconv.Itoa(lost), strconv.Itoa(s.outOfOrder), strconv.Itoa(s.earlyEnds),
			s.drain.Round(time.Millisecond).String(),
			s.wall.Round(time.Millisecond).String(),
			strconv.FormatInt(s.pings, 10), s.maxPingGap.Round(time.Millisecond).String(),
			strconv.Itoa(s.loadedGoroutines), mb(s.peakRSS), mb(s.restRSS),
		})
	}
	table(t, fmt.Sprintf("churn waves (%d decisions per client; PING_INTERVAL 500ms, PING_TIMEOUT %s; send queue %d; goroutines: the server's with every client in)",
		churnDecisions, pingTimeout, queue), rows)
	table(t, "churn totals (server process)", [][]string{
		{"", "baseline", "peak", "after"},
		{"goroutines", strconv.Itoa(baseG), strconv.Itoa(peakG), strconv.Itoa(afterG)},
		{"RSS", mb(baseRSS), mb(peakRSS), mb(afterRSS)},
		{"decisions delivered", "", "", strconv.Itoa(totalDelivered)},
		{"decisions lost", "", "", strconv.Itoa(totalLost)},
		{"connections ended", "", "", fmt.Sprint(counts)},
	})
	if !okRSS {
		t.Errorf("server RSS %s after the churn is above the bound %s (baseline %s, first wave's peak %s)",
			mb(afterRSS), mb(limit), mb(baseRSS), mb(stats[0].peakRSS))
	}
	if t.Failed() {
		t.Logf("server: %s", endings(p))
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// runWave runs one wave of n clients over games new games and returns its figures.
func runWave(t *testing.T, p *servertest.Proc, n, games int) waveStats {
	t.Helper()
	start := time.Now()
	s := waveStats{clients: n, games: games}
	ids := make([]string, games)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	size := make([]int, games)
	for i := range n {
		size[i%games]++
	}
	joined, delivered := newCountdown(n), newCountdown(n)
	peers := make([]*churnPeer, n)
	// Whatever happens, no client outlives the test.
	defer func() {
		for _, pr := range peers {
			if pr != nil {
				_ = pr.ws.CloseNow()
				<-pr.done
			}
		}
	}()

	// Connect and join, a bounded number at a time.
	failed, first := pool(n, dialParallelism, func(i int) error {
		c, err := dial(t.Context(), p, 30*time.Second)
		if err != nil {
			return err
		}
		g := i % games
		pr := &churnPeer{client: c, game: ids[g], groupSize: size[g], joined: joined, delivered: delivered,
			members: map[string]bool{}, lastSeq: map[string]int{}, ownBack: make(chan struct{})}
		peers[i] = pr
		c.startReader(pr.handle)
		return c.join(pr.game)
	})
	s.connect = time.Since(start)
	if failed > 0 {
		t.Fatalf("%d of %d clients failed to connect and join; first: %v", failed, n, first)
	}
	if !joined.wait(60 * time.Second) {
		t.Fatalf("not every client learned its whole game within 60 s: %d of %d still waiting", joined.n.Load(), n)
	}
	s.joinAll = time.Since(start) - s.connect

	// Everyone is in, as health must also say.
	h, err := getHealth(p)
	if err != nil {
		t.Fatal(err)
	}
	s.loadedGoroutines = h.Goroutines
	if h.TotalSessions != n || h.ActiveGames != games || len(h.SessionsPerGame) != games {
		t.Errorf("health with every client in: %s; want total_sessions=%d active_games=%d", h, n, games)
	}
	for g, id := range ids {
		if h.SessionsPerGame[id] != size[g] {
			t.Errorf("health: game %s has %d sessions, want %d", id, h.SessionsPerGame[id], size[g])
			break
		}
	}

	// Every member sends its decisions; every other member must get them all.
	// A worker sends one member's decisions and waits for their own copies to
	// come back before it takes the next member. All members of a game read
	// the same stream, so this bounds what is in flight by how fast the
	// readers really go: this process reads every frame of every client, and
	// a client left seconds behind its stream would miss its pongs and be
	// dropped (the server is right to; it is not what this test measures).
	exStart := time.Now()
	failed, first = pool(n, dialParallelism, func(i int) error {
		pr := peers[i]
		for seq := 1; seq <= churnDecisions; seq++ {
			if err := pr.submit(pr.game, decision{Seq: seq, Sent: now()}); err != nil {
				return err
			}
		}
		timer := time.NewTimer(30 * time.Second)
		defer timer.Stop()
		select {
		case <-pr.ownBack:
			return nil
		case <-pr.done:
			return fmt.Errorf("connection ended: %w", pr.err)
		case <-timer.C:
			return errors.New("its own decisions did not come back within 30 s")
		}
	})
	if failed > 0 {
		t.Errorf("%d of %d clients failed to send or get their decisions back; first: %v", failed, n, first)
	}
	allDelivered := delivered.wait(60 * time.Second)
	s.exchange = time.Since(exStart)

	// Before anyone leaves: a session the server ended early would show here.
	for i, pr := range peers {
		if pr.ended() {
			s.earlyEnds++
			if s.earlyEnds <= 3 {
				code, reason := closeStatus(pr.err)
				t.Errorf("client %d (%s) was ended before it left: close %d %q: %v; it had %d pings, the last %s after its dial",
					i, pr.sid, code, reason, pr.err, pr.pings.Load(), time.Duration(pr.lastPing.Load()-pr.dialed))
			}
		}
	}

	// Leave: a quarter say leave_game and close, a quarter just close (both
	// with the close handshake, 1000), and half vanish: CloseNow drops the TCP
	// connection without a close frame, and the server reads EOF.
	drainStart := time.Now()
	failed, first = pool(n, dialParallelism, func(i int) error {
		pr := peers[i]
		switch i % 4 {
		case 0:
			if err := pr.send(5*time.Second, "leave_game", "l", map[string]string{"game_id": pr.game}); err != nil {
				return err
			}
			fallthrough
		case 2:
			if err := pr.ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				return fmt.Errorf("close handshake: %w", err)
			}
		default:
			_ = pr.ws.CloseNow()
		}
		<-pr.done
		return nil
	})
	if failed > 0 {
		t.Errorf("%d of %d clients did not close cleanly; first: %v", failed, n, first)
	}
	waitHealth(t, p, 30*time.Second, "idle after the wave", health.idle)
	s.drain = time.Since(drainStart)

	// Every reader has returned: tally what each member saw.
	gameIndex := make(map[string]int, games)
	for g, id := range ids {
		gameIndex[id] = g
	}
	perGame := make([]int, games)
	for _, pr := range peers {
		s.pings += pr.pings.Load()
		s.maxPingGap = max(s.maxPingGap, time.Duration(pr.maxGap.Load()))
		s.outOfOrder += pr.outOfOrder
		perGame[gameIndex[pr.game]] += pr.got
		if pr.foreign > 0 || pr.errFrames > 0 {
			t.Errorf("client %s: %d decisions for another game, %d error frames (first: %s)", pr.sid, pr.foreign, pr.errFrames, pr.firstErr)
		}
		if pr.own != churnDecisions {
			t.Errorf("client %s got %d of its own %d decisions back", pr.sid, pr.own, churnDecisions)
		}
	}
	bad := 0
	for g := range games {
		want := size[g] * (size[g] - 1) * churnDecisions
		s.expected += want
		s.delivered += perGame[g]
		if perGame[g] != want {
			if bad++; bad <= 3 {
				t.Errorf("game %s (%d members): %d decisions delivered to the other members, want %d",
					ids[g], size[g], perGame[g], want)
			}
		}
	}
	if !allDelivered || s.delivered != s.expected || s.outOfOrder != 0 {
		t.Errorf("wave of %d: %d of %d decisions delivered (%d lost), %d out of order",
			n, s.delivered, s.expected, s.expected-s.delivered, s.outOfOrder)
	}
	s.wall = time.Since(start)
	return s
}
