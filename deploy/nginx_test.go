// Package deploy tests the files an operator deploys. nginx_test.go runs
// deploy/nginx/dugout.conf, the shipped file rendered by internal/nginxtest,
// through a real nginx in front of three real dugout processes
// (internal/servertest), and checks what a player sees through it: a
// WebSocket that works, no stickiness, the server's close codes, and no
// handshake lost to a node that is stopped, draining or full.
//
// These nodes are single-node dugouts (no REDIS_URL): what is under test is
// the proxy, which must not care.
package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"dugout/internal/nginxtest"
	"dugout/internal/servertest"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives the tests, as failure/
// does: every client, forwarder and process wait must end with its test.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// The default client's idle keep-alive connections (health reads,
		// the endpoint checks) are not leaks of the tests'.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// within bounds anything that takes milliseconds on loopback; it is generous
// for a loaded two-core machine running other packages' tests beside these.
const within = 10 * time.Second

// players is how many handshakes a test makes through nginx: two per node.
const players = 6

// startNodes starts n dugout processes with env added to each one's.
func startNodes(t *testing.T, n int, env map[string]string) []*servertest.Proc {
	t.Helper()
	ps := make([]*servertest.Proc, n)
	for i := range ps {
		ps[i] = servertest.Start(t, servertest.Options{Env: env})
	}
	return ps
}

// addrs is the nodes' listen addresses, for nginx's upstream block.
func addrs(ps []*servertest.Proc) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Addr
	}
	return out
}

// frame is a server frame as these tests read it.
type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// readFrame reads one text frame.
func readFrame(ctx context.Context, c *websocket.Conn) (frame, error) {
	typ, b, err := c.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if typ != websocket.MessageText {
		return f, fmt.Errorf("a %v message from the server", typ)
	}
	return f, json.Unmarshal(b, &f)
}

// connect opens a WebSocket to url and reads its first frame, which must be
// the session frame. The conn is dropped when the test ends.
func connect(t *testing.T, url string, header http.Header) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		status := "no response"
		if resp != nil {
			status = resp.Status
		}
		t.Fatalf("handshake with %s: %v (%s)", url, err, status)
	}
	t.Cleanup(func() { c.CloseNow() })
	f, err := readFrame(ctx, c)
	if err != nil || f.Type != "session" {
		t.Fatalf("first frame through %s: %+v, %v; want the session frame", url, f, err)
	}
	return c
}

// connectAll makes count handshakes through n, held open until the test ends.
func connectAll(t *testing.T, n *nginxtest.Nginx, count int) []*websocket.Conn {
	t.Helper()
	out := make([]*websocket.Conn, count)
	for i := range out {
		out[i] = connect(t, n.WSURL(), nil)
	}
	return out
}

// sessions reads a node's total_sessions directly from the node, not through nginx.
func sessions(t *testing.T, p *servertest.Proc) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	h, err := p.Health(ctx)
	if err != nil {
		t.Fatalf("health of %s: %v", p.Addr, err)
	}
	return h.TotalSessions
}

// closeAll closes the conns with a normal close, so that nginx ends their
// requests and writes their access log lines.
func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
}

