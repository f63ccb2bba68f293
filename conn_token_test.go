package main

// End-to-end tests of token expiry while connected (contract v2 §10), over
// real clients with real HS256 tokens of a few seconds minted here, and short
// TOKEN_REFRESH_WARNING and TOKEN_EXPIRY_GRACE. A JWT's exp is in whole
// seconds, so every token's deadlines are worked out from the exp it carries.
// The rs* helpers are in conn_resume_test.go and conn_actions_test.go.

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// tkConfig is rsResilient with tokens accepted and the token timings given.
func tkConfig(t *testing.T, window, warning, grace time.Duration) config {
	cfg := rsResilient(t, window)
	cfg.JWTSecret = testSecret
	cfg.TokenRefreshWarning, cfg.TokenExpiryGrace = warning, grace
	return cfg
}

// tkMint is a token of user sub expiring at exp (Unix s; none when 0).
func tkMint(t *testing.T, sub string, exp int64) string {
	return mint(t, jwt.SigningMethodHS256, []byte(testSecret), tkClaims(sub, exp))
}

// tkExpIn is an exp at least d from now and less than a second more.
func tkExpIn(d time.Duration) int64 { return time.Now().Add(d).Unix() + 1 }

// tkAt is the instant exp + d.
func tkAt(exp int64, d time.Duration) time.Time { return time.Unix(exp, 0).Add(d) }

// tkDial dials with token in the query.
func tkDial(t *testing.T, s *testServer, token string) *rsClient {
	t.Helper()
	return rsDial(t, withQueryToken(s.url, token), nil)
}

// refresh sends refresh_token with id and token.
func (c *rsClient) refresh(id, token string) {
	c.send(e2eMsg("refresh_token", id, map[string]any{"token": token}))
}

// tkData is the data of token_expiring and token_refreshed.
type tkData struct {
	TokenExp    *int64 `json:"token_exp"`
	ExpiresInMS int64  `json:"expires_in_ms"`
}

// expectToken reads the next frame and checks it is typ with id and
// token_exp exp (null when 0).
func (c *rsClient) expectToken(typ, id string, exp int64) (rsFrame, tkData) {
	c.t.Helper()
	f := c.next(waitFor)
	keys := []string{"token_exp"}
	if typ == "token_expiring" {
		keys = append(keys, "expires_in_ms")
	}
	var d tkData
	if f.Type == typ {
		e2eWire(c.t, f.frame, &d, keys...)
	}
	if f.Type != typ || f.ID != id || (exp == 0) != (d.TokenExp == nil) || (exp != 0 && *d.TokenExp != exp) {
		c.t.Fatalf("got %s, want %s id %q token_exp %d", f.raw, typ, id, exp)
	}
	return f, d
}

// expectInvalidToken reads an error invalid_token with reason and id.
func (c *rsClient) expectInvalidToken(id, reason string) {
	c.t.Helper()
	f := c.expect("error")
	var e rsErr
	e2eWire(c.t, f.frame, &e, "code", "message", "reason")
	if f.ID != id || e.Code != "invalid_token" || e.Reason != reason || e.Message == "" {
		c.t.Fatalf("error %s id %q, want invalid_token reason %q id %q", f.Data, f.ID, reason, id)
	}
}

// expectErrorCode reads an error with code and id.
func (c *rsClient) expectErrorCode(id, code string) {
	c.t.Helper()
	f := c.expect("error")
	var e rsErr
	e2eWire(c.t, f.frame, &e, "code", "message")
	if f.ID != id || e.Code != code {
		c.t.Fatalf("error %s id %q, want %s id %q", f.Data, f.ID, code, id)
	}
}

// expectTokenGoodbye reads the connection to its end and checks it ends with
// goodbye 4002 token_expired resumable and close 4002 "token_expired"; it
// returns when the goodbye arrived and the frames before it.
func (c *rsClient) expectTokenGoodbye(within time.Duration) (time.Time, []rsFrame) {
	c.t.Helper()
	frames, ce := c.end(within)
	if len(frames) == 0 || frames[len(frames)-1].Type != "goodbye" {
		c.t.Fatalf("connection ended (close %d %q) without a goodbye; frames %v", ce.Code, ce.Reason, rsTypes(frames))
	}
	last := frames[len(frames)-1]
	if g := c.goodbye(last); g.Code != 4002 || g.Reason != "token_expired" || g.RetryAfterMS != nil || !g.Resumable {
		c.t.Fatalf("goodbye %s, want 4002 token_expired, retry_after_ms null, resumable", last.Data)
	}
	if ce.Code != 4002 || ce.Reason != "token_expired" {
		c.t.Fatalf("close %d %q, want 4002 token_expired", ce.Code, ce.Reason)
	}
	return last.at, frames[:len(frames)-1]
}

