package main

// Tests of the token lifecycle's parts (contract v2 §10) without a network:
// decoding refresh_token, the verdict on its JWT (every invalid_token
// reason), and the hub's token clock under testing/synctest at the contract's
// default timings. The end-to-end tests are in conn_token_test.go.

import (
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

func TestDecodeRefreshToken(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		token     string // when it decodes
		code      string // when it does not
	}{
		{name: "a token with an id", msg: `{"type":"refresh_token","id":"t1","data":{"token":"a.b.c"}}`, token: "a.b.c"},
		{name: "an empty token is for the verifier", msg: `{"type":"refresh_token","data":{"token":""}}`, token: ""},
		{name: "an extra field", msg: `{"type":"refresh_token","data":{"token":"x","exp":1}}`, token: "x"},
		{name: "no data", msg: `{"type":"refresh_token","id":"t2"}`, code: codeInvalidMessage},
		{name: "data not an object", msg: `{"type":"refresh_token","data":"a.b.c"}`, code: codeInvalidMessage},
		{name: "no token", msg: `{"type":"refresh_token","data":{}}`, code: codeInvalidMessage},
		{name: "a null token", msg: `{"type":"refresh_token","data":{"token":null}}`, code: codeInvalidMessage},
		{name: "a numeric token", msg: `{"type":"refresh_token","data":{"token":7}}`, code: codeInvalidMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, perr := decode([]byte(tc.msg))
			switch {
			case tc.code != "" && (perr == nil || perr.code != tc.code):
				t.Fatalf("decode = %+v, %v; want error %s", cmd, perr, tc.code)
			case tc.code != "" && perr.id != fzWantID([]byte(tc.msg)):
				t.Fatalf("error echoes id %q", perr.id)
			case tc.code == "" && (perr != nil || cmd.kind != cmdRefresh || cmd.token != tc.token || cmd.id != fzWantID([]byte(tc.msg))):
				t.Fatalf("decode = %+v, %v; want refresh_token %q", cmd, perr, tc.token)
			}
		})
	}
}

// tkClaims are claims of user sub expiring at exp (no exp when 0).
func tkClaims(sub any, exp int64) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub}
	if exp != 0 {
		c["exp"] = exp
	}
	return c
}

// TestCheckRefreshReasons: the verdict on a refresh_token's JWT for a session
// of user 7, and for an anonymous one, for every way a token can be valid or not.
func TestCheckRefreshReasons(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	s := startServer(t, cfg)
	soon := time.Now().Add(time.Hour).Unix()
	hs := func(claims jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(testSecret), claims) }
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, tkClaims("7", soon)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	user7 := hubUser(7)
	for _, tc := range []struct {
		name   string
		token  string
		user   *int64
		exp    int64
		reason string
	}{
		{"valid, exp ahead", hs(tkClaims("7", soon)), user7, soon, ""},
		{"valid, sub a JSON number", hs(tkClaims(7, soon)), user7, soon, ""},
		{"valid, no exp", hs(tkClaims("7", 0)), user7, 0, ""},
		{"another user", hs(tkClaims("8", soon)), user7, 0, tokenUserMismatch},
		{"another user, expired too", hs(tkClaims("8", time.Now().Add(-time.Minute).Unix())), user7, 0, tokenUserMismatch},
		{"expired", hs(tkClaims("7", time.Now().Add(-time.Minute).Unix())), user7, 0, tokenExpired},
		{"exp is now", hs(tkClaims("7", time.Now().Unix())), user7, 0, tokenExpired},
		{"not valid yet", hs(jwt.MapClaims{"sub": "7", "exp": soon, "nbf": soon - 60}), user7, 0, tokenExpired},
		{"another key", mint(t, jwt.SigningMethodHS256, []byte("another-secret-of-some-length"), tkClaims("7", soon)), user7, 0, tokenBadSignature},
		{"HS512", mint(t, jwt.SigningMethodHS512, []byte(testSecret), tkClaims("7", soon)), user7, 0, tokenBadSignature},
		{"alg none", none, user7, 0, tokenBadSignature},
		{"signature cut off", strings.TrimRight(hs(tkClaims("7", soon)), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"), user7, 0, tokenBadSignature},
		{"empty", "", user7, 0, tokenMalformed},
		{"not a JWT", "hello", user7, 0, tokenMalformed},
		{"three segments of nothing", "a.b.c", user7, 0, tokenMalformed},
		{"no sub", hs(jwt.MapClaims{"exp": soon}), user7, 0, tokenMalformed},
		{"sub not an integer", hs(tkClaims("seven", soon)), user7, 0, tokenMalformed},
		{"exp not a number", hs(jwt.MapClaims{"sub": "7", "exp": "tomorrow"}), user7, 0, tokenMalformed},
		{"longer than 8 KiB", hs(jwt.MapClaims{"sub": "7", "pad": strings.Repeat("x", maxJWTLen)}), user7, 0, tokenMalformed},
		{"anonymous, a valid token", hs(tkClaims("7", soon)), nil, 0, tokenUserMismatch},
		{"anonymous, garbage", "hello", nil, 0, tokenUserMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp, reason := s.checkRefresh(tc.token, tc.user)
			if exp != tc.exp || reason != tc.reason {
				t.Fatalf("checkRefresh = %d, %q; want %d, %q", exp, reason, tc.exp, tc.reason)
			}
		})
	}
}

