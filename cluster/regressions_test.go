package cluster

// Regressions: each test here proved a bug a review of cluster mode found
// (its comment says which), and passes since the fix.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dugout/internal/redistest"
	"dugout/internal/tcpproxy"

	"github.com/coder/websocket"
)

// Regression (review finding 1): a resume refused for user_mismatch must leave T's session
// untouched (contract §4 "Failure: ... T is untouched"). Across nodes, the
// claim makes the holder release the session first: its live connection is
// closed taken_over (4001) and the session moves, although the resume fails.
func TestClusterUserMismatchLeavesTheSession(t *testing.T) {
	_, nodes := startCluster(t, 2, map[string]string{"JWT_SECRET": jwtSecret})
	game := gameID(101)
	a := dialAs(t, nodes[0].Addr, 1)
	a.join(game)

	intruder := dialAs(t, nodes[1].Addr, 2) // another user, with a's token
	intruder.send("resume", "r1", map[string]any{"resume_token": a.token})
	e := intruder.expect("error", nil)
	if e.field("reason") != "user_mismatch" {
		t.Fatalf("resume by another user: %s, want resume_failed user_mismatch", e.raw)
	}
	// a's connection must be untouched: a heartbeat still gets its answer.
	a.send("heartbeat", "hb", map[string]any{})
	select {
	case f, ok := <-a.frames:
		if !ok {
			t.Fatalf("a's connection ended after another user's failed resume: %v", a.err)
		}
		if f.Type == "goodbye" {
			t.Fatalf("a was told %s after another user's resume failed with user_mismatch", f.raw)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("no frame for a")
	}
}

// Regression (review finding 2): takeUp drops from the replay every frame whose offset equals
// the session's own back offset in ANY game (isOwnBack compares across
// games), so an event of game 2 at the offset of game 1's back is lost.
func TestClusterReplayKeepsOtherGamesEvents(t *testing.T) {
	_, nodes := startCluster(t, 2, nil)
	g1, g2 := gameID(102), gameID(103)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	e1 := a.join(g1).field("epoch") // g1: 1 a joined
	b.join(g1)                      // g1: 2 b joined
	a.presence(b.sid, "joined")
	e2 := a.join(g2).field("epoch") // g2: 1
	b.join(g2)                      // g2: 2
	a.presence(b.sid, "joined")

	a.ws.CloseNow() // g1: 3 away, g2: 3 away
	b.presence(a.sid, "away")
	b.presence(a.sid, "away")
	for range 3 { // g2: 4, 5, 6
		b.roll(g2, "")
		b.expect("dice_rolled", nil)
	}
	// a's back events will be g1: 4 and g2: 7; g2's roll at 4 must be replayed.
	a2 := dial(t, nodes[1].Addr)
	a2.send("resume", "r1", map[string]any{"resume_token": a.token, "games": map[string]any{
		g1: map[string]any{"epoch": e1, "offset": 2}, g2: map[string]any{"epoch": e2, "offset": 2}}})
	r := a2.expect("resumed", nil)
	t.Logf("resumed: %s", r.raw)
	var got []uint64
	deadline := time.After(3 * time.Second)
	for len(got) < 3 {
		select {
		case f := <-a2.frames:
			if f.Type == "dice_rolled" {
				got = append(got, f.offset())
			}
		case <-deadline:
			t.Fatalf("replayed rolls of g2: offsets %v, want [4 5 6]", got)
		}
	}
}

// Regression (review finding 6): what ends while Redis is unreachable is never removed from
// Redis once it is back: a seat left during the outage stays in the game's
// member list (a ghost every later joiner is shown), and a session ended
// during it keeps its record, owner and token keys forever. The resync
// only adds what the node holds; the record op is skipped while down.
func TestClusterOutageLeavesNoGhosts(t *testing.T) {
	skipShort(t)
	r := redistest.Start(t)
	proxy := tcpproxy.Start(t, r.Addr)
	env := map[string]string{"NODE_TTL": "15s"}
	n1 := startNode(t, "redis://"+proxy.Addr()+"/0", "n1", env)
	n2 := startNode(t, r.URL(), "n2", env)
	game := gameID(104)
	a := dial(t, n1.Addr)
	b := dial(t, n2.Addr)
	a.join(game)
	b.join(game)
	a.presence(b.sid, "joined")

	proxy.Blackhole()
	proxy.Cut()
	a.roll(game, "") // n1 learns Redis is gone
	eventually(t, 10*time.Second, "n1 reports the engine down", func() bool { return healthOf(t, n1, "node")["engine"] == "down" })
	a.send("leave_game", "", map[string]any{"game_id": game})
	a.expect("game_left", nil)
	a.ws.Close(websocket.StatusNormalClosure, "bye") // the session ends, with a goodbye
	<-a.done
	proxy.Heal()
	eventually(t, 20*time.Second, "n1 reports the engine up", func() bool { return healthOf(t, n1, "node")["engine"] == "up" })
	time.Sleep(time.Second) // the resync runs
	mem := r.Do(t, "HGET", "dugout:g:"+game+":mem", a.sid)
	rec := r.Do(t, "HEXISTS", "dugout:n:n1:s", a.sid)
	owner := r.Do(t, "GET", "dugout:s:"+a.sid)
	t.Logf("after the outage: mem[a]=%s record=%s owner=%s", mem, rec, owner)
	c := dial(t, n2.Addr)
	j := c.join(game)
	t.Logf("a later joiner is told: %s", j.raw)
	if mem != "(nil)" || rec != ":0" || owner != "(nil)" {
		t.Errorf("a's seat and session, ended during the outage, are still in Redis: mem=%s record=%s owner=%s", mem, rec, owner)
	}
}

// Regression (review finding 7): a node killed and started again at once under the same NODE_ID
// (a container restart, a StatefulSet pod) heartbeats the id alive before
// anyone reaps it: the old incarnation's sessions are never adopted, their
// seats stay in Redis as connected members forever, and their games never
// hear them away or left.
func TestClusterRestartUnderSameNodeIDAdopts(t *testing.T) {
	r, nodes := startCluster(t, 2, nil)
	game := gameID(105)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	a.join(game)
	b.join(game)
	a.presence(b.sid, "joined")
	if err := nodes[0].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	startNode(t, r.URL(), "n1", nil) // the same NODE_ID, within NODE_TTL
	fs := reviewReadUntil(b, nodeTTL+resumeWindow+slack, "a away or left", func(f *frame) bool {
		return f.Type == "presence" && f.field("sid") == a.sid
	})
	mem := r.Do(t, "HGET", "dugout:g:"+game+":mem", a.sid)
	t.Logf("b heard of a: %s; Redis lists a as %s", reviewRaws(fs), mem)
	if len(fs) == 0 || mem != "(nil)" {
		t.Errorf("a, on the killed incarnation, is never away nor left; Redis lists it as %s", mem)
	}
}

// readUntil reads c's frames for d, returning those match accepts.
func reviewReadUntil(c *client, d time.Duration, what string, match func(*frame) bool) []*frame {
	var out []*frame
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return out
			}
			if match(f) {
				out = append(out, f)
			}
		case <-deadline:
			return out
		}
	}
}

