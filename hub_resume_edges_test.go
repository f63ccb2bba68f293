package main

import (
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// TestHubResumeRepeatsTheWarning: a session warned while away (the frame
// went to no conn) and then resumed gets session_expiring on its new conn,
// after resumed, with at least EXPIRY_WARNING left: the expiry it announced
// is postponed to make room, never kept without a warning on the conn.
func TestHubResumeRepeatsTheWarning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := resumeConfig()
		cfg.resumeWindow, cfg.actionTTL = 600*time.Second, 600*time.Second
		h := startTestHub(t, cfg)
		t0 := time.Now()
		a := tokenConn("sid-a", hubUser(1), "tok-a", 1<<12)
		other := fakeHubConn("sid-o", hubUser(2), 64)
		hubRegister(t, h, a, other)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(other, hubGame, ""))
		takeQueued(t, a)
		hubTell(t, h, unregisterMsg{c: a, sid: a.sid, reason: reasonDisconnected})
		time.Sleep(245 * time.Second) // SESSION_TIMEOUT 300 s, EXPIRY_WARNING 60 s: due for its warning
		hubTell(t, h, sweepMsg{now: time.Now()})
		time.Sleep(10 * time.Second)
		b := fakeHubConn("sid-b", hubUser(1), 64)
		hubRegister(t, h, b)
		if sid := hubResume(t, h, b, "tok-a", nil); sid != "sid-a" {
			t.Fatalf("resume gave %s", sid)
		}
		fs := takeQueued(t, b)
		if len(fs) != 2 || fs[0].Type != "resumed" || fs[1].Type != "session_expiring" {
			t.Fatalf("after the resume the conn got %v, want resumed then session_expiring", frameTypes(fs))
		}
		var d struct {
			ExpiresInMS int64  `json:"expires_in_ms"`
			ExpiresAt   string `json:"expires_at"`
		}
		if err := json.Unmarshal(fs[1].Data, &d); err != nil || d.ExpiresInMS != cfg.expiryWarning.Milliseconds() {
			t.Fatalf("session_expiring %s, want expires_in_ms %d (the warning, whole)", fs[1].Data, cfg.expiryWarning.Milliseconds())
		}
		hubTell(t, h, sweepMsg{now: t0.Add(305 * time.Second)}) // the expiry announced while away
		if connStopped(b) {
			t.Fatalf("stopped as %q at the expiry announced to no conn", b.reason.word)
		}
		hubTell(t, h, sweepMsg{now: t0.Add(315 * time.Second)}) // the one announced to b
		if !connStopped(b) || b.reason != reasonExpired {
			t.Fatalf("not expired at the announced time (stopped %v, %q)", connStopped(b), b.reason.word)
		}
	})
}

// TestHubCatchUpLeavesTheQueueWhole: a resume's catch-up fills a small queue
// past its bound, and the live frames that follow it, in the same hub step
// (the supersede a single_seat game makes) and after it, still fit: a replay
// never counts toward SEND_QUEUE_SIZE.
func TestHubCatchUpLeavesTheQueueWhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := resumeConfig()
		cfg.stateTimeouts = hubGamesConfig().stateTimeouts
		h := startTestHub(t, cfg)
		a := tokenConn("sid-a", hubUser(1), "tok-a", 1<<12)
		tab := fakeHubConn("sid-t", hubUser(1), 64) // the same user's other tab
		o := fakeHubConn("sid-o", hubUser(2), 64)
		hubRegister(t, h, a, tab, o)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(tab, hubGame, ""), joinCmd(o, hubGame, ""))
		patch, _ := decodeSettings([]byte(`{"seat_policy":"single_seat"}`), cfg.stateTimeouts, cfg.expiryWarning)
		reply := make(chan gameReply, 1)
		ask(h, gameUpdateMsg{game: hubGame, patch: patch, reply: reply}, reply)
		synctest.Wait()
		takeQueued(t, a)
		epoch, last := h.idx.logs[hubGame].epoch, h.idx.logs[hubGame].last
		hubTell(t, h, unregisterMsg{c: a, sid: a.sid, reason: reasonDisconnected})
		for i := range 10 {
			hubTell(t, h, actionCmd(o, cmdRoll, hubGame, "", i))
		}
		b := fakeHubConn("sid-b", hubUser(1), 8) // SEND_QUEUE_SIZE 8, and 12 frames to catch up on
		hubRegister(t, h, b)
		r := make(chan string, 1)
		hubTell(t, h, resumeMsg{c: b, sid: b.sid, id: "r", req: &resumeRequest{token: "tok-a",
			games: map[uuid.UUID]gamePosition{hubGame: {epoch: epoch, offset: last}}}, reply: r})
		if sid := <-r; sid != "sid-a" {
			t.Fatalf("resume gave %s", sid)
		}
		b.sid = "sid-a"
		if connStopped(b) {
			t.Fatalf("stopped as %q in the resume's own hub step (the supersede after the catch-up)", b.reason.word)
		}
		for i := range 7 { // live frames up to the bound, with the catch-up still queued
			hubTell(t, h, actionCmd(o, cmdRoll, hubGame, "", 100+i))
		}
		if connStopped(b) {
			t.Fatalf("stopped as %q by live frames within the bound", b.reason.word)
		}
		fs := takeQueued(t, b)
		if fs[0].Type != "resumed" || len(fs) != 1+11+1+7 {
			t.Fatalf("got %d frames %v, want resumed, the 11 missed (its own away, 10 rolls), the tab's left, 7 rolls", len(fs), frameTypes(fs))
		}
	})
}

// frameTypes lists the types of fs, for failure messages.
func frameTypes(fs []frame) []string {
	types := make([]string, len(fs))
	for i, f := range fs {
		types[i] = f.Type
	}
	return types
}
