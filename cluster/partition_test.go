package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"dugout/internal/redistest"
	"dugout/internal/servertest"
	"dugout/internal/tcpproxy"
)

// behindProxy starts a Redis, a node n1 that reaches it only through a
// tcpproxy (so the link can be blackholed and healed), and n2 on Redis
// directly, each with env.
func behindProxy(t *testing.T, env map[string]string) (*redistest.Server, *tcpproxy.Proxy, []*servertest.Proc) {
	t.Helper()
	skipShort(t)
	r := redistest.Start(t)
	p := tcpproxy.Start(t, r.Addr)
	n1 := startNode(t, "redis://"+p.Addr()+"/0", "n1", env)
	n2 := startNode(t, r.URL(), "n2", env)
	enginesUp(t, n1, n2)
	return r, p, []*servertest.Proc{n1, n2}
}

// awaitKept reads c's frames until one that match accepts, keeping every frame
// read in *kept, and returns the match.
func awaitKept(c *client, kept *[]*frame, d time.Duration, what string, match func(*frame) bool) *frame {
	c.t.Helper()
	fs := framesUntil(c, d, what, match)
	*kept = append(*kept, fs...)
	return fs[len(fs)-1]
}

// heartbeatRoundTrip sends one heartbeat and returns how long its ack took; the
// frames read meanwhile go to *kept.
func heartbeatRoundTrip(c *client, kept *[]*frame, id string) time.Duration {
	c.t.Helper()
	sent := time.Now()
	c.send("heartbeat", id, nil)
	awaitKept(c, kept, 5*time.Second, "heartbeat_ack "+id, func(f *frame) bool { return f.Type == "heartbeat_ack" && f.ID == id })
	return time.Since(sent)
}

// goRedisReadTimeout is go-redis's default read timeout: the longest a Redis
// command over a blackholed link may wait for its reply. The bridge gives
// its calls shorter deadlines of their own (TestClusterRedisCutHonoursTimeouts);
// the tests wait for this bound, not for those.
const goRedisReadTimeout = 5 * time.Second

// patientHealth is healthOf with a timeout past goRedisReadTimeout, for a node
// whose health waits on a blackholed Redis.
func patientHealth(t *testing.T, p *servertest.Proc, scope string) map[string]any {
	t.Helper()
	path := "/health/connections"
	if scope != "" {
		path += "?scope=" + scope
	}
	hc := &http.Client{Timeout: 3 * goRedisReadTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(p.URL(path))
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("health body: %v", err)
	}
	return m
}

// fastRoundTrip bounds a heartbeat round trip on loopback, on a busy two-core
// machine under -race: far below the 3 s a Redis command waits for a
// blackholed reply, so a hub that waited on Redis would show.
const fastRoundTrip = 400 * time.Millisecond

