package main

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// A session's JWT expires while it is connected (contract v2 §10): the
// client is warned TOKEN_REFRESH_WARNING before the token's exp, may send a
// fresher token in-band at any time, and a connection still on an expired
// token TOKEN_EXPIRY_GRACE after exp is closed with 4002, leaving its session
// away: a handshake with a fresh token resumes it. The JWT of a refresh is
// verified in the reader, so the hub spends no CPU on signatures; the hub
// keeps each session's token deadlines with one timer that sends it a message,
// as an away session's window does.

// Why a refresh_token was refused: the reason of an invalid_token error.
const (
	tokenMalformed    = "malformed"
	tokenBadSignature = "bad_signature"
	tokenExpired      = "expired"
	tokenUserMismatch = "user_mismatch"
)

// maxJWTLen bounds the token a refresh_token may carry: a browser's cookie
// (the handshake's other carrier) holds 4 KiB, so a real token is far shorter,
// and a longer one is refused before any parsing.
const maxJWTLen = 8 << 10

// decodeRefresh reads a refresh_token's data, which decodeStrict has checked
// is an object. The token is only checked to be a string: what is wrong with
// its contents is the verifier's to say, as invalid_token.
func decodeRefresh(data json.RawMessage) (string, *protoError) {
	var d struct {
		Token json.RawMessage `json:"token"`
	}
	var token string
	if json.Unmarshal(data, &d) != nil || isNull(d.Token) || json.Unmarshal(d.Token, &token) != nil {
		return "", &protoError{code: codeInvalidMessage, message: "data.token must be a string (a JWT)"}
	}
	return token, nil
}

// tokenExpiringData warns that the session's token runs out.
type tokenExpiringData struct {
	TokenExp    int64 `json:"token_exp"`
	ExpiresInMS int64 `json:"expires_in_ms"`
}

// tokenRefreshedData answers a valid refresh_token.
type tokenRefreshedData struct {
	TokenExp *int64 `json:"token_exp"`
}

// expJSON is how a token's exp goes on the wire: Unix seconds, or null when
// the token has none (0: a token whose exp is 0 is refused as expired).
func expJSON(exp int64) *int64 {
	if exp == 0 {
		return nil
	}
	return &exp
}

// encodeTokenExpiring builds token_expiring for a token with exp, which is
// left away from now (never negative: a late warning says 0).
func encodeTokenExpiring(exp int64, left time.Duration) []byte {
	return encode("token_expiring", "", tokenExpiringData{TokenExp: exp, ExpiresInMS: max(0, left.Milliseconds())})
}

// encodeTokenRefreshed builds token_refreshed, the reply to refresh_token id.
func encodeTokenRefreshed(id string, exp int64) []byte {
	return encode("token_refreshed", id, tokenRefreshedData{TokenExp: expJSON(exp)})
}

// parseJWT verifies token as the server's HS256 JWT. Its claims are filled
// in whenever the signature held, even when a claim (exp, nbf) made it invalid.
func (s *server) parseJWT(token string) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	_, err := s.jwtParser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) {
		return []byte(s.cfg.JWTSecret), nil
	})
	return claims, err
}

// expOf returns a verified token's exp in whole Unix seconds (a fraction is
// dropped, so the server never counts on more than the token grants), or 0
// when it has none.
func expOf(claims jwt.MapClaims) int64 {
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return 0
	}
	return exp.Unix()
}

// checkRefresh verifies the token of a refresh_token sent by a session of
// user, and returns its exp (0 for none), or why it is refused. Identity
// never changes in-band: an anonymous session is refused before any parsing.
// A token of another user is refused as such even when it has also expired.
// Runs on the reader.
func (s *server) checkRefresh(token string, user *int64) (int64, string) {
	if user == nil {
		return 0, tokenUserMismatch
	}
	if len(token) > maxJWTLen {
		return 0, tokenMalformed
	}
	claims, err := s.parseJWT(token)
	switch {
	case err == nil, errors.Is(err, jwt.ErrTokenInvalidClaims): // the signature held
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return 0, tokenBadSignature // another key, or another algorithm than HS256
	default:
		return 0, tokenMalformed
	}
	id, subErr := subjectID(claims["sub"])
	switch {
	case subErr != nil:
		return 0, tokenMalformed
	case id != *user:
		return 0, tokenUserMismatch
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet):
		return 0, tokenExpired // not valid now: past its exp, or before its nbf
	case err != nil:
		return 0, tokenMalformed // a claim of the wrong type
	}
	return expOf(claims), ""
}

