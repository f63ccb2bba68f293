package main

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pipeMeter returns a meteredConn over one end of a pipe and the other end,
// closed when the test ends.
func pipeMeter(t *testing.T, budget int64) (*meteredConn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &meteredConn{Conn: a, budget: budget}, b
}

// feed writes n bytes to w in chunks on a goroutine, stopping at the first
// write error, and returns a channel that is closed once it has stopped.
func feed(w net.Conn, n int) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		chunk := make([]byte, 1000)
		for n > 0 {
			k, err := w.Write(chunk[:min(len(chunk), n)])
			if err != nil {
				return
			}
			n -= k
		}
	}()
	return done
}

// readAll reads from m until an error and returns the bytes read and the error.
func readAll(m *meteredConn) (int, error) {
	buf := make([]byte, 512)
	total := 0
	for {
		n, err := m.Read(buf)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// TestMeteredConnBudget checks that the bytes between two whole messages are
// bounded, that pings and pongs taken back out do not count, and that a
// stopped conn reads at most closeReadBudget more.
func TestMeteredConnBudget(t *testing.T) {
	t.Run("bytes without a whole message end at the budget", func(t *testing.T) {
		m, peer := pipeMeter(t, 10_000)
		done := feed(peer, 50_000)
		n, err := readAll(m)
		if !errors.Is(err, errWireBudget) || n > 10_000 {
			t.Fatalf("read %d bytes and %v, want errWireBudget within 10000", n, err)
		}
		peer.Close()
		<-done
	})
	t.Run("a whole message starts a new count", func(t *testing.T) {
		m, peer := pipeMeter(t, 10_000)
		done := feed(peer, 50_000)
		buf := make([]byte, 1000)
		for total := 0; total < 50_000; {
			n, err := m.Read(buf)
			if err != nil {
				t.Fatalf("after %d bytes read in messages of 1000: %v", total, err)
			}
			total += n
			if total%5000 == 0 {
				m.messageDone()
			}
		}
		<-done
	})
	t.Run("control frames are taken back out", func(t *testing.T) {
		m, peer := pipeMeter(t, 10_000)
		done := feed(peer, 50_000)
		buf := make([]byte, 100)
		for total := 0; total < 50_000; {
			n, err := m.Read(buf)
			if err != nil {
				t.Fatalf("after %d bytes, all of them control frames: %v", total, err)
			}
			total += n
			m.uncount(n)
		}
		<-done
	})
	t.Run("a stopped conn reads only the close budget", func(t *testing.T) {
		m, peer := pipeMeter(t, 1<<30)
		m.ending()
		m.uncount(1 << 20) // a control frame after stop buys nothing
		m.messageDone()    // nor does a message
		done := feed(peer, 10*closeReadBudget)
		n, err := readAll(m)
		if !errors.Is(err, errWireBudget) || n > closeReadBudget {
			t.Fatalf("a stopped conn read %d bytes and %v, want errWireBudget within %d", n, err, closeReadBudget)
		}
		peer.Close()
		<-done
	})
	t.Run("the socket's own errors pass through", func(t *testing.T) {
		m, peer := pipeMeter(t, 1<<30)
		peer.Close()
		if _, err := m.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("read from a closed pipe: %v, want EOF", err)
		}
	})
}

// TestMeteredConnPaces checks that reads past the bandwidth wait: a client
// paced at 100 KB/s in bursts of 100 KB (a rate limit of one 25 KB message a
// second, times paceFactor) that sends 300 KB is read over about two
// seconds, not at once.
func TestMeteredConnPaces(t *testing.T) {
	m, peer := pipeMeter(t, 1<<30)
	m.bandwidth = newBandwidth(1, 1, 100_000/paceFactor)
	done := feed(peer, 300_000)
	start := time.Now()
	buf := make([]byte, 10_000)
	for total := 0; total < 300_000; {
		n, err := m.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", total, err)
		}
		total += n
	}
	<-done
	if took := time.Since(start); took < 1800*time.Millisecond {
		t.Fatalf("300 KB at 100 KB/s with a 100 KB burst took %s, want about 2 s", took)
	}
}
