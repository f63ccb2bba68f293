package main

// The close-reason table against contract v2 §3 and §6, the goodbye frame,
// and the presence words.

import (
	"testing"
	"time"
)

// TestCloseReasons checks the close-reason table against contract v2 §3 and
// §6: code, goodbye word, v1's left reason, whether a close frame is sent,
// whether the session goes away (and why) or ends, and what the goodbye says.
func TestCloseReasons(t *testing.T) {
	cases := []struct {
		name       string
		r          closeReason
		code       int
		word       string
		presence   string
		sendsClose bool
		away       string
		resumable  bool
	}{
		{"expired", reasonExpired, 4000, "expired", "expired", true, "", false},
		{"taken over", reasonTakenOver, 4001, "taken_over", "", true, "", false},
		{"shutdown", reasonShutdown, 1001, "shutdown", "disconnected", true, "", false},
		{"slow consumer", reasonSlow, 1008, "slow_consumer", "disconnected", true, "slow_consumer", true},
		{"flood", reasonFlood, 1008, "rate_limited", "disconnected", true, "", false},
		{"too big", reasonTooBig, 1009, "too_big", "disconnected", true, "", false},
		{"binary", reasonBinary, 1003, "binary", "disconnected", true, "", false},
		{"missed pong", reasonTimeout, 1006, "", "timeout", false, "timeout", false},
		{"lost", reasonDisconnected, 1006, "", "disconnected", false, "disconnected", false},
		{"client's goodbye", peerClosed(1000), 1000, "", "disconnected", false, "", false},
		{"tab closed", peerClosed(1001), 1001, "", "disconnected", false, "disconnected", false},
		{"client's own code", peerClosed(4321), 4321, "", "disconnected", false, "disconnected", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := struct {
				code                 int
				word, presence, away string
				sendsClose, resum    bool
			}{int(tc.r.code), tc.r.word, tc.r.presence, tc.r.away, tc.r.sendsClose, tc.r.resumable}
			want := struct {
				code                 int
				word, presence, away string
				sendsClose, resum    bool
			}{tc.code, tc.word, tc.presence, tc.away, tc.sendsClose, tc.resumable}
			if got != want {
				t.Errorf("reason = %+v, want %+v", got, want)
			}
			if tc.r.sendsClose != (tc.r.word != "") {
				t.Errorf("a close frame needs a goodbye word, and only it has one: %+v", tc.r)
			}
		})
	}
}

// TestGoodbye checks the goodbye frame: code, word, retry_after_ms null or a
// number, resumable.
func TestGoodbye(t *testing.T) {
	for _, tc := range []struct {
		r    closeReason
		want string
	}{
		{reasonExpired, `{"type":"goodbye","data":{"code":4000,"reason":"expired","retry_after_ms":null,"resumable":false}}`},
		{reasonSlow, `{"type":"goodbye","data":{"code":1008,"reason":"slow_consumer","retry_after_ms":null,"resumable":true}}`},
		{reasonShutdown.withRetry(1234 * time.Millisecond), `{"type":"goodbye","data":{"code":1001,"reason":"shutdown","retry_after_ms":1234,"resumable":false}}`},
		{reasonShutdown.withRetry(0), `{"type":"goodbye","data":{"code":1001,"reason":"shutdown","retry_after_ms":0,"resumable":false}}`},
	} {
		if got := string(encodeGoodbye(tc.r)); got != tc.want {
			t.Errorf("goodbye\n got %s\nwant %s", got, tc.want)
		}
	}
}

// TestPresenceWords checks the presence reasons are the contract's words.
func TestPresenceWords(t *testing.T) {
	cases := []struct{ name, got, want string }{
		{"left", presenceLeft, "left"},
		{"disconnected", presenceDisconnected, "disconnected"},
		{"expired", presenceExpired, "expired"},
		{"timeout", presenceTimeout, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("presence word = %q, want %q", tc.got, tc.want)
			}
		})
	}
}