// refreshToken answers a refresh_token: a refused token is told at once and
// changes nothing; a valid one goes to the hub, verified, for the session to
// take up. It reports false once the hub has stopped. Runs on the reader.
func (s *server) refreshToken(c *conn, cmd *command) bool {
	exp, reason := s.checkRefresh(cmd.token, c.userID)
	if reason == "" {
		s.met.refreshed(refreshOK) // verified here: the hub takes it up unless the conn is ending
	} else {
		s.met.refreshed(reason)
	}
	if reason != "" {
		c.out.offer(encodeError(&protoError{code: codeInvalidToken, id: cmd.id, reason: reason,
			message: "the token cannot replace this session's: " + reason}))
		return true
	}
	return s.hub.send(refreshMsg{c: c, sid: c.sid, id: cmd.id, exp: exp})
}

// refreshMsg carries a refresh_token the reader of conn c, serving session
// sid, has verified: exp (0 for none) governs the session from now on.
type refreshMsg struct {
	c   *conn
	sid string
	id  string
	exp int64
}

// tokenMsg says a deadline of session sid's token clock has come; gen tells
// it from the timer of an earlier schedule, which may arrive late.
type tokenMsg struct {
	sid string
	gen uint64
}

// tokenClock is the token state of a connected session whose token has an
// exp; sessions without one, and away sessions, have none. Owned by the hub
// goroutine.
type tokenClock struct {
	exp    int64       // Unix s
	warned bool        // token_expiring sent for this exp
	timer  *time.Timer // the next deadline: the warning, or the close
	gen    uint64
}

// newTokenClock returns the clock of a token with exp; nil for none.
func newTokenClock(exp int64) *tokenClock {
	if exp == 0 {
		return nil
	}
	return &tokenClock{exp: exp}
}

// armToken does what s's token calls for as of now, and sets its timer for
// the next deadline: the warning at exp - TOKEN_REFRESH_WARNING (sent at once
// when less is left), then the close at exp + TOKEN_EXPIRY_GRACE. Runs on
// the hub goroutine.
func (h *hub) armToken(s *session, now time.Time) {
	t := s.tok
	if t == nil || s.conn == nil {
		return
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.gen++
	exp := time.Unix(t.exp, 0)
	warnAt, closeAt := exp.Add(-h.cfg.tokenWarning), exp.Add(h.cfg.tokenGrace)
	next := warnAt
	switch {
	case !now.Before(closeAt):
		h.lost(s, reasonTokenExpired)
		return
	case t.warned || !now.Before(warnAt):
		if !t.warned {
			t.warned = true
			h.deliver(s, encodeTokenExpiring(t.exp, exp.Sub(now)))
		}
		next = closeAt
	}
	sid, gen := s.sid, t.gen
	t.timer = time.AfterFunc(next.Sub(now), func() { h.send(tokenMsg{sid: sid, gen: gen}) })
}

// stopToken stops and forgets s's token clock. Runs on the hub goroutine.
func (h *hub) stopToken(s *session) {
	if s.tok != nil && s.tok.timer != nil {
		s.tok.timer.Stop()
	}
	s.tok = nil
}

// moveToken gives to the token clock of from, whose conn to now serves: a
// resumed session is governed by the token its new connection's handshake
// proved, warned or not as that connection was. Runs on the hub goroutine.
func (h *hub) moveToken(from, to *session) {
	h.stopToken(to)
	to.tok, from.tok = from.tok, nil
	h.armToken(to, time.Now()) // stops from's timer: its message names from's sid
}

// tokenDue handles a token deadline's timer. A refresh, a resume or the
// session's end since it was set makes it a no-op. Runs on the hub goroutine.
func (h *hub) tokenDue(m tokenMsg) {
	if s := h.idx.sessions[m.sid]; s != nil && s.tok != nil && s.tok.gen == m.gen {
		h.armToken(s, time.Now())
	}
}

// refresh makes a verified token govern m's session: the reply, then the new
// token's schedule (whose warning may be due at once). Too late, after the
// conn was closed or replaced, it is a no-op. Runs on the hub goroutine.
func (h *hub) refresh(m refreshMsg) {
	s := h.idx.sessions[m.sid]
	if s == nil || s.conn != m.c {
		return
	}
	// The same exp again is the same schedule: its warning is not repeated,
	// or a client that answers each warning with the token it has would
	// loop on warning and refresh until the close.
	warned := s.tok != nil && s.tok.exp == m.exp && s.tok.warned
	h.stopToken(s)
	h.deliver(s, encodeTokenRefreshed(m.id, m.exp))
	s.tok = newTokenClock(m.exp)
	if s.tok != nil {
		s.tok.warned = warned
	}
	h.armToken(s, time.Now())
}