func reviewRaws(fs []*frame) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.raw)
	}
	return strings.Join(s, " ")
}

// Regression (review finding 8): a SIGTERM in a cluster hands every session over away; the away
// events are sequenced and the others hear them, but the webhook never
// does: the node's hub has stopped before its own copies come back, and
// the adopter adopts them as already away and tells nothing.
func TestClusterHandOverAwayIsPosted(t *testing.T) {
	var mu sync.Mutex
	var posted []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var batch struct {
			Events []struct {
				SID, Status string
			} `json:"events"`
		}
		if json.Unmarshal(body, &batch) == nil {
			mu.Lock()
			for _, e := range batch.Events {
				posted = append(posted, e.SID+"/"+e.Status)
			}
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	_, nodes := startCluster(t, 2, map[string]string{"WEBHOOK_URL": recv.URL, "WEBHOOK_SECRET": strings.Repeat("w", 32)})
	game := gameID(106)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	a.join(game)
	b.join(game)
	a.presence(b.sid, "joined")
	if err := nodes[0].Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.presence(a.sid, "away")
	time.Sleep(3 * time.Second) // batches go out within 1 s
	mu.Lock()
	defer mu.Unlock()
	t.Logf("posted: %v", posted)
	if !slices.Contains(posted, a.sid+"/away") {
		t.Errorf("the others heard a away, the webhook never did: %v", posted)
	}
}

// Regression (review finding 9): MAX_GAME_SESSIONS is checked against what the joining node
// knows; a node that holds no seat of the game knows none, so the game
// takes one seat past its limit per node (contract §13, cluster-wide by §12).
func TestClusterMaxGameSessionsAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, 2, map[string]string{"MAX_GAME_SESSIONS": "2"})
	game := gameID(107)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[0].Addr)
	a.join(game)
	b.join(game)
	c := dial(t, nodes[1].Addr)
	c.send("join_game", "j", map[string]any{"game_id": game})
	f := reviewReadUntil(c, 3*time.Second, "join answer", func(f *frame) bool { return f.Type == "game_joined" || f.Type == "error" })
	if len(f) == 0 || f[0].Type != "error" {
		t.Errorf("a third seat in a game of MAX_GAME_SESSIONS=2: %s", reviewRaws(f))
	}
}

