package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Every test server serves through front (startServer, run), so the whole
// suite's handshakes are read by it; these tests are its own edges: what it
// passes on to net/http, what it refuses, and what it must not hold.

// upgradeRequest is a WebSocket handshake for /ws, as a browser sends it.
func upgradeRequest(host string) string {
	return "GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// maskedText is a client's text frame (masked, with a zero key, so the
// payload is as written).
func maskedText(payload string) []byte {
	b := []byte{0x81}
	if len(payload) < 126 {
		b = append(b, 0x80|byte(len(payload)))
	} else {
		b = append(b, 0x80|126, byte(len(payload)>>8), byte(len(payload)))
	}
	b = append(b, 0, 0, 0, 0)
	return append(b, payload...)
}

// readTextFrame reads the next text frame from the server, past its pings,
// with the shutdown tests' hand-written frame reader.
func readTextFrame(t *testing.T, br *bufio.Reader) frame {
	t.Helper()
	p := &rawPeer{br: br}
	for {
		op, payload, err := p.readFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if op == 0x9 { // a ping
			continue
		}
		if op != 0x1 {
			t.Fatalf("frame opcode %#x, want a text frame: %q", op, payload)
		}
		var f frame
		if err := json.Unmarshal(payload, &f); err != nil {
			t.Fatalf("frame %q: %v", payload, err)
		}
		return f
	}
}

// rawDial opens a TCP connection to addr that gives up after waitFor.
func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	return nc
}

// expectUpgrade reads a 101 and the session frame from br.
func expectUpgrade(t *testing.T, br *bufio.Reader) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") == "" {
		t.Fatalf("handshake answered %d %v, want 101 with Sec-WebSocket-Accept", resp.StatusCode, resp.Header)
	}
	if f := readTextFrame(t, br); f.Type != "session" {
		t.Fatalf("first frame %q, want session", f.Type)
	}
}

// TestFrontReadsFramesSentBehindTheHandshake checks that a client's frames in
// the same packet as its handshake are served: front's reader, which read
// the request and may hold them, is the one the session reads with.
func TestFrontReadsFramesSentBehindTheHandshake(t *testing.T) {
	s := startServer(t, testConfig(t))
	addr := s.ts.Listener.Addr().String()
	nc := rawDial(t, addr)
	msg := append([]byte(upgradeRequest(addr)), maskedText(`{"type":"heartbeat","id":"behind"}`)...)
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	expectUpgrade(t, br)
	if f := readTextFrame(t, br); f.Type != "heartbeat_ack" || f.ID != "behind" {
		t.Fatalf("got %s %q, want heartbeat_ack behind", f.Type, f.ID)
	}
}

// TestFrontPassesOtherRequestsOn checks that what is not a connection's first
// request to /ws reaches net/http whole, the bytes front read included, on
// the server as run() builds it: other paths and methods get the mux's
// answers, and an upgrade after a plain request on a kept-alive connection
// is served by net/http's route to serveWS.
func TestFrontPassesOtherRequestsOn(t *testing.T) {
	r := startRun(t, testConfig(t))
	for _, row := range []struct {
		name, request string
		want          int
	}{
		{"another path", "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusOK},
		{"a path that begins like /ws", "GET /wsx HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusNotFound},
		{"below /ws", "GET /ws/ HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusNotFound},
		{"another method", "POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", http.StatusMethodNotAllowed},
	} {
		t.Run(row.name, func(t *testing.T) {
			nc := rawDial(t, r.addr)
			if _, err := io.WriteString(nc, row.request); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != row.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, row.want)
			}
		})
	}
	t.Run("an upgrade after a plain request", func(t *testing.T) {
		nc := rawDial(t, r.addr)
		br := bufio.NewReader(nc)
		if _, err := io.WriteString(nc, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /livez: %v %v", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if _, err := io.WriteString(nc, upgradeRequest(r.addr)); err != nil {
			t.Fatal(err)
		}
		expectUpgrade(t, br)
		if _, err := nc.Write(maskedText(`{"type":"heartbeat","id":"kept"}`)); err != nil {
			t.Fatal(err)
		}
		if f := readTextFrame(t, br); f.Type != "heartbeat_ack" || f.ID != "kept" {
			t.Fatalf("got %s %q, want heartbeat_ack kept", f.Type, f.ID)
		}
	})
}

// TestFrontRefusals checks the answers to handshakes front reads but that are
// not upgraded: net/http's statuses, a body, and the connection closed
// after it, as "Connection: close" says. (Headers past run()'s limit get 431
// in TestHostileOversizedQueryRealServer, the library's refusals their
// statuses in TestHostileHandshakes.)
func TestFrontRefusals(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	s := startServer(t, cfg)
	addr := s.ts.Listener.Addr().String()
	for _, row := range []struct {
		name, request string
		want          int
	}{
		{"a malformed header line", "GET /ws HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", http.StatusBadRequest},
		{"no Host", strings.Replace(upgradeRequest(addr), "Host: "+addr+"\r\n", "", 1), http.StatusBadRequest},
		{"two Hosts", strings.Replace(upgradeRequest(addr), "Host: ", "Host: a\r\nHost: ", 1), http.StatusBadRequest},
		{"HTTP/2 by name", strings.Replace(upgradeRequest(addr), "HTTP/1.1", "HTTP/2.0", 1), http.StatusHTTPVersionNotSupported},
		{"a bad token", strings.Replace(upgradeRequest(addr), "/ws", "/ws?token=bad", 1), http.StatusUnauthorized},
	} {
		t.Run(row.name, func(t *testing.T) {
			nc := rawDial(t, addr)
			go func() { _, _ = io.WriteString(nc, row.request) }() // a refusal may come before the whole request is read
			br := bufio.NewReader(nc)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("body: %v", err)
			}
			if resp.StatusCode != row.want || len(body) == 0 || !resp.Close {
				t.Fatalf("HTTP %d close=%t body %q, want %d, a body, and Connection: close", resp.StatusCode, resp.Close, body, row.want)
			}
			if n, err := br.Read(make([]byte, 1)); err == nil {
				t.Fatalf("read %d bytes after the answer, want the connection closed", n)
			}
		})
	}
}

