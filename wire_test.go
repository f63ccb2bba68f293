package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
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

// readStream reads from m with a 1 KiB buffer, as the library's bufio does,
// until it has want bytes or an error.
func readStream(m *meteredConn, want int) ([]byte, error) {
	buf := make([]byte, readBufferSize)
	var got []byte
	for len(got) < want {
		n, err := m.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

// TestMeteredConnTakesPongs: the library reads the client's stream without
// its pongs, whether they arrive whole, cut across reads, or partly among the
// bytes net/http read ahead of the handshake; the pongs are not counted in
// the message budget; and the stream is otherwise handed on byte for byte.
func TestMeteredConnTakesPongs(t *testing.T) {
	m, peer := pipeMeter(t, 1_000)
	var seqs []uint64
	m.pong = func(seq uint64) { seqs = append(seqs, seq) }
	key := [4]byte{3, 1, 4, 1}
	text := clientFrame(0x81, []byte(`{"type":"heartbeat"}`), key, false)
	first := clientFrame(0x01, bytes.Repeat([]byte("q"), 1500), key, false) // a message in two fragments
	last := clientFrame(0x80, bytes.Repeat([]byte("r"), 1500), key, false)
	big := append(slices.Clone(first), last...)
	m.pending = append(slices.Clone(text), pongFrame(1)[:5]...) // read ahead: a message and part of a pong
	var rest [][]byte
	rest = append(rest, pongFrame(1)[5:], pongFrame(2)[:1], pongFrame(2)[1:], first[:700], first[700:])
	for range 200 { // many more pong bytes than the budget, between the fragments of a message
		rest = append(rest, pongFrame(3))
	}
	rest = append(rest, last[:3], last[3:])
	go func() {
		for _, b := range rest {
			if _, err := peer.Write(b); err != nil {
				return
			}
		}
	}()
	m.budget = int64(len(text)+len(big)) + 10 // the messages fit; with their pongs counted they would not
	want := append(slices.Clone(text), big...)
	got, err := readStream(m, len(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes (%v), want the %d bytes of the two messages", len(got), err, len(want))
	}
	if len(seqs) != 202 || seqs[0] != 1 || seqs[1] != 2 || seqs[201] != 3 {
		t.Fatalf("took %d pongs (%v…), want 202: 1, 2, then 3s", len(seqs), seqs[:min(3, len(seqs))])
	}
}

// TestMeteredConnStoppedCountsPongs: once the conn is stopped, pongs count
// against the close budget like every other byte: a client ended for
// flooding pongs cannot keep the reader reading them.
func TestMeteredConnStoppedCountsPongs(t *testing.T) {
	m, peer := pipeMeter(t, 1<<20)
	m.pong = func(uint64) {}
	m.ending()
	flood := bytes.Repeat(pongFrame(9), 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := peer.Write(flood); err != nil {
				return
			}
		}
	}()
	_, err := readStream(m, 1)
	_ = peer.Close()
	<-done
	if !errors.Is(err, errWireBudget) {
		t.Fatalf("read ended with %v, want errWireBudget", err)
	}
	if n := m.read.Load(); n > closeReadBudget+int64(readBufferSize) {
		t.Fatalf("read %d bytes of pongs after stop, want at most closeReadBudget %d", n, closeReadBudget)
	}
}