// Regression (review finding 10): Redis emptied (restart, FLUSHALL): the first joined/away/back
// of a game this node holds recreates it at offset 1 in the emit script,
// before the heartbeat's resync can bump the sequence past what the
// members here have seen; a live member then gets offsets it has seen
// already (a client drops those as duplicates).
func TestClusterFlushOffsetsGoOn(t *testing.T) {
	r, nodes := startCluster(t, 1, map[string]string{"NODE_TTL": "15s"})
	game := gameID(108)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[0].Addr)
	a.join(game)
	b.join(game)
	var last uint64
	for range 3 {
		b.roll(game, "")
		last = b.expect("dice_rolled", nil).offset()
	}
	r.Do(t, "FLUSHALL")
	a.ws.CloseNow()
	fs := reviewReadUntil(b, 2*time.Second, "away", func(f *frame) bool { return f.Type == "presence" })
	if len(fs) == 0 {
		t.Errorf("after FLUSHALL, b never hears a away (the emit is refused as fenced and dropped)")
		time.Sleep(5 * time.Second) // the next heartbeat registers the node again
		b.roll(game, "")
		t.Logf("b's roll after the heartbeat: offset %d (had seen %d)", b.expect("dice_rolled", nil).offset(), last)
		return
	}
	t.Logf("b had seen up to offset %d; a's away comes at %d", last, fs[0].offset())
	if fs[0].offset() <= last {
		t.Errorf("after Redis emptied, b got offset %d after %d: its client drops it as seen", fs[0].offset(), last)
	}
}

