package failure

import (
	"context"
	"encoding/json"
	"errors"
	"syscall"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// observer is an in-test WebSocket client joined to a game. It reads all the
// time (so it answers pings) and keeps every frame as a line of frames.
type observer struct {
	sid    string
	frames *lineLog
	ws     *websocket.Conn
	done   chan struct{} // closed when the reader has returned
	err    error         // the read error that ended it, valid after done
}

// dialObserver connects to url, joins game and starts reading.
func dialObserver(t *testing.T, url, game string) *observer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("observer dial: %v", err)
	}
	o := &observer{frames: newLineLog(), ws: ws, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for {
			_, msg, err := ws.Read(context.Background())
			if err != nil {
				o.err = err
				return
			}
			_, _ = o.frames.Write(append(msg, '\n'))
		}
	}()
	t.Cleanup(func() {
		_ = ws.Close(websocket.StatusNormalClosure, "test over")
		select {
		case <-o.done:
		case <-time.After(10 * time.Second):
			_ = ws.CloseNow()
			<-o.done
		}
	})

	from := 0
	ln, ok := o.frames.waitFor(&from, time.Now().Add(10*time.Second), func(string) bool { return true })
	if !ok {
		t.Fatalf("observer: no session frame within 10 s (read error: %v)", o.readErr())
	}
	var f frame
	var s struct {
		SID string `json:"sid"`
	}
	if json.Unmarshal([]byte(ln.text), &f) != nil || f.Type != "session" || json.Unmarshal(f.Data, &s) != nil || s.SID == "" {
		t.Fatalf("observer: first frame is not a session frame: %s", ln.text)
	}
	o.sid = s.SID
	join, _ := json.Marshal(map[string]any{"type": "join_game", "id": "oj", "data": map[string]string{"game_id": game}})
	if err := ws.Write(ctx, websocket.MessageText, join); err != nil {
		t.Fatalf("observer: sending join_game: %v", err)
	}
	if _, ok := o.frames.waitFor(&from, time.Now().Add(10*time.Second), func(s string) bool {
		var f frame
		return json.Unmarshal([]byte(s), &f) == nil && f.Type == "game_joined" && f.ID == "oj"
	}); !ok {
		t.Fatalf("observer: no game_joined within 10 s; frames:\n%s", o.frames)
	}
	return o
}

// readErr is the error that ended the reader, or nil while it runs.
func (o *observer) readErr() error {
	select {
	case <-o.done:
		if o.err == nil {
			return errors.New("reader ended")
		}
		return o.err
	default:
		return nil
	}
}

// TestSIGSTOPPeerTimesOut freezes a joined client with SIGSTOP. Its kernel
// still acknowledges TCP segments, so only the missing pongs reveal it: dugout
// must drop it within PING_INTERVAL + PING_TIMEOUT and tell the game "timeout".
func TestSIGSTOPPeerTimesOut(t *testing.T) {
	p := servertest.Start(t, servertest.Options{Env: serverEnv})
	game := uuid.NewString()
	bound := pingInterval + pingTimeout
	sl := slack(t)

	obs := dialObserver(t, p.WSURL(), game)
	zombie := startClient(t, nil, "-mode", "join", "-url", p.WSURL(), "-game", game)
	sid, port := zombie.joined(t, 10*time.Second)
	t.Logf("observer sid %s; zombie pid %d sid %s local port %s", obs.sid, zombie.cmd.Process.Pid, sid, port)

	from := 0
	if _, ok := obs.frames.waitFor(&from, time.Now().Add(5*time.Second), presenceOf(game, sid, "joined")); !ok {
		t.Fatalf("observer saw no presence joined for the zombie; frames:\n%s", obs.frames)
	}

	// While it runs the zombie answers pings, so it outlives several rounds of them.
	alive := bound + 400*time.Millisecond
	time.Sleep(alive)
	if ln, ok := obs.frames.waitFor(&from, time.Now(), presenceOf(game, sid, "left")); ok {
		t.Fatalf("the zombie left before it was stopped, while answering pings: %s\nzombie %s\ndugout log:\n%s",
			ln.text, zombie.describe(), p.Log())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if h, err := p.Health(ctx); err != nil || h.TotalSessions != 2 || h.SessionsPerGame[game] != 2 {
		t.Fatalf("before SIGSTOP: health %+v, %v; want 2 sessions, 2 in the game", h, err)
	}

	stoppedAt := time.Now()
	if err := zombie.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	deadline := stoppedAt.Add(bound + sl)

	ln, ok := obs.frames.waitFor(&from, deadline, presenceOf(game, sid, "left"))
	if !ok {
		t.Fatalf("no presence left for the stopped zombie within %s (PING_INTERVAL %s + PING_TIMEOUT %s + slack %s); "+
			"zombie state %s; observer read error %v; frames:\n%s\ndugout log:\n%s",
			bound+sl, pingInterval, pingTimeout, sl, procState(zombie.cmd.Process.Pid), obs.readErr(), obs.frames, p.Log())
	}
	elapsed := ln.at.Sub(stoppedAt)
	pr, _ := parsePresence(ln.text)
	t.Logf("presence left after %s from SIGSTOP (bound PING_INTERVAL+PING_TIMEOUT = %s, +slack %s = %s): %s",
		elapsed.Round(time.Millisecond), bound, sl, bound+sl, ln.text)
	if pr.Reason != "timeout" {
		t.Errorf("presence left reason %q, want \"timeout\" (frame %s)", pr.Reason, ln.text)
	}
	if elapsed > bound {
		t.Logf("note: %s is past the bare bound %s by %s (within slack)", elapsed.Round(time.Millisecond), bound, (elapsed - bound).Round(time.Millisecond))
	}
	if st := procState(zombie.cmd.Process.Pid); st != "T" || zombie.exited() {
		t.Errorf("the zombie is not stopped (state %q, %s): its end was not a ping timeout", st, zombie.describe())
	}

	h, at, ok, err := waitHealth(ctx, deadline, p.Health, func(h servertest.Health) bool {
		return h.TotalSessions == 1 && h.SessionsPerGame[game] == 1
	})
	if !ok {
		t.Errorf("health still counts the zombie %s after SIGSTOP (bound %s): %+v, err %v",
			time.Since(stoppedAt).Round(time.Millisecond), bound+sl, h, err)
	} else {
		t.Logf("health shows total_sessions=1 at %s from SIGSTOP (%+v)", at.Sub(stoppedAt).Round(time.Millisecond), h)
	}
	if err := obs.readErr(); err != nil {
		t.Errorf("the observer's connection ended: %v", err)
	}
}
