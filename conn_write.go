package main

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/coder/websocket"
)

// The writer: every write on a conn, the ping schedule and its pongs, and the
// one close handshake.

// writeLoop owns every write on the conn and the ping schedule. It returns
// after quit, once the close handshake is done.
func (c *conn) writeLoop(pingInterval, pingTimeout time.Duration) {
	ticker := time.NewTicker(pingInterval)
	defer ticker.Stop()
	c.pongDue = time.NewTimer(pingTimeout)
	c.pongDue.Stop()
	defer c.pongDue.Stop()
	for {
		select {
		case <-c.out.ready:
			c.writeQueued(pingTimeout)
		case <-ticker.C:
			c.ping(pingTimeout)
		case <-c.pongDue.C:
			c.pongDeadline()
		case <-c.quit:
			c.close(pingTimeout)
			return
		}
	}
}

// writeBatch bounds the frames written per wake-up, so that a queue that
// keeps refilling cannot hold off the ping schedule or the quit signal.
const writeBatch = 64

// writeQueued writes up to writeBatch queued frames, and asks to be woken
// again when frames remain. A peer that accepts no data for timeout is as dead
// as one that answers no ping: the write deadline keeps a full socket from
// holding the writer (and so the ping schedule and the close) forever.
func (c *conn) writeQueued(timeout time.Duration) {
	_ = c.raw.SetWriteDeadline(time.Now().Add(timeout))
	defer func() { _ = c.raw.SetWriteDeadline(time.Time{}) }()
	for range writeBatch {
		frame, ok := c.out.pop()
		if !ok {
			return
		}
		c.met.frameSent(frame)
		if err := c.ws.Write(context.Background(), websocket.MessageText, frame); err != nil {
			c.writeFailed(err)
			return
		}
	}
	if c.out.len() > 0 {
		select {
		case c.out.ready <- struct{}{}:
		default:
		}
	}
}

// writeFailed ends a conn whose write failed. A peer that accepted no data
// for the write deadline is as dead as one that misses a pong. Any other
// failure means the socket is going anyway, and the reader, which sees why
// (the client's own close frame, with its code, or a lost connection), names
// the reason: a client that closes with 1000 while frames are on their way to
// it said goodbye, and its session ends rather than going away.
func (c *conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.stop(reasonTimeout)
		return
	}
	_ = c.raw.Close() // the reader returns at once, with the reason
}

// close sends the goodbye and performs the single close handshake for the
// conn's reason, or drops the socket when the peer is presumed dead.
func (c *conn) close(timeout time.Duration) {
	if !c.reason.sendsClose {
		_ = c.ws.CloseNow()
		return
	}
	// The handshake gets timeout, not the library's own 5 s + 5 s: a peer
	// that neither reads nor answers is cut like one that misses a pong.
	_ = c.raw.SetDeadline(time.Now().Add(timeout))
	goodbye := encodeGoodbye(c.reason)
	c.met.frameSent(goodbye)
	if c.ws.Write(context.Background(), websocket.MessageText, goodbye) != nil {
		_ = c.ws.CloseNow()
		return
	}
	_ = c.ws.Close(c.reason.code, c.reason.word)
}