// Redis cut off from one node for less than NODE_TTL: that node keeps
// serving its own players (heartbeats are answered at once, rolls between
// its two players are delivered), its health says "engine":"down"; once the
// link heals it resyncs ("engine":"up", its sessions counted in the
// cluster's health as seen from the other node), nobody was declared away,
// and the game goes on across the nodes.
//
// NODE_TTL is 12 s here, not the harness's 1.5 s: the node knows Redis is
// gone only once a call over the blackholed link times out (up to
// goRedisReadTimeout), and a heartbeat in flight then is cut short by the
// heal, so "down, then healed before anyone declares the node dead" needs a
// TTL well above that. For the same reason the cut-off node's health is read
// with a longer timeout than healthOf's.
func TestClusterRedisBlackholeShort(t *testing.T) {
	const ttl = 12 * time.Second
	_, proxy, nodes := behindProxy(t, map[string]string{"NODE_TTL": ttl.String()})
	game := gameID(111)
	p1 := dial(t, nodes[0].Addr)
	p2 := dial(t, nodes[0].Addr)
	q := dial(t, nodes[1].Addr)
	p1.join(game)
	p2.join(game)
	q.join(game)
	var k1, k2, kq []*frame
	p1.roll(game, "pre-1")
	awaitKept(p1, &k1, 5*time.Second, "p1's own roll", func(f *frame) bool { return f.ID == "pre-1" })
	awaitKept(p2, &k2, 5*time.Second, "p1's roll at p2", func(f *frame) bool { return f.Type == "dice_rolled" })
	awaitKept(q, &kq, 5*time.Second, "p1's roll at q", func(f *frame) bool { return f.Type == "dice_rolled" })

	cut := time.Now()
	proxy.Blackhole()
	// This roll's sequencing waits on the blackholed link; the hub must not.
	p1.roll(game, "part-1")
	for i := range 5 {
		for _, x := range []struct {
			c    *client
			kept *[]*frame
		}{{p1, &k1}, {p2, &k2}} {
			if d := heartbeatRoundTrip(x.c, x.kept, fmt.Sprintf("h%d", i)); d > fastRoundTrip {
				t.Fatalf("heartbeat round trip %s with Redis cut off, want under %s: the hub waits on Redis", d, fastRoundTrip)
			}
		}
	}
	eventually(t, goRedisReadTimeout+slack, "engine down on the cut-off node", func() bool {
		return patientHealth(t, nodes[0], "")["engine"] == "down"
	})
	t.Logf("engine down %s after the cut", time.Since(cut).Round(time.Millisecond))
	// Still served: the roll sent at the cut reaches p2, and p1 has its reply.
	awaitKept(p2, &k2, goRedisReadTimeout+slack, "p1's roll during the cut, at p2", func(f *frame) bool {
		return f.Type == "dice_rolled" && f.field("sid") == p1.sid
	})
	awaitKept(p1, &k1, slack, "p1's reply to its roll during the cut", func(f *frame) bool { return f.ID == "part-1" })
	t.Logf("a roll sent at the cut was delivered %s after it", time.Since(cut).Round(time.Millisecond))
	// Now that the node knows, rolls between its players are as fast as ever.
	for i := range 3 {
		sent := time.Now()
		p2.roll(game, fmt.Sprintf("part-2-%d", i))
		awaitKept(p1, &k1, 5*time.Second, "p2's roll during the cut, at p1", func(f *frame) bool {
			return f.Type == "dice_rolled" && f.field("sid") == p2.sid
		})
		awaitKept(p2, &k2, 5*time.Second, "p2's own roll", func(f *frame) bool { return f.ID == fmt.Sprintf("part-2-%d", i) })
		if d := time.Since(sent); d > fastRoundTrip {
			t.Fatalf("a roll between two players of the cut-off node took %s, want under %s", d, fastRoundTrip)
		}
	}
	if h := healthOf(t, nodes[0], ""); h["engine"] != "down" || h["scope"] != "node" || h["total_sessions"] != 2.0 {
		t.Fatalf("health of the cut-off node: %v, want its own view (2 sessions) with engine down", h)
	}
	if since := time.Since(cut); since > ttl-2*time.Second {
		t.Fatalf("the cut lasted %s, too close to NODE_TTL %s for this test to mean anything", since, ttl)
	}

	proxy.Heal()
	eventually(t, ttl/3+slack, "engine up again on the healed node", func() bool {
		h := healthOf(t, nodes[0], "")
		return h["engine"] == "up" && h["scope"] == "cluster"
	})
	eventually(t, ttl/3+slack, "the healed node's sessions in the cluster's health, seen from n2", func() bool {
		h := healthOf(t, nodes[1], "")
		per, _ := h["sessions_per_game"].(map[string]any)
		list, _ := h["nodes"].([]any)
		return h["total_sessions"] == 3.0 && h["connected_sessions"] == 3.0 && per[game] == 3.0 && len(list) == 2
	})

	// The game goes on across the nodes. (The offsets p1 and p2 see now are
	// Redis's again, not their node's own count during the cut; see
	// TestClusterRedisBlackholeOffsets.)
	p1.roll(game, "after-1")
	awaitKept(p1, &k1, 5*time.Second, "p1's own roll after the heal", func(f *frame) bool { return f.ID == "after-1" })
	awaitKept(q, &kq, 5*time.Second, "p1's roll after the heal, at q", func(f *frame) bool {
		return f.Type == "dice_rolled" && f.field("sid") == p1.sid
	})
	q.roll(game, "after-2")
	awaitKept(q, &kq, 5*time.Second, "q's own roll", func(f *frame) bool { return f.ID == "after-2" })
	for _, x := range []struct {
		c    *client
		kept *[]*frame
	}{{p1, &k1}, {p2, &k2}} {
		awaitKept(x.c, x.kept, 5*time.Second, "q's roll after the heal", func(f *frame) bool {
			return f.Type == "dice_rolled" && f.field("sid") == q.sid
		})
	}
	// Nobody was declared away: the cut was shorter than NODE_TTL.
	for _, f := range kq {
		if f.Type == "presence" && f.field("status") != "joined" {
			t.Fatalf("q heard %s: the cut-off node's players were declared gone", f.raw)
		}
	}
}