// TestTokenExpInSessionFrame: session.data.token_exp is the handshake
// token's exp, and null for a token without exp, for an anonymous session,
// and when the server has no JWT_SECRET (tokens are ignored).
func TestTokenExpInSessionFrame(t *testing.T) {
	s := startServer(t, tkConfig(t, time.Second, time.Minute, time.Minute))
	exp := tkExpIn(time.Hour)
	for _, tc := range []struct {
		name  string
		token string
		want  int64
	}{{"an exp", tkMint(t, "7", exp), exp}, {"no exp", tkMint(t, "7", 0), 0}, {"anonymous", "", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			var c *rsClient
			if tc.token == "" {
				c = rsDial(t, s.url, nil)
			} else {
				c = tkDial(t, s, tc.token)
			}
			if got := c.session.TokenExp; (got == nil) != (tc.want == 0) || (got != nil && *got != tc.want) {
				t.Fatalf("token_exp %v, want %d (0: null)", got, tc.want)
			}
			rsEnd(t, s, c)
		})
	}
	t.Run("no JWT_SECRET", func(t *testing.T) {
		cfg := tkConfig(t, time.Second, time.Minute, time.Minute)
		cfg.JWTSecret = ""
		s := startServer(t, cfg)
		if c := tkDial(t, s, tkMint(t, "7", exp)); c.session.TokenExp != nil || c.session.UserID != nil {
			t.Fatalf("session %+v, want anonymous with token_exp null", c.session)
		}
	})
}

// TestTokenWarningTiming: token_expiring {token_exp, expires_in_ms} comes at
// exp - TOKEN_REFRESH_WARNING, not before; when less than that is left at
// the handshake, at once after the session frame.
func TestTokenWarningTiming(t *testing.T) {
	t.Run("at exp - warning", func(t *testing.T) {
		warning := 1500 * time.Millisecond
		s := startServer(t, tkConfig(t, time.Second, warning, time.Minute))
		exp := tkExpIn(2 * time.Second)
		c := tkDial(t, s, tkMint(t, "7", exp))
		f, d := c.expectToken("token_expiring", "", exp)
		warnAt := tkAt(exp, -warning)
		if f.at.Before(warnAt) || f.at.After(warnAt.Add(e2eSlack)) {
			t.Fatalf("warned %s before exp, want %s", tkAt(exp, 0).Sub(f.at), warning)
		}
		if left := time.Duration(d.ExpiresInMS) * time.Millisecond; left > warning || left < warning-e2eSlack {
			t.Fatalf("expires_in_ms %d, want about %d", d.ExpiresInMS, warning.Milliseconds())
		}
		c.alive()
		rsEnd(t, s, c)
	})
	t.Run("at once when less is left", func(t *testing.T) {
		s := startServer(t, tkConfig(t, time.Second, time.Minute, time.Minute))
		exp := tkExpIn(2 * time.Second)
		dialled := time.Now()
		c := tkDial(t, s, tkMint(t, "7", exp))
		f, d := c.expectToken("token_expiring", "", exp)
		if late := f.at.Sub(dialled); late > e2eSlack {
			t.Fatalf("warned %s after the handshake, want at once", late)
		}
		if left := time.Until(tkAt(exp, 0)); d.ExpiresInMS <= 0 || time.Duration(d.ExpiresInMS+1)*time.Millisecond < left {
			t.Fatalf("expires_in_ms %d, with %s left now", d.ExpiresInMS, left)
		}
		c.alive()
		rsEnd(t, s, c)
	})
}

// TestTokenRefreshInTime: a refresh after the warning is answered
// token_refreshed with its id and the new exp, which governs from then: no
// close at the old exp + grace, a new warning at the new exp - warning; a
// refresh with a token without exp answers token_exp null, and nothing ends
// the connection after that. The other member hears nothing of it.
func TestTokenRefreshInTime(t *testing.T) {
	warning, grace := time.Second, 500*time.Millisecond
	s := startServer(t, tkConfig(t, 3*time.Second, warning, grace))
	game := uuid.NewString()
	exp1 := tkExpIn(time.Second)
	a, b := tkDial(t, s, tkMint(t, "7", exp1)), tkDial(t, s, tkMint(t, "9", 0))
	a.expectToken("token_expiring", "", exp1) // before the join: at once, or within a second
	rsJoinAll(t, game, a, b)

	exp2 := exp1 + 3
	a.refresh("r1", tkMint(t, "7", exp2))
	a.expectToken("token_refreshed", "r1", exp2)
	a.quiet(time.Until(tkAt(exp1, grace+300*time.Millisecond))) // the old token's close has passed
	f, _ := a.expectToken("token_expiring", "", exp2)
	if f.at.Before(tkAt(exp2, -warning)) {
		t.Fatalf("the new token was warned %s before its exp, want %s", tkAt(exp2, 0).Sub(f.at), warning)
	}
	a.refresh("r2", tkMint(t, "7", 0))
	a.expectToken("token_refreshed", "r2", 0)
	a.quiet(time.Until(tkAt(exp2, grace+300*time.Millisecond)))
	a.alive()
	b.alive() // nothing about a's token reached b
	rsHealthIs(t, s, 2, 0, map[string]int{game: 2})
	rsEnd(t, s, a, b)
}