// waitRetried waits for the access log to show count handshakes that
// succeeded (101), and returns those whose first try went to first and got
// firstStatus before another node took them.
func waitRetried(t *testing.T, n *nginxtest.Nginx, count int, first, firstStatus string) []nginxtest.Access {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ok, retried []nginxtest.Access
		for _, a := range n.AccessLog(t) {
			if !strings.HasPrefix(a.Request, "GET /ws ") || a.Status != http.StatusSwitchingProtocols {
				continue
			}
			ok = append(ok, a)
			tried := strings.Split(a.Upstream, ", ")
			codes := strings.Split(a.UpstreamStatus, ", ")
			if len(tried) > 1 && tried[0] == first && codes[0] == firstStatus {
				retried = append(retried, a)
			}
		}
		if len(ok) >= count {
			return retried
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log shows %d successful handshakes of %d within %s: %+v", len(ok), count, within, n.AccessLog(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNginxWebSocketRoundTrip: through nginx the upgrade happens (the map,
// HTTP/1.1 and the Upgrade and Connection headers), the session frame comes
// first, and a client message gets its reply.
func TestNginxWebSocketRoundTrip(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	n := nginxtest.Start(t, addrs(nodes))
	roundTrip(t, connect(t, n.WSURL(), nil), "h1")
}

// roundTrip sends a heartbeat with id and waits for its heartbeat_ack.
func roundTrip(t *testing.T, c *websocket.Conn, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"heartbeat","id":"`+id+`"}`)); err != nil {
		t.Fatalf("write heartbeat: %v", err)
	}
	for {
		f, err := readFrame(ctx, c)
		if err != nil {
			t.Fatalf("waiting for heartbeat_ack %s: %v", id, err)
		}
		if f.Type == "heartbeat_ack" && f.ID == id {
			return
		}
	}
}

// TestNginxSpreadsConnections: nothing sticks a client to a node. Six
// handshakes from one address land on all three nodes (least_conn gives each
// two), as each node's own count shows; ip_hash or any hash on the client
// would put them all on one.
func TestNginxSpreadsConnections(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	n := nginxtest.Start(t, addrs(nodes))
	connectAll(t, n, players)
	for i, p := range nodes {
		if got := sessions(t, p); got == 0 {
			t.Errorf("node %d (%s) holds no session of %d", i, p.Addr, players)
		}
	}
}

// TestNginxPassesServerCloseCodes: a close the server makes reaches the client
// through nginx with its code, so a client can tell "fix yourself" from
// "reconnect".
func TestNginxPassesServerCloseCodes(t *testing.T) {
	nodes := startNodes(t, 3, map[string]string{"MAX_MESSAGE_BYTES": "1024"})
	n := nginxtest.Start(t, addrs(nodes))
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		msg  []byte
		want websocket.StatusCode
	}{
		{"binary message is unsupported data", websocket.MessageBinary, []byte{1, 2, 3}, websocket.StatusUnsupportedData},
		{"message over MAX_MESSAGE_BYTES is too big", websocket.MessageText, []byte(`"` + strings.Repeat("x", 2048) + `"`), websocket.StatusMessageTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, n.WSURL(), nil)
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			if err := c.Write(ctx, tc.typ, tc.msg); err != nil {
				t.Fatalf("write: %v", err)
			}
			var err error
			for err == nil { // the goodbye comes first, then the close
				_, err = readFrame(ctx, c)
			}
			if got := websocket.CloseStatus(err); got != tc.want {
				t.Fatalf("close code through nginx: %d (%v), want %d", got, err, tc.want)
			}
		})
	}
}

// TestNginxStoppedNodeCostsNoHandshake: a node that has stopped refuses the
// connection, and nginx takes the handshake to another (proxy_next_upstream
// error), so six new players all get in, on the two nodes left.
func TestNginxStoppedNodeCostsNoHandshake(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	n := nginxtest.Start(t, addrs(nodes))
	if err := nodes[2].Stop(within); err != nil {
		t.Fatalf("stop node 2: %v", err)
	}
	connectAll(t, n, players)
	if got := sessions(t, nodes[0]) + sessions(t, nodes[1]); got != players {
		t.Fatalf("the two nodes left hold %d sessions, want %d", got, players)
	}
}

// TestNginxFullNodePassesHandshakeOn: a node at MAX_SESSIONS refuses a
// handshake with 503 and Retry-After, and nginx hands it to another node
// (proxy_next_upstream http_503): six players get in, and the access log shows
// handshakes that the full node refused first. Without http_503, the first
// player sent to the full node would get its 503.
func TestNginxFullNodePassesHandshakeOn(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	full := servertest.Start(t, servertest.Options{Env: map[string]string{"MAX_SESSIONS": "1"}})
	nodes = append(nodes, full)
	connect(t, full.WSURL(), nil) // its one session
	checkRefused(t, full.WSURL(), "a full node, directly")

	n := nginxtest.Start(t, addrs(nodes))
	closeAll(connectAll(t, n, players))
	if retried := waitRetried(t, n, players, full.Addr, "503"); len(retried) == 0 {
		t.Fatalf("no handshake was refused by the full node and then taken by another: %+v", n.AccessLog(t))
	}
	if got := sessions(t, full); got != 1 {
		t.Fatalf("the full node holds %d sessions, want its 1", got)
	}
}

// checkRefused fails unless a handshake with url gets 503 and a Retry-After.
func checkRefused(t *testing.T, url, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		c.CloseNow()
		t.Fatalf("%s: handshake accepted, want 503", what)
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%s: handshake refused with %v (%+v), want 503 with Retry-After", what, err, resp)
	}
}

// TestNginxDrainingNodeCostsNoHandshake: a handshake sent to a node that
// has begun draining is moved on to another node, and six players get in
// while the node is still draining.
//
// A draining dugout answers no new request: it closes its listener first
// thing (a new connection is refused, as with a stopped node), and closes,
// unanswered, every connection it accepted but has no request from yet. The
// second case is a handshake whose connection the node accepted just before
// SIGTERM, which a busy node always has. heldDials makes that case certain:
// it stands in front of the node with connections to it opened before
// SIGTERM, and forwards nginx's connections over them. A session frozen in
// its close handshake (frozenSession) keeps the node draining, so the test
// sees it alive and answering nothing. To nginx the unanswered handshake is
// an error (proxy_next_upstream error): nothing reached the player, so it
// tries the next node.
func TestNginxDrainingNodeCostsNoHandshake(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	// A shutdown budget longer than the test: the node must not finish draining.
	draining := servertest.Start(t, servertest.Options{Env: map[string]string{"SHUTDOWN_TIMEOUT": "60s"}})
	held := newHeldDials(t, draining.Addr)
	n := nginxtest.Start(t, append(addrs(nodes), held.Addr()))

	held.open(t, players)              // nginx's way in: more than it will use
	probe := dialRaw(t, draining.Addr) // the test's own
	frozenSession(t, draining.Addr)
	// A connection still in the kernel's accept queue when the listener
	// closes is reset, not served: wait until the node has taken them all.
	waitAccepted(t, draining.Addr)
	start := time.Now()
	if err := draining.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, draining.Addr) // the listener is closed: draining has begun

	conns := connectAll(t, n, players)
	if got := sessions(t, nodes[0]) + sessions(t, nodes[1]); got != players {
		t.Fatalf("the two serving nodes hold %d sessions, want %d", got, players)
	}
	closeAll(conns) // so that nginx logs them
	// Still draining once every player is in: alive, answering nothing.
	if err := draining.Cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the draining node has exited: %v\n%s", err, draining.Log())
	}
	if resp, err := tryRequest(probe, "GET /readyz HTTP/1.1\r\nHost: dugout\r\n\r\n"); err == nil {
		t.Fatalf("the draining node answered /readyz on a connection it accepted before SIGTERM: %s", resp.Status)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the draining phase took %s: past PING_TIMEOUT (30 s) the node cuts the frozen session and may exit, so the test may not have seen what it claims", took)
	}
	if retried := waitRetried(t, n, players, held.Addr(), "502"); len(retried) == 0 {
		t.Fatalf("no handshake went to the draining node and then to another: %+v", n.AccessLog(t))
	}
}

// TestNginxKeepsHostForOriginCheck: a browser's Origin names the address it
// loaded the page from, port and all, and dugout accepts it only if it is the
// request's Host, so nginx must pass Host on as the client sent it (nginx's
// default is the upstream's name; $host would drop the port). A foreign
// Origin is still refused: the check is live, not bypassed.
func TestNginxKeepsHostForOriginCheck(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	n := nginxtest.Start(t, addrs(nodes))
	connect(t, n.WSURL(), http.Header{"Origin": {"http://" + n.Addr}})

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, n.WSURL(), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
	if err == nil {
		c.CloseNow()
		t.Fatal("a foreign Origin was accepted through nginx")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a foreign Origin through nginx: %v (%+v), want 403", err, resp)
	}
}

// TestNginxServesHTTPEndpoints: every plain HTTP endpoint answers through
// nginx with dugout's own answer (the API's 401 is dugout's, not nginx's).
func TestNginxServesHTTPEndpoints(t *testing.T) {
	nodes := startNodes(t, 3, map[string]string{"SERVICE_TOKEN": strings.Repeat("s", 32)})
	n := nginxtest.Start(t, addrs(nodes))
	for _, tc := range []struct {
		path string
		want int
		body string // a part of dugout's answer
	}{
		{"/livez", 200, `"ok"`},
		{"/readyz", 200, `"ok"`},
		{"/healthz", 200, `"ok"`},
		{"/health/connections", 200, `"total_sessions"`},
		{"/metrics", 200, "dugout_"},
		{"/dashboard", 200, "<"},
		{"/client/dugout.js", 200, "export"},
		{"/demo/", 200, "<"},
		{"/api/games/6f9619ff-8b86-d011-b42d-00c04fd430c8", 401, "SERVICE_TOKEN"},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL(tc.path), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want || !strings.Contains(string(b), tc.body) {
				t.Fatalf("GET %s: %s, body %.200q; want %d with %q", tc.path, resp.Status, b, tc.want, tc.body)
			}
		})
	}
}

// TestNginxReload: a reload with a node added sends new players to it, and
// the players already in keep working (nginxtest.Reload, which the cluster
// tests use to add and remove nodes).
func TestNginxReload(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	n := nginxtest.Start(t, addrs(nodes[:2]))
	before := connectAll(t, n, 4)
	if got := sessions(t, nodes[2]); got != 0 {
		t.Fatalf("the node not yet configured holds %d sessions", got)
	}
	n.Reload(t, addrs(nodes))
	// One player per node: least_conn sends each to a node with the fewest
	// connections, so the added node gets one of them at least. (Not all:
	// a reload starts least_conn's counts afresh, and the old workers'
	// players count for nothing; see deploy/nginx/README.md.) An old worker
	// still accepting would send none there.
	connectAll(t, n, len(nodes))
	if got := sessions(t, nodes[2]); got == 0 {
		t.Fatal("after the reload, no new player reached the added node")
	}
	for i, c := range before {
		roundTrip(t, c, fmt.Sprintf("before-%d", i))
	}
}

// TestConfTimeoutsOutlastPings: nginx must never be what ends a quiet
// WebSocket. dugout sends a ping every PING_INTERVAL and ends a silent peer
// after PING_INTERVAL + PING_TIMEOUT, so /ws's proxy timeouts must exceed that
// sum at the defaults .env.example documents.
func TestConfTimeoutsOutlastPings(t *testing.T) {
	env, err := os.ReadFile("../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(nginxtest.ConfPath())
	if err != nil {
		t.Fatal(err)
	}
	setting := func(name string) time.Duration {
		m := regexp.MustCompile(`(?m)^` + name + `=(\S+)`).FindSubmatch(env)
		if m == nil {
			t.Fatalf(".env.example has no %s", name)
		}
		d, err := time.ParseDuration(string(m[1]))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	pings := setting("PING_INTERVAL") + setting("PING_TIMEOUT")
	ws := regexp.MustCompile(`(?s)location = /ws \{.*?\n    \}`).Find(conf)
	if ws == nil {
		t.Fatal("dugout.conf has no location = /ws block")
	}
	for _, d := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
		m := regexp.MustCompile(`(?m)^\s*` + d + `\s+(\d+)s;`).FindSubmatch(ws)
		if m == nil {
			t.Errorf("location = /ws sets no %s in seconds", d)
			continue
		}
		if got, _ := time.ParseDuration(string(m[1]) + "s"); got < pings+pings/2 {
			t.Errorf("%s %s is not comfortably above PING_INTERVAL + PING_TIMEOUT (%s)", d, got, pings)
		}
	}
}