// Redis cut off from one node for longer than NODE_TTL: the other node
// declares it dead, and its players away (timeout) to the rest of the game;
// when the link heals, the node finds itself fenced and closes its
// connections with goodbye 1001 resumable, and its players resume on the
// other node, recovered, with everything they missed.
func TestClusterRedisBlackholeLong(t *testing.T) {
	_, proxy, nodes := behindProxy(t, nil)
	game := gameID(112)
	p1 := dial(t, nodes[0].Addr)
	p2 := dial(t, nodes[0].Addr)
	q := dial(t, nodes[1].Addr)
	epoch := p1.join(game).field("epoch")
	p2.join(game)
	q.join(game)
	var kq []*frame
	q.roll(game, "pre-1")
	last := awaitKept(q, &kq, 5*time.Second, "q's own roll", func(f *frame) bool { return f.ID == "pre-1" }).offset()
	p1.expect("dice_rolled", nil)
	p2.expect("dice_rolled", nil)

	cut := time.Now()
	proxy.Blackhole()
	away := map[any]bool{}
	for len(away) < 2 {
		f := awaitKept(q, &kq, nodeTTL+slack, "the cut-off node's players away", func(f *frame) bool {
			return f.Type == "presence" && f.field("status") == "away"
		})
		if f.field("reason") != "timeout" || (f.field("sid") != p1.sid && f.field("sid") != p2.sid) {
			t.Fatalf("q heard %s, want the cut-off node's players away (timeout)", f.raw)
		}
		away[f.field("sid")] = true
	}
	t.Logf("both away %s after the cut (NODE_TTL %s)", time.Since(cut).Round(time.Millisecond), nodeTTL)
	q.roll(game, "during") // missed by p1 and p2: their replays bring it
	during := awaitKept(q, &kq, 5*time.Second, "q's own roll", func(f *frame) bool { return f.ID == "during" }).offset()

	healed := time.Now()
	proxy.Heal()
	for _, x := range []*client{p1, p2} {
		code, fs := closeOf(x, nodeTTL+slack)
		var bye *frame
		for _, f := range fs {
			if f.Type == "goodbye" {
				bye = f
			}
		}
		if bye == nil || bye.field("code") != 1001.0 || bye.field("reason") != "shutdown" || bye.field("resumable") != true || code != 1001 {
			t.Fatalf("after the heal: close code %d, frames:\n%s\nwant goodbye 1001 shutdown resumable, then close 1001", code, rawFrames(fs))
		}
	}
	t.Logf("fenced %s after the heal", time.Since(healed).Round(time.Millisecond))

	for _, x := range []*client{p1, p2} {
		r, res := resumeAt(t, nodes[1].Addr, x, game, epoch, last)
		g := resumedEntry(res, game)
		if g == nil || g["recovered"] != true {
			t.Fatalf("resume after the fence: %s, want the game recovered", res.raw)
		}
		got := framesUntil(r, 5*time.Second, "the roll missed during the cut, replayed", func(f *frame) bool {
			return f.Type == "dice_rolled"
		})
		if f := got[len(got)-1]; f.offset() != during || f.field("sid") != q.sid {
			t.Fatalf("replayed %s, want q's roll at %d", f.raw, during)
		}
		awaitKept(q, &kq, 5*time.Second, "back after the resume", func(f *frame) bool {
			return f.Type == "presence" && f.field("sid") == x.sid && f.field("status") == "back"
		})
	}
	eventually(t, 3*nodeTTL+slack, "every session counted once, seen from both nodes", func() bool {
		for _, n := range nodes {
			h := healthOf(t, n, "")
			per, _ := h["sessions_per_game"].(map[string]any)
			if h["engine"] != "up" || h["total_sessions"] != 3.0 || h["connected_sessions"] != 3.0 || per[game] != 3.0 {
				return false
			}
		}
		return healthOf(t, nodes[0], "node")["total_sessions"] == 0.0
	})
}