// TestFrontReadsLongRequests checks that a handshake longer than front's
// 1 KiB reader (a browser's cookies) is read whole and upgraded.
func TestFrontReadsLongRequests(t *testing.T) {
	s := startServer(t, testConfig(t))
	addr := s.ts.Listener.Addr().String()
	nc := rawDial(t, addr)
	request := strings.Replace(upgradeRequest(addr), "\r\n\r\n", "\r\nCookie: a="+strings.Repeat("c", 6000)+
		"\r\nX-Other: "+strings.Repeat("o", 3000)+"\r\n\r\n", 1)
	if _, err := io.WriteString(nc, request); err != nil {
		t.Fatal(err)
	}
	expectUpgrade(t, bufio.NewReader(nc))
}

// frontParts is a server and a loopback listener for a test to put a front
// of its own on, both ended with the test.
func frontParts(t *testing.T) (*server, net.Listener) {
	t.Helper()
	cfg := testConfig(t)
	s := newServer(cfg, zerolog.New(io.Discard))
	t.Cleanup(func() { _ = s.shutdown(cfg.ShutdownTimeout, func(context.Context) error { return nil }) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return s, ln
}

// TestFrontHandsItsCountToNetHTTP checks that a connection passed on stops
// counting as front's in the plain-HTTP reserve once net/http counts it:
// counted twice, every plain request would leave the reserve one fuller, and
// in time it would evict every connection that has not yet sent a request.
func TestFrontHandsItsCountToNetHTTP(t *testing.T) {
	s, ln := frontParts(t)
	plain := newPlainConns(0)
	srv := &http.Server{Handler: s.routes(), ConnState: plain.track}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(newFront(ln, s, plain, time.Minute, maxHeaderBytes)) }()
	t.Cleanup(func() { _ = srv.Close(); <-served })
	for range 3 {
		nc := rawDial(t, ln.Addr().String())
		if _, err := io.WriteString(nc, "GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, nc); err != nil { // the answer, then net/http's close
			t.Fatal(err)
		}
		nc.Close()
	}
	eventually(t, "no plain connection counted once all are closed", func() bool {
		plain.mu.Lock()
		defer plain.mu.Unlock()
		return plain.open == 0
	})
}

// TestFrontCloseEndsWhatItReads checks that closing front (net/http's
// Shutdown closes its listener) ends at once the connections whose request
// it is still reading, as Shutdown closes net/http's idle ones, instead of
// leaving them to HTTP_TIMEOUT; TestMain's leak check sees their goroutines.
func TestFrontCloseEndsWhatItReads(t *testing.T) {
	s, ln := frontParts(t)
	f := newFront(ln, s, newPlainConns(0), time.Hour, maxHeaderBytes)
	addr := ln.Addr().String()
	silent, partial := rawDial(t, addr), rawDial(t, addr)
	if _, err := io.WriteString(partial, "GET /ws HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "front reading both", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.reading) == 2
	})
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close still waiting on connections that have sent no whole request")
	}
	for _, nc := range []net.Conn{silent, partial} {
		if _, err := nc.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection front was reading is still open")
		}
	}
	if _, err := f.Accept(); err == nil {
		t.Fatal("Accept after Close returned a connection")
	}
}

// TestFrontCountsWhatItReadsAsPlain checks that a connection front is still
// reading counts against the plain-HTTP reserve (httpconns.go) and is cut to make room once
// it has waited plainGrace, as one net/http holds is: otherwise connections
// that send nothing would take the descriptors kept for the probes.
func TestFrontCountsWhatItReadsAsPlain(t *testing.T) {
	s, ln := frontParts(t)
	plain := newPlainConns(2)
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); plain.watch(ctx) }()
	f := newFront(ln, s, plain, time.Hour, maxHeaderBytes)
	t.Cleanup(func() { _ = f.Close(); cancel(); <-watched })
	conns := []net.Conn{rawDial(t, ln.Addr().String()), rawDial(t, ln.Addr().String()), rawDial(t, ln.Addr().String())}
	eventually(t, "one of 3 silent connections cut (the limit is 2)", func() bool {
		cut := 0
		for _, nc := range conns {
			if closedNow(nc) {
				cut++
			}
		}
		return cut == 1
	})
}

// closedNow says whether the server has closed nc, without waiting for it to.
func closedNow(nc net.Conn) bool {
	_ = nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := nc.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
