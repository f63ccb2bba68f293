package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// End-to-end tests of what one client may cost (contract v2 §13 and §6's rule
// for replies to refused messages), over a real socket.

// TestRefusedMessagesAreNotDecoded checks the rate limiter comes before any
// decode: a refused message's id is found by a bounded scan, so an id that
// only a full decode would find (behind 8 KB of data) is not echoed, while
// the same message within the limit is decoded whole and its id echoed.
func TestRefusedMessagesAreNotDecoded(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 0.001, 1
	s := startServer(t, cfg)
	c := dial(t, s.url, nil)
	late := `{"type":"nonsense","data":{"pad":"` + strings.Repeat("x", 8<<10) + `"},"id":"late"}`
	c.send(late) // the one token: decoded, so its id is found wherever it is
	c.expectError(codeUnknownType, "late")
	c.send(late)
	c.expectError(codeRateLimited, "")
	c.send(`{"type":"nonsense","id":"early","data":{"pad":"` + strings.Repeat("x", 8<<10) + `"}}`)
	c.expectError(codeRateLimited, "early")
	c.send(`not json at all`) // refused before decode: rate_limited, not invalid_json
	c.expectError(codeRateLimited, "")
}

// TestBurstWhileReadingStaysConnected sends thousands of messages at once
// from a client that reads as fast as it can: it gets rate_limited errors,
// as many as its queue takes, and is never closed as a slow consumer.
func TestBurstWhileReadingStaysConnected(t *testing.T) {
	cfg := testConfig(t)
	s := startServer(t, cfg)
	game := "6f9619ff-8b86-d011-b42d-00c04fd430c8"
	for _, burst := range []struct {
		name string
		msg  string
		n    int
	}{
		{"2,000 heartbeats", `{"type":"heartbeat","id":"h"}`, 2000},
		{"10,000 joins", `{"type":"join_game","id":"j","data":{"game_id":"` + game + `"}}`, 10000},
	} {
		t.Run(burst.name, func(t *testing.T) {
			c := dial(t, s.url, nil)
			frames := make(chan string, 64)
			go func() { // reads as fast as the server writes, and reports every frame's type
				defer close(frames)
				for {
					_, msg, err := c.ws.Read(context.Background())
					if err != nil {
						frames <- "closed: " + websocket.CloseStatus(err).String()
						return
					}
					frames <- string(msg)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			go func() {
				for range burst.n {
					if c.ws.Write(ctx, websocket.MessageText, []byte(burst.msg)) != nil {
						return
					}
				}
				// Once the bucket refills, a heartbeat is answered again.
				for ctx.Err() == nil {
					if c.ws.Write(ctx, websocket.MessageText, []byte(`{"type":"heartbeat","id":"after"}`)) != nil {
						return
					}
					time.Sleep(100 * time.Millisecond) // paced retries, not a wait for something to settle
				}
			}()
			limited, answered := 0, 0
			deadline := time.After(waitFor)
		read:
			for {
				select {
				case f := <-frames:
					switch {
					case strings.HasPrefix(f, "closed"):
						t.Fatalf("closed after %d rate_limited and %d answers: %s", limited, answered, f)
					case strings.Contains(f, codeRateLimited):
						limited++
					case strings.Contains(f, `"id":"after"`) && strings.Contains(f, "heartbeat_ack"):
						break read
					default:
						answered++
					}
				case <-deadline:
					t.Fatalf("no answer after the burst: %d rate_limited and %d answers arrived", limited, answered)
				}
			}
			if limited == 0 {
				t.Fatal("a burst far past RATE_BURST got no rate_limited error")
			}
			t.Logf("%d rate_limited and %d answers before the heartbeat after the burst", limited, answered)
			cancel()
			_ = c.ws.Close(websocket.StatusNormalClosure, "")
			for range frames {
			}
		})
	}
}

// TestConnectionEndsAreLoggedWithTheirCode checks the end-of-connection log
// line: 1006 for a connection lost without a close frame, the client's own
// code when it sent one.
func TestConnectionEndsAreLoggedWithTheirCode(t *testing.T) {
	cfg := testConfig(t)
	r := startRun(t, cfg)
	wsURL := "ws://" + r.addr + "/ws"
	lost := dial(t, wsURL, nil)
	normal := dial(t, wsURL, nil)
	custom := dial(t, wsURL, nil)
	_ = lost.ws.CloseNow() // the socket goes, no close frame
	_ = normal.ws.Close(websocket.StatusNormalClosure, "bye")
	_ = custom.ws.Close(4321, "custom")
	want := map[string]float64{lost.session.SID: 1006, normal.session.SID: 1000, custom.session.SID: 4321}
	eventually(t, "three connection-ended lines", func() bool {
		n := 0
		for _, e := range r.logs.entries(t) {
			if e["message"] == "connection ended" {
				n++
			}
		}
		return n == 3
	})
	for _, e := range r.logs.entries(t) {
		if e["message"] != "connection ended" {
			continue
		}
		sid, _ := e["sid"].(string)
		if e["code"] != want[sid] || e["reason"] != presenceDisconnected {
			t.Errorf("session %s logged code %v reason %v, want %v disconnected", sid, e["code"], e["reason"], want[sid])
		}
	}
}

// TestPlainHTTPTimeouts checks that plain HTTP connections cannot hold a
// descriptor forever: a kept-alive one is closed after HTTP_IDLE_TIMEOUT, and
// one that never finishes its request after HTTP_TIMEOUT, while a WebSocket
// outlives both.
func TestPlainHTTPTimeouts(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPTimeout, cfg.HTTPIdleTimeout = 300*time.Millisecond, 200*time.Millisecond
	r := startRun(t, cfg)
	ws := dial(t, "ws://"+r.addr+"/ws", nil)

	closedWithin := func(t *testing.T, nc net.Conn, within time.Duration) {
		t.Helper()
		_ = nc.SetReadDeadline(time.Now().Add(within))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("the server did not close the connection within %s: %v", within, err)
		}
	}
	t.Run("idle keep-alive", func(t *testing.T) {
		nc, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := io.WriteString(nc, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /livez: %v %v", resp, err)
		}
		closedWithin(t, nc, cfg.HTTPIdleTimeout+waitFor/2)
	})
	// An unfinished handshake is front's to time, any other request net/http's.
	for _, unfinished := range []string{"GET /livez HTTP/1.1\r\nHost: x\r\n", "GET /ws HTTP/1.1\r\nHost: x\r\n"} {
		t.Run("unfinished "+strings.Fields(unfinished)[1], func(t *testing.T) {
			nc, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := io.WriteString(nc, unfinished); err != nil {
				t.Fatal(err)
			}
			within := cfg.HTTPTimeout + waitFor/2
			_ = nc.SetReadDeadline(time.Now().Add(within))
			if got, err := io.ReadAll(nc); err != nil || len(got) > 0 {
				t.Fatalf("read %q, %v: want the connection closed within %s, with no answer", got, err, within)
			}
		})
	}
	ws.send(`{"type":"heartbeat","id":"still"}`) // long past both timeouts
	if f := ws.expect("heartbeat_ack"); f.ID != "still" {
		t.Fatalf("heartbeat_ack id %q", f.ID)
	}
}

// TestHTTPErrorLogIsJSON checks that net/http's own error lines reach the
// structured log as JSON warnings.
func TestHTTPErrorLogIsJSON(t *testing.T) {
	var logs syncBuffer
	l := httpErrorLog(zerolog.New(&logs))
	l.Printf("http: Accept error: %s; retrying in %v", "accept tcp: too many open files", 5*time.Millisecond)
	entries := logs.entries(t)
	if len(entries) != 1 || entries[0]["level"] != "warn" || entries[0]["component"] != "http" ||
		!strings.Contains(entries[0]["message"].(string), "too many open files") {
		t.Fatalf("log %q, want one JSON warning from component http", logs.String())
	}
}
