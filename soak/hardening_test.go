package soak

// Shared by the hardening tests (hardening_*_test.go): a raw WebSocket client
// that writes its own frames over a net.Conn, for what a well-behaved library
// will not send (a ping flood, endless empty fragments, ten thousand messages
// in one write), and the server's memory figures from /proc.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"dugout/internal/servertest"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// rawMask is the masking key of every frame the raw client sends. A client
// must mask; a fixed key lets a frame be built once and written many times.
var rawMask = [4]byte{0x5a, 0x1f, 0xc3, 0x96}

// appendFrame appends one masked client frame to b.
func appendFrame(b []byte, fin bool, op byte, payload []byte) []byte {
	h := op
	if fin {
		h |= 0x80
	}
	b = append(b, h)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, rawMask[:]...)
	for i, c := range payload {
		b = append(b, c^rawMask[i%4])
	}
	return b
}

// rawConn is one WebSocket session driven frame by frame. Writes are the
// caller's (one goroutine at a time); reads are the reader's once started.
type rawConn struct {
	nc  net.Conn
	br  *bufio.Reader
	sid string

	wmu sync.Mutex // serialises writes from the test and a writer goroutine

	done chan struct{} // closed when the reader has returned
	err  error         // why the reader stopped; read after done
}

// dialRaw performs the opening handshake by hand and reads the session frame,
// all within timeout.
func dialRaw(p *servertest.Proc, timeout time.Duration) (*rawConn, error) {
	nc, err := net.DialTimeout("tcp", p.Addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	k := base64.StdEncoding.EncodeToString(key)
	if _, err := fmt.Fprintf(nc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", p.Addr, k); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake response: %w", err)
	}
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		nc.Close()
		return nil, fmt.Errorf("handshake: HTTP %d, Sec-WebSocket-Accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	c := &rawConn{nc: nc, br: br, done: make(chan struct{})}
	op, payload, err := c.readFrame()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading the session frame: %w", err)
	}
	var f frameIn
	if op != opText || json.Unmarshal(payload, &f) != nil || f.Type != "session" || f.Data.SID == "" {
		nc.Close()
		return nil, fmt.Errorf("first frame (opcode %d) is not a session frame: %.200q", op, payload)
	}
	c.sid = f.Data.SID
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// readFrame reads one server frame. dugout writes every message as one
// unmasked frame, so anything else is an error.
func (c *rawConn) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("server frame header % x: fragmented or masked", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 2<<20 {
		return 0, nil, fmt.Errorf("server frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// write writes b (frames built by appendFrame) within timeout and returns
// how much of it was written.
func (c *rawConn) write(b []byte, timeout time.Duration) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	return c.nc.Write(b)
}

// send writes one text message within timeout.
func (c *rawConn) send(msg string, timeout time.Duration) error {
	_, err := c.write(appendFrame(nil, true, opText, []byte(msg)), timeout)
	return err
}

// closeFrame is a close frame as the raw reader saw it.
type closeFrame struct {
	code   int // -1 when none arrived
	reason string
	at     int64 // on epoch's clock
}

func (cf closeFrame) String() string {
	if cf.code < 0 {
		return "no close frame"
	}
	return fmt.Sprintf("%d %q", cf.code, cf.reason)
}

// startReader reads frames on its own goroutine until the connection ends
// and hands each to handle with its arrival time; a close frame is handed
// over too (its payload as read). handle runs on that one goroutine.
func (c *rawConn) startReader(handle func(op byte, payload []byte, at int64)) {
	go func() {
		defer close(c.done)
		for {
			op, payload, err := c.readFrame()
			if err != nil {
				c.err = err
				return
			}
			handle(op, payload, now())
		}
	}()
}

// stopReader closes the connection and waits for the reader to return.
func (c *rawConn) stopReader() {
	c.nc.Close()
	<-c.done
}

// parseClose decodes a close frame's payload.
func parseClose(payload []byte, at int64) closeFrame {
	if len(payload) < 2 {
		return closeFrame{code: 1005, at: at}
	}
	return closeFrame{code: int(binary.BigEndian.Uint16(payload)), reason: string(payload[2:]), at: at}
}

// finish answers the server's close with code (the client's half of the
// handshake) and waits, within timeout, for the server to close the TCP
// connection; then it closes ours and waits for the reader. It reports
// whether the server closed within timeout.
func (c *rawConn) finish(code int, timeout time.Duration) bool {
	_, _ = c.write(appendFrame(nil, true, opClose, binary.BigEndian.AppendUint16(nil, uint16(code))), time.Second)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	closed := true
	select {
	case <-c.done:
	case <-timer.C:
		closed = false
	}
	c.nc.Close()
	<-c.done
	return closed && (errors.Is(c.err, io.EOF) || errors.Is(c.err, net.ErrClosed) || isReset(c.err))
}

// isReset reports whether err is the peer resetting the connection.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// procMem is the server's resident memory, now and at its peak, from
// /proc/<pid>/status.
type procMem struct{ rss, hwm int64 }

func readProcMem(p *servertest.Proc) (procMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return procMem{}, err
	}
	var m procMem
	for _, line := range strings.Split(string(b), "\n") {
		for name, into := range map[string]*int64{"VmRSS:": &m.rss, "VmHWM:": &m.hwm} {
			if rest, ok := strings.CutPrefix(line, name); ok {
				var kb int64
				if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
					return procMem{}, err
				}
				*into = kb << 10
			}
		}
	}
	if m.rss == 0 || m.hwm == 0 {
		return procMem{}, fmt.Errorf("no VmRSS or VmHWM in /proc/%d/status", p.Cmd.Process.Pid)
	}
	return m, nil
}
