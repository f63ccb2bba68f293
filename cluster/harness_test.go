// Package cluster holds the tests of cluster mode (contract v2 §12): real
// dugout processes (internal/servertest) sharing one real redis-server
// (internal/redistest), clients on every node in one game, and the failures a
// cluster must survive: a node killed, a node frozen, Redis cut off, a
// rolling restart. Every process is started on a free loopback port and
// ended by its PID.
package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"dugout/internal/redistest"
	"dugout/internal/servertest"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Timing of every node here: short, so that a death is found in a second
// or two, and a window passes within a test.
const (
	nodeTTL      = 1500 * time.Millisecond
	resumeWindow = 3 * time.Second
)

// slack is added to the contract's bounds for a busy two-core machine.
const slack = 2 * time.Second

// skipShort skips the multi-process tests under -short.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts several dugout processes and a redis-server; skipped under -short")
	}
}

// startCluster starts one Redis and n nodes named n1…nN on it.
func startCluster(t *testing.T, n int, env map[string]string) (*redistest.Server, []*servertest.Proc) {
	t.Helper()
	skipShort(t)
	r := redistest.Start(t)
	nodes := make([]*servertest.Proc, n)
	for i := range nodes {
		nodes[i] = startNode(t, r.URL(), fmt.Sprintf("n%d", i+1), env)
	}
	return r, nodes
}

// startNode starts one node named id on the Redis at url.
func startNode(t *testing.T, url, id string, env map[string]string) *servertest.Proc {
	t.Helper()
	e := map[string]string{"REDIS_URL": url, "NODE_ID": id, "NODE_TTL": nodeTTL.String(),
		"RESUME_WINDOW": resumeWindow.String(), "SHUTDOWN_RETRY_SPREAD": "100ms", "LOG_LEVEL": "debug",
		"PING_INTERVAL": "500ms", "PING_TIMEOUT": "1s"}
	for k, v := range env {
		e[k] = v
	}
	p := servertest.Start(t, servertest.Options{Env: e})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", id, tail(p.Log(), 60))
		}
	})
	return p
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// frame is a server frame as the tests read it.
type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Dup  bool            `json:"dup"`
	Data json.RawMessage `json:"data"`
	raw  string
}

// field returns one field of the frame's data, decoded into a generic value.
func (f *frame) field(name string) any {
	var m map[string]any
	_ = json.Unmarshal(f.Data, &m)
	return m[name]
}

// offset is the frame's data.offset; 0 for none.
func (f *frame) offset() uint64 {
	if v, ok := f.field("offset").(float64); ok {
		return uint64(v)
	}
	return 0
}

// client is one WebSocket client, its frames read into a channel.
type client struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan *frame
	done   chan struct{}
	mu     sync.Mutex
	err    error // why the reader stopped
	sid    string
	token  string // resume token
	joins  int    // joins sent, for their ids
}

// dial opens a client on p and reads its session frame.
func dial(t *testing.T, addr string) *client {
	t.Helper()
	return dialURL(t, "ws://"+addr+"/ws")
}

// dialURL opens a client on the WebSocket URL u and reads its session frame.
func dialURL(t *testing.T, u string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	ws.SetReadLimit(-1)
	c := &client{t: t, ws: ws, frames: make(chan *frame, 4096), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { c.ws.CloseNow(); <-c.done })
	s := c.expect("session", nil)
	c.sid, _ = s.field("sid").(string)
	c.token, _ = s.field("resume_token").(string)
	return c
}

// read is the client's reader goroutine.
func (c *client) read() {
	defer close(c.done)
	for {
		_, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			close(c.frames)
			return
		}
		f := &frame{raw: string(b)}
		if err := json.Unmarshal(b, f); err == nil {
			c.frames <- f
		}
	}
}

// send writes one client frame.
func (c *client) send(typ, id string, data any) {
	c.t.Helper()
	msg := map[string]any{"type": typ, "data": data}
	if id != "" {
		msg["id"] = id
	}
	b, _ := json.Marshal(msg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// expect returns the next frame of type typ that match accepts (nil: any),
// failing the test after a deadline. Frames of other types are skipped.
func (c *client) expect(typ string, match func(*frame) bool) *frame {
	c.t.Helper()
	return c.expectWithin(10*time.Second, typ, match)
}

// expectWithin is expect with its own deadline.
func (c *client) expectWithin(d time.Duration, typ string, match func(*frame) bool) *frame {
	c.t.Helper()
	deadline := time.After(d)
	var skipped []string
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.mu.Lock()
				err := c.err
				c.mu.Unlock()
				c.t.Fatalf("connection ended waiting for %s: %v", typ, err)
			}
			if f.Type == typ && (match == nil || match(f)) {
				return f
			}
			if len(skipped) < 20 {
				skipped = append(skipped, f.raw)
			}
		case <-deadline:
			c.t.Fatalf("no %s frame within %s; skipped:\n%s", typ, d, strings.Join(skipped, "\n"))
		}
	}
}

// join joins game and returns the game_joined frame.
func (c *client) join(game string) *frame {
	c.t.Helper()
	c.joins++ // each join its own id: a join again under one id is a retry (dup)
	c.send("join_game", fmt.Sprintf("j%d-%s", c.joins, game), map[string]any{"game_id": game})
	return c.expect("game_joined", nil)
}

// presence waits for a presence frame about sid with status.
func (c *client) presence(sid, status string) *frame {
	c.t.Helper()
	return c.expect("presence", func(f *frame) bool { return f.field("sid") == sid && f.field("status") == status })
}

// roll rolls one die in game under id and returns nothing: the caller reads the result.
func (c *client) roll(game, id string) {
	c.t.Helper()
	c.send("roll_dice", id, map[string]any{"game_id": game, "dice": []int{6}})
}

// healthOf reads /health/connections of p, scope "" for the cluster's view.
func healthOf(t *testing.T, p *servertest.Proc, scope string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	path := "/health/connections"
	if scope != "" {
		path += "?scope=" + scope
	}
	req, _ := newRequest(ctx, p.URL(path))
	resp, err := httpClient.Do(req)
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

// eventually polls cond until it holds, failing after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not waiting for one to settle
	}
}

// gameID returns a fresh game id for a test.
func gameID(n int) string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", n+os.Getpid()%1000*1000)
}

// jwtSecret signs the tests' tokens.
const jwtSecret = "cluster-test-secret"

// dialAs opens a client on addr as user (an HS256 token signed with jwtSecret).
func dialAs(t *testing.T, addr string, user int64) *client {
	t.Helper()
	return dialURL(t, "ws://"+addr+"/ws?token="+signToken(user))
}

// signToken mints an HS256 token for user, valid for an hour.
func signToken(user int64) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": strconv.FormatInt(user, 10),
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	if err != nil {
		panic(err)
	}
	return tok
}
