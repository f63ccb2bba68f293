package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: the
// proxy's cleanup must wait for its pumps, dials and accept loop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Timing of the tests. silence is how long a blackholed read must stay
// unanswered (an echo over loopback answers in microseconds, so a short wait
// shows the hang); within bounds what should happen at once.
const (
	silence = 200 * time.Millisecond
	within  = 5 * time.Second
)

// echoServer is the target: it writes back what it reads, and counts the
// connections it has accepted, so a test can tell whether the proxy dialled.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int32
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

// startEcho runs an echo server on loopback until the test ends.
func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, conns: map[net.Conn]bool{}}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.mu.Lock()
			e.conns[c] = true
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				_, _ = io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		for c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

// dial connects to the proxy; the conn is closed when the test ends.
func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), within)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoes checks that msg sent on c comes back.
func echoes(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

// hangs checks that what c sends gets no answer within silence while c
// stays open.
func hangs(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write into the blackhole: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(silence))
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if !isTimeout(err) {
		t.Fatalf("read through the blackhole = %q, %v; want a timeout", buf[:n], err)
	}
}

// isReset checks that a read on c fails at once, and not by its deadline:
// the proxy closed it.
func isReset(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if err == nil || isTimeout(err) {
		t.Fatalf("read = %q, %v; want the connection closed by the proxy", buf[:n], err)
	}
}

// isTimeout reports whether err is a deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitConns waits until the proxy holds want links.
func waitConns(t *testing.T, p *Proxy, want int) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for p.Conns() != want {
		select {
		case <-deadline.C:
			t.Fatalf("Conns() = %d after %s, want %d", p.Conns(), within, want)
		case <-tick.C:
		}
	}
}

// TestForwards checks both directions through the proxy, and that a link
// the client closes is let go.
func TestForwards(t *testing.T) {
	e := startEcho(t)
	p := Start(t, e.ln.Addr().String())
	c := dial(t, p)
	echoes(t, c, "hello")
	echoes(t, c, "again")
	waitConns(t, p, 1)
	c.Close()
	waitConns(t, p, 0)
}

// TestBlackholeThenHeal checks that a blackholed link hangs but stays open,
// that a connection made during the blackhole hangs too and never reaches
// the target, and that Heal resets both and lets a new connection through.
func TestBlackholeThenHeal(t *testing.T) {
	e := startEcho(t)
	p := Start(t, e.ln.Addr().String())
	old := dial(t, p)
	echoes(t, old, "before")

	p.Blackhole()
	hangs(t, old)
	hangs(t, old) // still open: a second write is taken too
	during := dial(t, p)
	hangs(t, during)
	waitConns(t, p, 2)
	if n := e.accepted.Load(); n != 1 {
		t.Fatalf("the target accepted %d connections, want 1: one made during the blackhole reached it", n)
	}

	p.Heal()
	isReset(t, old)
	isReset(t, during)
	waitConns(t, p, 0)
	echoes(t, dial(t, p), "after")
	if n := e.accepted.Load(); n != 2 {
		t.Fatalf("the target accepted %d connections, want 2", n)
	}
}

// TestCut checks that Cut fails the client's read at once, frees the link,
// and leaves the proxy forwarding new connections.
func TestCut(t *testing.T) {
	e := startEcho(t)
	p := Start(t, e.ln.Addr().String())
	a, b := dial(t, p), dial(t, p)
	echoes(t, a, "a")
	echoes(t, b, "b")
	waitConns(t, p, 2)
	p.Cut()
	isReset(t, a)
	isReset(t, b)
	waitConns(t, p, 0)
	echoes(t, dial(t, p), "after")
}

// TestTargetDown checks that a client of a proxy whose target refuses gets
// a closed connection rather than a hang. The reset can come so soon that
// the client's own connect reports it; either way is a prompt failure.
func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := Start(t, addr)
	c, err := net.DialTimeout("tcp", p.Addr(), within)
	if err != nil {
		if isTimeout(err) {
			t.Fatalf("dial proxy: %v; want a prompt reset", err)
		}
		return
	}
	defer c.Close()
	isReset(t, c)
}

// TestCleanupWithOpenLinks checks that the cleanup ends links and blackholed
// connections still open, so goleak (TestMain) finds nothing left.
func TestCleanupWithOpenLinks(t *testing.T) {
	e := startEcho(t)
	p := Start(t, e.ln.Addr().String())
	echoes(t, dial(t, p), "open")
	p.Blackhole()
	hangs(t, dial(t, p))
	waitConns(t, p, 2)
}