// Regression (review finding 11): a dead node's away sessions are adopted without moving their
// seats in Redis: the member list still names the dead node, and the
// adopter is not among the game's nodes. A kick through another node is
// then published to the dead node's mailbox only; the adopter keeps the
// seat, and a resume puts the kicked session back in the game (its back
// re-adds the member in Redis).
func TestClusterKickReachesAnAdoptedSeat(t *testing.T) {
	r, nodes := startCluster(t, 3, map[string]string{"SERVICE_TOKEN": serviceToken, "RESUME_WINDOW": "30s"})
	game := gameID(109)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[0].Addr)
	a.join(game)
	b.join(game)
	a.ws.CloseNow()
	b.presence(a.sid, "away")
	b.ws.CloseNow()
	time.Sleep(300 * time.Millisecond) // both records say away
	if err := nodes[0].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var adopter, other int
	eventually(t, nodeTTL+slack, "a adopted", func() bool {
		switch r.Do(t, "GET", "dugout:s:"+a.sid) {
		case "$n2":
			adopter, other = 1, 2
			return true
		case "$n3":
			adopter, other = 2, 1
			return true
		}
		return false
	})
	code, body := api(t, nodes[other], "POST", "/api/games/"+game+"/kick", `{"sid":"`+a.sid+`"}`)
	t.Logf("kick on n%d: %d %v; a adopted by n%d", other+1, code, body, adopter+1)
	time.Sleep(500 * time.Millisecond)
	a2 := dial(t, nodes[adopter].Addr)
	a2.send("resume", "r1", map[string]any{"resume_token": a.token})
	res := a2.expect("resumed", nil)
	mem := r.Do(t, "HGET", "dugout:g:"+game+":mem", a.sid)
	t.Logf("resumed: %s; Redis lists a as %s", res.raw, mem)
	if g, _ := res.field("games").([]any); len(g) != 0 || mem != "(nil)" {
		t.Errorf("a was kicked (removed:%v) but resumes into the game, and Redis lists it again: %s", body["removed"], mem)
	}
}

// Regression (review finding 12): many resumes at once on one node (what a node's shutdown or
// death causes): each claim's fetch moves the mailbox position of the game
// past events still queued behind its Cmoved, among them the back events
// of the other resumes; their tickets never complete, and those resumes are
// never answered (the conn's reader waits for the hub for good).
func TestClusterConcurrentResumesAllAnswered(t *testing.T) {
	_, nodes := startCluster(t, 2, nil)
	game := gameID(110)
	const n = 16
	var cs []*client
	for range n {
		c := dial(t, nodes[0].Addr)
		c.join(game)
		cs = append(cs, c)
	}
	b := dial(t, nodes[1].Addr)
	b.join(game)
	for _, c := range cs {
		c.ws.CloseNow()
	}
	awaySeen := map[any]bool{}
	for len(awaySeen) < n {
		awaySeen[b.expect("presence", func(f *frame) bool { return f.field("status") == "away" }).field("sid")] = true
	}
	var rs []*client
	for _, c := range cs {
		r := dial(t, nodes[1].Addr)
		rs = append(rs, r)
		_ = c
	}
	for i, r := range rs {
		r.send("resume", "r", map[string]any{"resume_token": cs[i].token})
	}
	hung := 0
	for _, r := range rs {
		if fs := reviewReadUntil(r, 3*time.Second, "resumed", func(f *frame) bool { return f.Type == "resumed" || f.Type == "error" }); len(fs) == 0 {
			hung++
		}
	}
	if hung > 0 {
		t.Errorf("%d of %d concurrent resumes never answered", hung, n)
	}
}

// Regression (review finding 13): a resume on a node that holds no seat of the game does not
// read the game's settings (fetch reads meta, stream and members only):
// resumed says state null, idle_timeout_ms null, multi_seat, and the
// session's idle timeout and seat policy there ignore the backend's.
func TestClusterResumeElsewhereKeepsSettings(t *testing.T) {
	_, nodes := startCluster(t, 2, map[string]string{"SERVICE_TOKEN": serviceToken})
	game := gameID(111)
	a := dial(t, nodes[0].Addr)
	a.join(game)
	if code, body := api(t, nodes[0], "PUT", "/api/games/"+game, `{"state":"in_progress","seat_policy":"single_seat"}`); code != 200 {
		t.Fatalf("PUT: %d %v", code, body)
	}
	a.expect("game_updated", nil)
	a.ws.CloseNow()
	time.Sleep(300 * time.Millisecond)
	a2 := dial(t, nodes[1].Addr)
	a2.send("resume", "r1", map[string]any{"resume_token": a.token})
	r := a2.expect("resumed", nil)
	g := r.field("games").([]any)[0].(map[string]any)
	if g["state"] != "in_progress" || g["seat_policy"] != "single_seat" {
		t.Errorf("resumed on n2: state %v seat_policy %v, want in_progress single_seat: %s", g["state"], g["seat_policy"], r.raw)
	}
}
