package main

// Shutdown: every conn closed with going-away once the server has stopped
// accepting, and a frozen peer (rawPeer, a client written by hand that answers
// nothing) held to SHUTDOWN_TIMEOUT.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// joinAll joins every client to game in turn, reading the reply and the
// presence each earlier member receives, so no frame is left unread.
func joinAll(t *testing.T, game string, clients ...*client) {
	t.Helper()
	for i, c := range clients {
		c.send(`{"type":"join_game","id":"j","data":{"game_id":"` + game + `"}}`)
		c.expect("game_joined")
		for _, earlier := range clients[:i] {
			earlier.expect("presence")
		}
	}
}

func TestShutdownClosesEveryConnWithGoingAway(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute // no ping in flight to muddle the close
	cfg.ShutdownTimeout = 5 * time.Second
	r := startRun(t, cfg)
	url := "ws://" + r.addr + "/ws"
	players := []*client{dial(t, url, nil), dial(t, url, nil), dial(t, url, nil)}
	joinAll(t, "0b6c5a8e-3f21-4c1d-9e7a-2d4b6f8a1c3e", players...)
	idle := dial(t, url, nil) // in no game
	everyone := append(players, idle)

	start := time.Now()
	r.cancel()
	for i, c := range everyone {
		if code := c.expectClose(cfg.ShutdownTimeout); code != websocket.StatusGoingAway {
			t.Fatalf("client %d: close code %d, want %d (going away)", i, code, websocket.StatusGoingAway)
		}
	}
	// Going-away is sent only after the HTTP server has stopped accepting.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if ws, resp, err := websocket.Dial(ctx, url, nil); err == nil {
		_ = ws.CloseNow()
		t.Fatal("a handshake after shutdown began was accepted")
	} else if resp != nil && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a handshake after shutdown began got HTTP %d", resp.StatusCode)
	}
	if err := r.wait(t, cfg.ShutdownTimeout); err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}
	if elapsed := time.Since(start); elapsed > cfg.ShutdownTimeout {
		t.Fatalf("shutdown took %s, more than SHUTDOWN_TIMEOUT %s", elapsed, cfg.ShutdownTimeout)
	}
	for _, c := range everyone {
		_ = c.ws.CloseNow()
	}
	goleak.VerifyNone(t, ignore)
}

// rawPeer is a WebSocket client written by hand on a TCP socket, so that a
// test can make it go silent: it answers nothing, not even the close handshake.
type rawPeer struct {
	nc net.Conn
	br *bufio.Reader
}

// dialRaw performs the opening handshake by hand at addr (host:port) and reads
// the session frame, which proves the server registered the session.
func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	nc := rawDial(t, addr)
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", addr, base64.StdEncoding.EncodeToString(key))
	p := &rawPeer{nc: nc, br: bufio.NewReader(nc)}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		t.Fatalf("raw handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw handshake: HTTP %d", resp.StatusCode)
	}
	op, payload, err := p.readFrame()
	if err != nil || op != 1 || !bytes.Contains(payload, []byte(`"session"`)) {
		t.Fatalf("raw peer's first frame: opcode %d %q %v", op, payload, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return p
}

// readFrame reads one unmasked server frame and returns its opcode and payload.
func (p *rawPeer) readFrame() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(p.br, ext[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(p.br, ext[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(p.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// closeCode reads what the server has sent since the peer went silent and
// returns the code of its close frame, and whether the server then cut the socket.
func (p *rawPeer) closeCode(within time.Duration) (code int, cut bool, err error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(within))
	code = -1
	for {
		op, payload, err := p.readFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return code, true, nil
		}
		if err != nil {
			return code, false, err
		}
		if op == 8 && len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
	}
}

func TestShutdownWithAFrozenPeerFitsTheBudget(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute
	cfg.ShutdownTimeout = time.Second
	r := startRun(t, cfg)
	game := "5d2f7a10-8c4b-4e3a-b1f6-9a0c2e4d6b8f"
	live := dial(t, "ws://"+r.addr+"/ws", nil)
	joinAll(t, game, live)
	frozen := dialRaw(t, r.addr) // from here on it never reads, nor answers a close

	start := time.Now()
	r.cancel()
	if code := live.expectClose(cfg.ShutdownTimeout); code != websocket.StatusGoingAway {
		t.Fatalf("live client: close code %d, want %d", code, websocket.StatusGoingAway)
	}
	if r.returned() {
		t.Fatal("run returned before the frozen peer was dealt with: the test observed nothing")
	}
	// The frozen peer holds shutdown up, yet the live client was told at once.
	err := r.wait(t, cfg.ShutdownTimeout+waitFor)
	elapsed := time.Since(start)
	if err != nil {
		t.Errorf("run returned %v, want nil", err)
	}
	if elapsed > cfg.ShutdownTimeout {
		t.Errorf("shutdown took %s with a frozen peer, more than SHUTDOWN_TIMEOUT %s", elapsed, cfg.ShutdownTimeout)
	}
	t.Logf("shutdown with a frozen peer took %s", elapsed)
	code, cut, err := frozen.closeCode(waitFor)
	if err != nil {
		t.Fatalf("frozen peer's socket: %v", err)
	}
	if code != int(websocket.StatusGoingAway) || !cut {
		t.Fatalf("frozen peer got close code %d, socket cut %t; want %d and cut", code, cut, websocket.StatusGoingAway)
	}
	_ = live.ws.CloseNow()
	_ = frozen.nc.Close()
	goleak.VerifyNone(t, ignore)
}
