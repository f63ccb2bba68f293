// Command zombieclient is the WebSocket client the failure-injection tests run
// as a separate OS process, so that the test can freeze it (SIGSTOP) or cut its
// packets (iptables inside a network namespace) without touching the test's
// own process.
//
// Modes (-mode):
//
//	join     connect to -url, read the session frame, join -game, wait for
//	         game_joined, print "joined <sid> <local port>", then read forever
//	         (so pings are answered while the process runs).
//	observe  like join, but print every frame received, one compact JSON
//	         object per line, from the session frame on.
//	health   GET -url (a /health/connections URL), print the body, exit.
//
// It exits 1 with a message on stderr when anything fails.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

func main() {
	mode := flag.String("mode", "join", "join, observe or health")
	url := flag.String("url", "", "ws:// URL of /ws (join, observe) or http:// URL of /health/connections (health)")
	game := flag.String("game", "", "game id to join (join, observe)")
	timeout := flag.Duration("timeout", 10*time.Second, "budget for connecting and joining, or for the health request")
	flag.Parse()
	if *url == "" {
		fail(errors.New("-url is required"))
	}
	var err error
	switch *mode {
	case "join", "observe":
		if *game == "" {
			fail(errors.New("-game is required"))
		}
		err = run(*url, *game, *mode == "observe", *timeout)
	case "health":
		err = health(*url, *timeout)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	fail(err)
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "zombieclient:", err)
		os.Exit(1)
	}
}

type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// run connects, joins the game and then reads until the connection ends.
func run(url, game string, observe bool, timeout time.Duration) error {
	var localPort atomic.Int64
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
					localPort.Store(int64(a.Port))
				}
			}
			return c, err
		},
	}}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		return fmt.Errorf("dial %s: %w", url, err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)

	read := func(ctx context.Context) (frame, error) {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			return frame{}, err
		}
		if observe {
			var buf bytes.Buffer
			if err := json.Compact(&buf, msg); err != nil {
				return frame{}, fmt.Errorf("frame is not JSON: %q", msg)
			}
			buf.WriteByte('\n')
			if _, err := os.Stdout.Write(buf.Bytes()); err != nil {
				return frame{}, err
			}
		}
		var f frame
		if err := json.Unmarshal(msg, &f); err != nil {
			return frame{}, fmt.Errorf("frame is not JSON: %q", msg)
		}
		return f, nil
	}

	f, err := read(ctx)
	if err != nil {
		return fmt.Errorf("reading the session frame: %w", err)
	}
	if f.Type != "session" {
		return fmt.Errorf("first frame is %q, not session", f.Type)
	}
	var sess struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(f.Data, &sess); err != nil || sess.SID == "" {
		return fmt.Errorf("session frame without sid: %s", f.Data)
	}

	join, _ := json.Marshal(map[string]any{"type": "join_game", "id": "zj", "data": map[string]string{"game_id": game}})
	if err := ws.Write(ctx, websocket.MessageText, join); err != nil {
		return fmt.Errorf("sending join_game: %w", err)
	}
	for {
		f, err := read(ctx)
		if err != nil {
			return fmt.Errorf("waiting for game_joined: %w", err)
		}
		if f.Type == "game_joined" && f.ID == "zj" {
			break
		}
		if f.Type == "error" && f.ID == "zj" {
			return fmt.Errorf("join_game refused: %s", f.Data)
		}
	}
	if !observe {
		fmt.Println("joined " + sess.SID + " " + strconv.FormatInt(localPort.Load(), 10))
	}

	// Read forever: coder/websocket answers pings only while a Read is running.
	for {
		if _, err := read(context.Background()); err != nil {
			return fmt.Errorf("connection ended: %w", err)
		}
	}
}

// health prints the body of a GET of url.
func health(url string, timeout time.Duration) error {
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, body)
	}
	_, err = os.Stdout.Write(append(bytes.TrimSpace(body), '\n'))
	return err
}