// tokenConfig is the hub's timing with a resume window and the contract's
// token timings: warned 60 s before exp, closed 25 s after.
func tokenConfig() hubConfig {
	cfg := resumeConfig()
	cfg.tokenWarning, cfg.tokenGrace = 60*time.Second, 25*time.Second
	return cfg
}

// hubTokenFrame checks f is token_expiring or token_refreshed (with id) for exp.
func hubTokenFrame(t *testing.T, f frame, typ, id string, exp int64) (left time.Duration) {
	t.Helper()
	var d struct {
		TokenExp    *int64 `json:"token_exp"`
		ExpiresInMS int64  `json:"expires_in_ms"`
	}
	if f.Type != typ || f.ID != id || json.Unmarshal(f.Data, &d) != nil || d.TokenExp == nil || *d.TokenExp != exp {
		t.Fatalf("got %s id %q %s, want %s id %q with token_exp %d", f.Type, f.ID, f.Data, typ, id, exp)
	}
	return time.Duration(d.ExpiresInMS) * time.Millisecond
}

// TestHubTokenClock: a session on a token expiring in 120 s is warned exactly
// 60 s before, not a nanosecond earlier; a refresh with the same token is
// answered but not warned again; one with a later exp replaces the schedule (no
// close at the old exp + 25 s, a new warning 60 s before the new exp); the
// close comes exactly at the new exp + 25 s, and the session is away with
// reason token_expired, its clock gone; a refresh that comes too late
// changes nothing. A session on a token without exp has no clock at all.
func TestHubTokenClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, tokenConfig())
		start := time.Now()
		exp := start.Unix() + 120
		a, b := fakeHubConn("sid-a", hubUser(1), 16), fakeHubConn("sid-b", hubUser(2), 16)
		a.tokenExp = exp
		hubRegister(t, h, a, b)
		if h.idx.sessions["sid-b"].tok != nil {
			t.Fatal("a session on a token without exp has a token clock")
		}
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, a)
		takeQueued(t, b)

		time.Sleep(60*time.Second - time.Nanosecond)
		synctest.Wait()
		expectQueued(t, a)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if left := hubTokenFrame(t, expectQueued(t, a, "token_expiring")[0], "token_expiring", "", exp); left != 60*time.Second {
			t.Fatalf("expires_in_ms %s, want 60 s", left)
		}

		// The token it has, again: refreshed, and not warned a second time.
		hubTell(t, h, refreshMsg{c: a, sid: a.sid, id: "same", exp: exp})
		hubTokenFrame(t, expectQueued(t, a, "token_refreshed")[0], "token_refreshed", "same", exp)

		exp2 := start.Unix() + 300
		hubTell(t, h, refreshMsg{c: a, sid: a.sid, id: "r1", exp: exp2})
		hubTokenFrame(t, expectQueued(t, a, "token_refreshed")[0], "token_refreshed", "r1", exp2)
		time.Sleep(time.Until(time.Unix(exp+25, 0)) + time.Minute) // well past the old token's close
		synctest.Wait()
		expectQueued(t, a)
		checkConnRunning(t, a)

		time.Sleep(time.Until(time.Unix(exp2-60, 0)))
		synctest.Wait()
		hubTokenFrame(t, expectQueued(t, a, "token_expiring")[0], "token_expiring", "", exp2)
		time.Sleep(time.Until(time.Unix(exp2+25, 0)) - time.Nanosecond)
		synctest.Wait()
		checkConnRunning(t, a)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		checkConnStopped(t, a, reasonTokenExpired)
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "away", presenceTokenExpired)
		if s := h.idx.sessions["sid-a"]; s == nil || s.conn != nil || s.tok != nil || s.awayReason != presenceTokenExpired {
			t.Fatalf("session after its token's close: %+v, want away for token_expired, without a clock", s)
		}

		hubTell(t, h, refreshMsg{c: a, sid: a.sid, id: "late", exp: exp2 + 600})
		if s := h.idx.sessions["sid-a"]; s.conn != nil || s.tok != nil {
			t.Fatal("a refresh from the closed conn changed the away session")
		}
		checkHubInvariants(t, h)
	})
}