// TestTokenRefreshRefused: refresh_token with another user's token, a
// malformed one, one signed with another key and an expired one each get
// error invalid_token with the reason and the id, and change nothing (the
// warning still comes for the handshake token's exp); a token that is not a
// string is invalid_message; an anonymous session gets user_mismatch even for
// a valid token; and refresh_token is rate limited like any message.
func TestTokenRefreshRefused(t *testing.T) {
	cfg := tkConfig(t, time.Second, 1500*time.Millisecond, time.Minute)
	s := startServer(t, cfg)
	exp := tkExpIn(2 * time.Second)
	c := tkDial(t, s, tkMint(t, "7", exp))
	ahead := tkExpIn(time.Hour)
	for _, tc := range []struct{ id, token, reason string }{
		{"other", tkMint(t, "8", ahead), "user_mismatch"},
		{"garbage", "not.a.jwt", "malformed"},
		{"key", mint(t, jwt.SigningMethodHS256, []byte("another-secret-of-some-length"), tkClaims("7", ahead)), "bad_signature"},
		{"stale", tkMint(t, "7", time.Now().Add(-time.Minute).Unix()), "expired"},
	} {
		c.refresh(tc.id, tc.token)
		c.expectInvalidToken(tc.id, tc.reason)
	}
	c.send(e2eMsg("refresh_token", "num", map[string]any{"token": 7}))
	c.expectErrorCode("num", "invalid_message")
	f, _ := c.expectToken("token_expiring", "", exp)
	if f.at.Before(tkAt(exp, -cfg.TokenRefreshWarning)) {
		t.Fatalf("warned %s before exp: a refused refresh changed the schedule", tkAt(exp, 0).Sub(f.at))
	}

	anon := rsDial(t, s.url, nil)
	anon.refresh("anon", tkMint(t, "7", ahead))
	anon.expectInvalidToken("anon", "user_mismatch")
	anon.alive()
	rsEnd(t, s, c, anon)

	t.Run("rate limited", func(t *testing.T) {
		cfg := tkConfig(t, time.Second, time.Minute, time.Minute)
		cfg.RateLimit, cfg.RateBurst = 0.1, 2
		s := startServer(t, cfg)
		c := tkDial(t, s, tkMint(t, "7", ahead))
		token := tkMint(t, "7", ahead)
		for _, id := range []string{"t1", "t2", "t3"} {
			c.refresh(id, token)
		}
		// The refusal is answered by the reader at once, perhaps before the
		// hub's replies: match by id.
		got := map[string]string{}
		for range 3 {
			f := c.next(waitFor)
			got[f.ID] = f.Type
			if f.ID == "t3" {
				var e rsErr
				if e2eWire(t, f.frame, &e, "code"); e.Code != "rate_limited" {
					t.Fatalf("t3 got %s, want rate_limited", f.raw)
				}
			}
		}
		if got["t1"] != "token_refreshed" || got["t2"] != "token_refreshed" || got["t3"] != "error" {
			t.Fatalf("replies %v, want t1 and t2 refreshed, t3 rate_limited", got)
		}
	})
}

