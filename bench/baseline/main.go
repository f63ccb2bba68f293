// Command baseline is the yardstick the bench tool measures dugout against: the
// bare coder/websocket library, a reader (the HTTP handler) and a writer
// goroutine per connection, rooms in a map behind one mutex, and only the part
// of the wire contract the bench tool uses. It is deliberately plain; it is not
// a server anyone should run.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

type client struct {
	ws     *websocket.Conn
	sid    string
	userID *int64
	out    chan []byte
	quit   chan struct{}
	once   sync.Once
	games  map[string]struct{} // guarded by server.mu
}

func (c *client) stop() { c.once.Do(func() { close(c.quit) }) }

// send queues f without waiting; a full queue drops the connection.
func (c *client) send(f []byte) {
	select {
	case c.out <- f:
	default:
		c.stop()
	}
}

type server struct {
	pingInterval, pingTimeout time.Duration
	secret                    string

	mu    sync.Mutex
	rooms map[string]map[*client]struct{}
}

type outFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Data any    `json:"data"`
}

type inFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		GameID   string          `json:"game_id"`
		Decision json.RawMessage `json:"decision"`
	} `json:"data"`
}

type member struct {
	SID    string `json:"sid"`
	UserID *int64 `json:"user_id"`
}

type presence struct {
	GameID string `json:"game_id"`
	SID    string `json:"sid"`
	UserID *int64 `json:"user_id"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

type event struct {
	GameID   string          `json:"game_id"`
	SID      string          `json:"sid"`
	UserID   *int64          `json:"user_id"`
	Decision json.RawMessage `json:"decision"`
}

func encode(typ, id string, data any) []byte {
	b, err := json.Marshal(outFrame{Type: typ, ID: id, Data: data})
	if err != nil {
		panic(err)
	}
	return b
}

func errFrame(id, code string) []byte {
	return encode("error", id, map[string]string{"code": code, "message": code})
}

func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	var uid *int64
	if tok := r.URL.Query().Get("token"); tok != "" && s.secret != "" {
		t, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte(s.secret), nil },
			jwt.WithValidMethods([]string{"HS256"}))
		if err != nil {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		sub, _ := t.Claims.GetSubject()
		id, err := strconv.ParseInt(sub, 10, 64)
		if err != nil {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		uid = &id
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c := &client{ws: ws, sid: rand.Text(), userID: uid, out: make(chan []byte, 256),
		quit: make(chan struct{}), games: map[string]struct{}{}}
	c.out <- encode("session", "", map[string]any{"sid": c.sid, "user_id": uid,
		"ping_interval_ms": s.pingInterval.Milliseconds(), "session_timeout_ms": 0})
	done := make(chan struct{})
	go func() { defer close(done); s.writeLoop(c) }()
	s.readLoop(c)
	c.stop()
	<-done
	s.leaveAll(c)
}

func (s *server) writeLoop(c *client) {
	t := time.NewTicker(s.pingInterval)
	defer t.Stop()
	for {
		select {
		case f := <-c.out:
			if err := c.ws.Write(context.Background(), websocket.MessageText, f); err != nil {
				c.stop()
			}
		case <-t.C:
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), s.pingTimeout)
				defer cancel()
				if err := c.ws.Ping(ctx); err != nil {
					c.stop()
				}
			}()
		case <-c.quit:
			_ = c.ws.CloseNow()
			return
		}
	}
}

func (s *server) readLoop(c *client) {
	for {
		_, msg, err := c.ws.Read(context.Background())
		if err != nil {
			return
		}
		var f inFrame
		if json.Unmarshal(msg, &f) != nil {
			c.send(errFrame("", "invalid_json"))
			continue
		}
		switch f.Type {
		case "heartbeat":
			c.send(encode("heartbeat_ack", f.ID, map[string]string{"timestamp": time.Now().UTC().Format(time.RFC3339Nano)}))
		case "join_game":
			s.join(c, f)
		case "leave_game":
			s.leave(c, f)
		case "submit_defensive_decision", "submit_offensive_decision":
			s.decide(c, f)
		default:
			c.send(errFrame(f.ID, "unknown_type"))
		}
		select {
		case <-c.quit:
			return
		default:
		}
	}
}

func (s *server) join(c *client, f inFrame) {
	g := f.Data.GameID
	joined := encode("presence", "", presence{GameID: g, SID: c.sid, UserID: c.userID, Status: "joined"})
	s.mu.Lock()
	defer s.mu.Unlock()
	room := s.rooms[g]
	if room == nil {
		room = map[*client]struct{}{}
		s.rooms[g] = room
	}
	_, already := room[c]
	members := []member{{c.sid, c.userID}}
	for o := range room {
		if o != c {
			members = append(members, member{o.sid, o.userID})
			if !already {
				o.send(joined)
			}
		}
	}
	room[c] = struct{}{}
	c.games[g] = struct{}{}
	c.send(encode("game_joined", f.ID, map[string]any{"game_id": g, "members": members}))
}

func (s *server) leave(c *client, f inFrame) {
	g := f.Data.GameID
	left := encode("presence", "", presence{GameID: g, SID: c.sid, UserID: c.userID, Status: "left", Reason: "left"})
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, in := c.games[g]; !in {
		c.send(errFrame(f.ID, "not_in_game"))
		return
	}
	s.dropLocked(c, g, left)
	c.send(encode("game_left", f.ID, map[string]string{"game_id": g}))
}

// dropLocked takes c out of game g and tells the others with frame.
func (s *server) dropLocked(c *client, g string, frame []byte) {
	delete(c.games, g)
	room := s.rooms[g]
	delete(room, c)
	if len(room) == 0 {
		delete(s.rooms, g)
	}
	for o := range room {
		o.send(frame)
	}
}

func (s *server) leaveAll(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for g := range c.games {
		s.dropLocked(c, g, encode("presence", "", presence{GameID: g, SID: c.sid, UserID: c.userID,
			Status: "left", Reason: "disconnected"}))
	}
}

func (s *server) decide(c *client, f inFrame) {
	typ := "defensive_decision"
	if f.Type == "submit_offensive_decision" {
		typ = "offensive_decision"
	}
	ev := event{GameID: f.Data.GameID, SID: c.sid, UserID: c.userID, Decision: f.Data.Decision}
	others := encode(typ, "", ev) // encoded once, shared by every other member
	self := others
	if f.ID != "" {
		self = encode(typ, f.ID, ev)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, in := c.games[f.Data.GameID]; !in {
		c.send(errFrame(f.ID, "not_in_game"))
		return
	}
	c.send(self)
	for o := range s.rooms[f.Data.GameID] {
		if o != c {
			o.send(others)
		}
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "%s=%q is not a positive duration\n", name, v)
			os.Exit(2)
		}
		return d
	}
	return def
}

func main() {
	addr := os.Getenv("LISTEN_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	s := &server{
		pingInterval: envDuration("PING_INTERVAL", 25*time.Second),
		pingTimeout:  envDuration("PING_TIMEOUT", 30*time.Second),
		secret:       os.Getenv("JWT_SECRET"),
		rooms:        map[string]map[*client]struct{}{},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "LISTEN_ADDR=%q: %v\n", addr, err)
		os.Exit(1)
	}
	line, _ := json.Marshal(map[string]string{"level": "info", "addr": ln.Addr().String(), "message": "listening"})
	fmt.Fprintln(os.Stderr, string(line))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