// TestHubTokenResume: a session away for token_expired, resumed by a conn
// whose handshake token expires later, is governed by that token (warned 60 s
// before it, with the resumed sid); the fresh session's clock goes with it.
// Without a resume window the session ends instead, its games hearing left
// with reason token_expired. A token past its exp + grace at once (no grace)
// closes the conn in the step that learns of it.
func TestHubTokenResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, tokenConfig())
		start := time.Now()
		a, b := fakeHubConn("sid-a", hubUser(1), 16), fakeHubConn("sid-b", hubUser(2), 16)
		a.tokenExp, a.token = start.Unix()+30, hashToken("tok-a") // warned at once: 30 s is less than 60
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		hubTokenFrame(t, expectQueued(t, a, "token_expiring", "game_joined", "presence")[0], "token_expiring", "", a.tokenExp)
		takeQueued(t, b)
		time.Sleep(55 * time.Second)
		synctest.Wait()
		checkConnStopped(t, a, reasonTokenExpired)
		takeQueued(t, b)

		a2 := fakeHubConn("sid-a2", hubUser(1), 16)
		a2.tokenExp = start.Unix() + 55 + 3600
		hubRegister(t, h, a2)
		if sid := hubResume(t, h, a2, "tok-a", nil); sid != "sid-a" {
			t.Fatalf("resume answered %s", sid)
		}
		expectQueued(t, a2, "resumed")
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "back", "")
		if s := h.idx.sessions["sid-a"]; s.tok == nil || s.tok.exp != a2.tokenExp || h.idx.sessions["sid-a2"] != nil {
			t.Fatalf("resumed session's clock %+v, want the new conn's exp %d", s.tok, a2.tokenExp)
		}
		time.Sleep(time.Until(time.Unix(a2.tokenExp-60, 0)))
		synctest.Wait()
		hubTokenFrame(t, expectQueued(t, a2, "token_expiring")[0], "token_expiring", "", a2.tokenExp)
		checkHubInvariants(t, h)
	})
	synctest.Test(t, func(t *testing.T) {
		cfg := tokenConfig()
		cfg.resumeWindow, cfg.tokenGrace = 0, 0
		h := startTestHub(t, cfg)
		a, b := fakeHubConn("sid-a", hubUser(1), 16), fakeHubConn("sid-b", nil, 16)
		a.tokenExp = time.Now().Unix() + 1
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, b)
		time.Sleep(time.Second)
		synctest.Wait()
		checkConnStopped(t, a, reasonTokenExpired)
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "left", presenceTokenExpired)
		checkHubStats(t, h, 1, 0, map[uuid.UUID]int{hubGame: 1})

		late := fakeHubConn("sid-late", hubUser(3), 16)
		late.tokenExp = time.Now().Unix() // exp + no grace is now: closed as it registers
		hubRegister(t, h, late)
		synctest.Wait()
		checkConnStopped(t, late, reasonTokenExpired)
		checkHubStats(t, h, 1, 0, map[uuid.UUID]int{hubGame: 1})
		checkHubInvariants(t, h)
	})
}

// TestEncodeTokenFrames checks token_expiring and token_refreshed: their keys,
// expires_in_ms in milliseconds and never negative, token_exp null for none,
// and the refresh's id echoed.
func TestEncodeTokenFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		left time.Duration
		want string
	}{{"a minute left", time.Minute + 500*time.Microsecond, "60000"}, {"late", -time.Second, "0"}} {
		t.Run("token_expiring, "+tc.name, func(t *testing.T) {
			f := protoParse(t, encodeTokenExpiring(1796150606, tc.left))
			protoKeys(t, f.top, "type", "data")
			protoField(t, f.top, "type", `"token_expiring"`)
			protoKeys(t, f.data, "token_exp", "expires_in_ms")
			protoField(t, f.data, "token_exp", "1796150606")
			protoField(t, f.data, "expires_in_ms", tc.want)
		})
	}
	for _, tc := range []struct {
		name string
		exp  int64
		want string
	}{{"an exp", 1796150606, "1796150606"}, {"no exp", 0, "null"}} {
		t.Run("token_refreshed, "+tc.name, func(t *testing.T) {
			f := protoParse(t, encodeTokenRefreshed("t1", tc.exp))
			protoKeys(t, f.top, "type", "id", "data")
			protoField(t, f.top, "id", `"t1"`)
			protoKeys(t, f.data, "token_exp")
			protoField(t, f.data, "token_exp", tc.want)
		})
	}
}