// TestTokenExpiryClosesAndResumes: with no refresh, the connection gets
// goodbye 4002 token_expired (resumable) at exp + grace, after its warning;
// the other member hears away reason token_expired, and health counts the
// session away. A handshake with the expired token is refused (401), so it
// cannot resume; a fresh token of another user or none resumes nothing
// (user_mismatch); a fresh token of the same user gets the very session back,
// and its exp governs it.
func TestTokenExpiryClosesAndResumes(t *testing.T) {
	warning, grace := time.Second, 300*time.Millisecond
	s := startServer(t, tkConfig(t, 5*time.Second, warning, grace))
	game := uuid.NewString()
	exp := tkExpIn(time.Second)
	stale := tkMint(t, "7", exp)
	a, b := tkDial(t, s, stale), tkDial(t, s, tkMint(t, "9", 0))
	rsJoinAll(t, game, a, b)

	at, before := a.expectTokenGoodbye(waitFor)
	if closeAt := tkAt(exp, grace); at.Before(closeAt) || at.After(closeAt.Add(e2eSlack)) {
		t.Fatalf("closed %s after exp, want %s", at.Sub(tkAt(exp, 0)), grace)
	}
	if len(before) == 0 || before[0].Type != "token_expiring" {
		t.Fatalf("frames before the goodbye %v, want the warning first", rsTypes(before))
	}
	p := b.presence(game, a.session.SID, "away", "token_expired")
	if p.ResumeWindowMS == nil || *p.ResumeWindowMS != 5000 {
		t.Fatalf("away %+v, want resume_window_ms 5000", p)
	}
	rsHealthIs(t, s, 1, 1, map[string]int{game: 2})

	if code := dialStatus(t, withQueryToken(s.url, stale), nil); code != 401 {
		t.Fatalf("handshake with the expired token: HTTP %d, want 401", code)
	}
	for _, who := range []string{"8", ""} {
		c := rsJWTDial(t, s, who)
		c.send(rsResumeMsg("m", a.session.ResumeToken, nil))
		c.expectResumeFailed("m", "user_mismatch")
		_ = c.ws.Close(websocket.StatusNormalClosure, "")
	}
	fresh := tkExpIn(time.Hour)
	a2 := tkDial(t, s, tkMint(t, "7", fresh))
	if a2.session.TokenExp == nil || *a2.session.TokenExp != fresh {
		t.Fatalf("new connection's token_exp %v, want %d", a2.session.TokenExp, fresh)
	}
	a2.resume("back", a.session.ResumeToken, nil, a)
	b.presence(game, a.session.SID, "back", "")
	a2.alive()
	rsHealthIs(t, s, 2, 0, map[string]int{game: 2})
	rsEnd(t, s, a2, b)
}

// TestTokenExpiryWithoutWindow: with RESUME_WINDOW=0 the close is the same
// (goodbye 4002 token_expired), and the session ends: the other member hears
// left with reason token_expired, and health forgets it.
func TestTokenExpiryWithoutWindow(t *testing.T) {
	s := startServer(t, tkConfig(t, 0, time.Second, 200*time.Millisecond))
	game := uuid.NewString()
	a, b := tkDial(t, s, tkMint(t, "7", tkExpIn(time.Second))), tkDial(t, s, tkMint(t, "9", 0))
	rsJoinAll(t, game, a, b)
	a.expectTokenGoodbye(waitFor)
	b.presence(game, a.session.SID, "left", "token_expired")
	rsHealthIs(t, s, 1, 0, map[string]int{game: 1})
	rsEnd(t, s, b)
}

// TestRefreshTokenIsNotActivity: a session that does nothing but refresh its
// token still expires SESSION_TIMEOUT after its last activity (the
// handshake), with its warning first, every refresh answered meanwhile.
func TestRefreshTokenIsNotActivity(t *testing.T) {
	cfg := tkConfig(t, time.Second, time.Minute, time.Minute)
	cfg.SessionTimeout, cfg.ExpiryWarning, cfg.ExpiryCheckInterval = 2*time.Second, time.Second, 20*time.Millisecond
	s := startServer(t, cfg)
	t0 := time.Now()
	a := tkDial(t, s, tkMint(t, "7", tkExpIn(time.Hour)))
	msg := []byte(e2eMsg("refresh_token", "r", map[string]any{"token": tkMint(t, "7", tkExpIn(time.Hour))}))
	go func() { // a refresh every 200 ms until the connection ends; errors end it
		for {
			select {
			case <-a.done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			err := a.ws.Write(ctx, websocket.MessageText, msg)
			cancel()
			if err != nil {
				return
			}
		}
	}()
	frames := a.expectGoodbye(cfg.SessionTimeout+waitFor, 4000, "expired", false)
	at := time.Now()
	refreshed, warned := 0, 0
	for _, f := range frames {
		switch f.Type {
		case "token_refreshed":
			refreshed++
		case "session_expiring":
			warned++
		default:
			t.Fatalf("got %s before expiry", f.raw)
		}
	}
	if refreshed < 5 || warned != 1 {
		t.Fatalf("%d token_refreshed and %d session_expiring before expiry, want several and one", refreshed, warned)
	}
	if late := t0.Add(cfg.SessionTimeout + cfg.ExpiryCheckInterval + e2eSlack); at.Before(t0.Add(cfg.SessionTimeout)) || at.After(late) {
		t.Fatalf("expired %s after the handshake, want within [%s, %s]", at.Sub(t0), cfg.SessionTimeout, late.Sub(t0))
	}
	rsHealthIs(t, s, 0, 0, map[string]int{})
}
