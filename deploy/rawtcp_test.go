package deploy

// Raw TCP for the draining test: a forwarder whose connections to a node were
// opened in advance, and probes of a node's listener below HTTP.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// heldDials is a TCP forwarder in front of one node. Each connection it
// accepts goes over a connection to the node that open made in advance, or
// over a fresh one once those are spent.
type heldDials struct {
	// set at construction
	ln     net.Listener
	target string
	held   chan net.Conn // connections to the node, opened in advance; capacity players

	accepting chan struct{}  // closed when the accept loop has returned
	pumps     sync.WaitGroup // every pump

	// guarded by mu: added to by the accept loop, emptied at cleanup
	mu   sync.Mutex
	live map[net.Conn]struct{} // every connection in use, closed at cleanup
}

// newHeldDials listens on loopback in front of target; it is closed, and its
// goroutines gone, when the test ends.
func newHeldDials(t *testing.T, target string) *heldDials {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &heldDials{ln: ln, target: target, held: make(chan net.Conn, players), live: map[net.Conn]struct{}{},
		accepting: make(chan struct{})}
	go h.acceptLoop()
	t.Cleanup(func() {
		ln.Close()
		<-h.accepting // nothing is added to live or taken from held after this
		h.mu.Lock()
		for c := range h.live {
			c.Close()
		}
		h.mu.Unlock()
		for len(h.held) > 0 {
			(<-h.held).Close()
		}
		h.pumps.Wait()
	})
	return h
}

// Addr is where nginx is to connect.
func (h *heldDials) Addr() string { return h.ln.Addr().String() }

// open makes count connections to the node now, to be used later.
func (h *heldDials) open(t *testing.T, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		h.held <- dialRaw(t, h.target)
	}
}

// acceptLoop forwards every accepted connection until the listener closes.
func (h *heldDials) acceptLoop() {
	defer close(h.accepting)
	for {
		in, err := h.ln.Accept()
		if err != nil {
			return
		}
		var out net.Conn
		select {
		case out = <-h.held:
		default:
			if out, err = net.DialTimeout("tcp", h.target, time.Second); err != nil {
				in.Close() // to nginx, a node that failed: the next one is tried
				continue
			}
		}
		h.mu.Lock()
		h.live[in], h.live[out] = struct{}{}, struct{}{}
		h.mu.Unlock()
		h.pumps.Add(2)
		go h.pump(in, out)
		go h.pump(out, in)
	}
}

// pump copies src to dst, then closes both, which ends the other pump too.
func (h *heldDials) pump(dst, src net.Conn) {
	defer h.pumps.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// dialRaw opens a TCP connection to addr, closed when the test ends.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, within)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// frozenSession opens a WebSocket session on addr and then reads nothing: at
// shutdown the node's close handshake with it waits until PING_TIMEOUT cuts
// it, and the node drains for that long.
func frozenSession(t *testing.T, addr string) {
	t.Helper()
	c := dialRaw(t, addr)
	resp, err := tryRequest(c, "GET /ws HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a session on the node to be drained: %v %v", resp, err)
	}
}

// tryRequest writes req, a whole HTTP/1.1 request, on c and reads the response.
func tryRequest(c net.Conn, req string) (*http.Response, error) {
	_ = c.SetDeadline(time.Now().Add(within))
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// waitRefused returns once a new connection to addr is refused.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections %s after SIGTERM", addr, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitAccepted returns once the accept queue of the socket listening on addr
// is empty: every connection made to it so far is the server's, not the
// kernel's. For a listening socket, /proc/net/tcp's rx_queue is that queue's
// length (Linux).
func waitAccepted(t *testing.T, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", p) // 127.0.0.1, as /proc/net/tcp writes it
	deadline := time.Now().Add(within)
	for {
		data, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Skipf("cannot see the node's accept queue: %v", err)
		}
		queued := -1
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 4 && f[1] == local && f[3] == "0A" { // 0A: LISTEN
				_, rx, _ := strings.Cut(f[4], ":")
				n, err := strconv.ParseInt(rx, 16, 64)
				if err != nil {
					t.Fatalf("/proc/net/tcp: %q: %v", line, err)
				}
				queued = int(n)
			}
		}
		switch {
		case queued == 0:
			return
		case queued < 0:
			t.Fatalf("no socket listens on %s in /proc/net/tcp", addr)
		case time.Now().After(deadline):
			t.Fatalf("%d connections still wait in %s's accept queue after %s", queued, addr, within)
		}
		time.Sleep(time.Millisecond)
	}
}
