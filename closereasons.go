package main

// How a connection ends: the close-reason table (code, goodbye word, what the
// room hears, whether the session goes away), the presence words it uses, and
// the goodbye frame that precedes every close the server makes.

import (
	"time"

	"github.com/coder/websocket"
)

// closeReason says why a conn ends: what the peer is told, whether its
// session ends or only goes away, and what the room hears. Every way a
// connection can end is one row of the table below; no close code, goodbye
// word or presence reason is spelled anywhere else.
type closeReason struct {
	code       websocket.StatusCode
	word       string // the goodbye's reason and the close frame's text; "" when no close frame is sent
	presence   string // the left reason the room hears when the session ends ("" for none: a takeover)
	sendsClose bool   // false when the peer is presumed dead and gets no close frame
	// away is the reason the room hears when the session survives its conn,
	// away for RESUME_WINDOW; "" when the conn's end ends the session.
	away      string
	resumable bool // what the goodbye tells the client
	// retryAfterMS is the goodbye's retry_after_ms; -1 sends null.
	retryAfterMS int64
}

// The close-reason table (contract v2 §3, §6). A connection lost without a
// close frame is logged as 1006; a peer that closed gets peerClosed.
var (
	reasonDisconnected = closeReason{code: websocket.StatusAbnormalClosure, presence: presenceDisconnected,
		away: presenceDisconnected, retryAfterMS: -1}
	reasonTimeout = closeReason{code: websocket.StatusAbnormalClosure, presence: presenceTimeout,
		away: presenceTimeout, retryAfterMS: -1}
	reasonSlow = closeReason{code: websocket.StatusPolicyViolation, word: "slow_consumer", presence: presenceDisconnected,
		sendsClose: true, away: presenceSlowConsumer, resumable: true, retryAfterMS: -1}
	reasonExpired   = closeReason{code: 4000, word: "expired", presence: presenceExpired, sendsClose: true, retryAfterMS: -1}
	reasonTakenOver = closeReason{code: 4001, word: "taken_over", sendsClose: true, retryAfterMS: -1}
	reasonShutdown  = closeReason{code: websocket.StatusGoingAway, word: "shutdown", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: 0}
	// In a cluster a shutdown hands every session over to the other nodes,
	// and a node declared dead gives up its conns the same way: the client
	// resumes elsewhere.
	reasonHandOver = closeReason{code: websocket.StatusGoingAway, word: "shutdown", presence: presenceDisconnected,
		sendsClose: true, resumable: true, retryAfterMS: 0}
	reasonTooBig = closeReason{code: websocket.StatusMessageTooBig, word: "too_big", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: -1}
	reasonBinary = closeReason{code: websocket.StatusUnsupportedData, word: "binary", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: -1}
	reasonFlood = closeReason{code: websocket.StatusPolicyViolation, word: "rate_limited", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: -1}
	// The session outlives a token that ran out: a fresh token resumes it.
	// With RESUME_WINDOW=0 it ends, and its games hear left for the same reason.
	reasonTokenExpired = closeReason{code: 4002, word: "token_expired", presence: presenceTokenExpired,
		sendsClose: true, away: presenceTokenExpired, resumable: true, retryAfterMS: -1}
)

// peerClosed is the reason of a connection the client ended with a close frame
// carrying code. 1000 is a goodbye: the session ends as disconnected. Any
// other code (a browser closing or reloading a tab sends 1001) leaves the
// session away, resumable. Either way the log shows the client's code.
func peerClosed(code websocket.StatusCode) closeReason {
	r := closeReason{code: code, presence: presenceDisconnected, retryAfterMS: -1}
	if code != websocket.StatusNormalClosure {
		r.away = presenceDisconnected
	}
	return r
}

// withRetry returns r telling the client to come back after d.
func (r closeReason) withRetry(d time.Duration) closeReason {
	r.retryAfterMS = d.Milliseconds()
	return r
}

// Presence words: why a member is no longer in a game.
const (
	presenceLeft         = "left"
	presenceDisconnected = "disconnected"
	presenceExpired      = "expired"
	presenceTimeout      = "timeout"
	presenceSlowConsumer = "slow_consumer"
	presenceTokenExpired = "token_expired"
	presenceKicked       = "kicked"     // the backend kicked the seat (§8)
	presenceSuperseded   = "superseded" // a newer session of the same user took the seat (§8)
)

// goodbyeData tells a client, before the server closes its connection, why
// and what to do next.
type goodbyeData struct {
	Code         int    `json:"code"`
	Reason       string `json:"reason"`
	RetryAfterMS *int64 `json:"retry_after_ms"`
	Resumable    bool   `json:"resumable"`
}

// encodeGoodbye builds the goodbye for r.
func encodeGoodbye(r closeReason) []byte {
	d := goodbyeData{Code: int(r.code), Reason: r.word, Resumable: r.resumable}
	if r.retryAfterMS >= 0 {
		d.RetryAfterMS = &r.retryAfterMS
	}
	return encode("goodbye", "", d)
}