// The bridge gives each Redis call a budget (2 s for a health read and for
// sequencing an event), so that a blackholed Redis costs the node's players
// and its health at most that before the node serves them alone: the
// health of the cut-off node answers within it, and a roll sent at the cut
// reaches the other player of that node within it.
func TestClusterRedisCutHonoursTimeouts(t *testing.T) {
	const budget = 2*time.Second + time.Second // the bridge's 2 s, and slack
	_, proxy, nodes := behindProxy(t, map[string]string{"NODE_TTL": "12s"})
	game := gameID(113)
	p1 := dial(t, nodes[0].Addr)
	p2 := dial(t, nodes[0].Addr)
	p1.join(game)
	p2.join(game)
	var k2 []*frame

	proxy.Blackhole()
	cut := time.Now()
	p1.roll(game, "cut-1")
	h := patientHealth(t, nodes[0], "")
	took := time.Since(cut)
	if took > budget {
		t.Errorf("/health/connections of the cut-off node answered after %s (engine %v), want within %s", took.Round(time.Millisecond), h["engine"], budget)
	}
	awaitKept(p2, &k2, goRedisReadTimeout+slack, "p1's roll at p2", func(f *frame) bool {
		return f.Type == "dice_rolled" && f.field("sid") == p1.sid
	})
	if took := time.Since(cut); took > budget {
		t.Errorf("a roll between two players of the cut-off node took %s, want within %s", took.Round(time.Millisecond), budget)
	}
}

// gameEvent is what identifies a game event, whoever received it: its type,
// whom it is about, and what it says.
type gameEvent struct {
	typ, sid, status, dice string
	tag                    string // a roll's dice alone: what the tests' rolls are told apart by
}

// gameEventOf reads the identity of a game event; the id and dup of a sender's
// copy are not part of it.
func gameEventOf(f *frame) gameEvent {
	e := gameEvent{typ: f.Type, sid: fmt.Sprint(f.field("sid")), status: fmt.Sprint(f.field("status"))}
	if f.Type == "dice_rolled" {
		e.dice = fmt.Sprint(f.field("dice"), f.field("results"))
		e.tag = fmt.Sprint(f.field("dice"))
	}
	return e
}

// offsetLedger keeps, per offset, the game event one member processed.
type offsetLedger map[uint64]gameEvent

// note adds every game event of fs (its offsets) to l, and returns the
// offsets processed twice (an offset seen again for another event).
func (l offsetLedger) note(fs []*frame) []string {
	var twice []string
	for _, f := range fs {
		if f.offset() == 0 || f.Dup || f.Type == "game_joined" || f.Type == "resumed" {
			continue
		}
		e := gameEventOf(f)
		if old, ok := l[f.offset()]; ok && old != e {
			twice = append(twice, fmt.Sprintf("offset %d: %v, then %v", f.offset(), old, e))
			continue
		}
		l[f.offset()] = e
	}
	return twice
}

// ledgersDisagree lists the offsets that mean one event to a and another to b.
func ledgersDisagree(a, b offsetLedger) []string {
	var out []string
	for off, e := range a {
		if o, ok := b[off]; ok && o != e {
			out = append(out, fmt.Sprintf("offset %d: %v / %v", off, e, o))
		}
	}
	return out
}

// framesUntilOrEnd reads c's frames until one that match accepts, the
// connection ends, or d passes, and returns the frames read and the match
// (nil for none). It never fails the test: for a frame that may not come.
func framesUntilOrEnd(c *client, d time.Duration, match func(*frame) bool) ([]*frame, *frame) {
	deadline := time.After(d)
	var got []*frame
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return got, nil
			}
			got = append(got, f)
			if match(f) {
				return got, f
			}
		case <-deadline:
			return got, nil
		}
	}
}
