package main

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// startTestJanitor runs janitor for h in the current bubble. It returns the
// janitor's context cancel and a channel closed when the janitor returns; the
// janitor is cancelled and awaited when the test ends. A janitor that ignores
// its context fails the test, and its hub is then stopped so that the test
// ends instead of ticking through fake time forever.
func startTestJanitor(t *testing.T, h *hub, interval time.Duration) (cancel context.CancelFunc, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		janitor(ctx, h, interval)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
			return
		case <-time.After(10 * interval):
			t.Errorf("janitor still running %s after its context ended", 10*interval)
		}
		stopTestHub(h)
		<-finished
	})
	return cancel, finished
}

// janitorReturned reports whether a goroutine's done channel is closed.
func janitorReturned(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// TestJanitorSweepsAtInterval reads the janitor's messages straight from an
// inbox nobody else reads: one sweep per interval, stamped with the tick's time.
func TestJanitorSweepsAtInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 60 * time.Second
		h := newHub(hubDefaults, 0) // not running: the test is the hub
		start := time.Now()
		cancel, done := startTestJanitor(t, h, interval)

		time.Sleep(interval - time.Millisecond)
		synctest.Wait()
		select {
		case m := <-h.inbox:
			t.Fatalf("janitor sent %T after %s, before its first interval", m, time.Since(start))
		default:
		}
		for k := 1; k <= 5; k++ {
			m := <-h.inbox
			elapsed := time.Since(start)
			sw, ok := m.(sweepMsg)
			if !ok {
				t.Fatalf("janitor sent %T, want sweepMsg", m)
			}
			if elapsed != time.Duration(k)*interval {
				t.Errorf("sweep %d arrived after %s, want %s", k, elapsed, time.Duration(k)*interval)
			}
			if !sw.now.Equal(time.Now()) {
				t.Errorf("sweep %d is stamped %s, want the tick's time %s", k, sw.now, time.Now())
			}
		}

		cancel()
		synctest.Wait()
		if !janitorReturned(done) {
			close(h.done) // play a hub that stops, so the janitor can end with the test
			t.Fatal("janitor still running after its context ended")
		}
		select {
		case m := <-h.inbox:
			t.Fatalf("janitor sent %T after its context ended", m)
		default:
		}
	})
}

// TestJanitorStopsWithContext ends the janitor before its first tick.
func TestJanitorStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		cancel, done := startTestJanitor(t, h, time.Minute)
		time.Sleep(30 * time.Second)
		cancel()
		synctest.Wait()
		if !janitorReturned(done) {
			t.Fatal("janitor still running after its context ended")
		}
	})
}

// TestJanitorStopsWithHub stops hubs while their janitors' contexts live on:
// each janitor must return at its next tick, when its send finds the hub
// gone. Many pairs run at once because a send that may pick either of two
// ready select cases would pass a single try by luck half the time.
func TestJanitorStopsWithHub(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pairs, interval = 32, time.Minute
		hubs := make([]*hub, pairs)
		dones := make([]<-chan struct{}, pairs)
		for i := range pairs {
			hubs[i] = startTestHub(t, hubDefaults)
			_, dones[i] = startTestJanitor(t, hubs[i], interval)
		}
		time.Sleep(interval / 2)
		for _, h := range hubs {
			stopTestHub(h)
		}
		time.Sleep(interval)
		synctest.Wait()
		alive := 0
		for _, d := range dones {
			if !janitorReturned(d) {
				alive++
			}
		}
		if alive > 0 {
			t.Errorf("%d of %d janitors still running a tick after their hub stopped", alive, pairs)
		}
	})
}

// TestJanitorDrivesExpiry runs the janitor against a real hub: sweeps come
// only from the janitor, and an idle session is expired inside the contract's
// window of SESSION_TIMEOUT to SESSION_TIMEOUT + EXPIRY_CHECK_INTERVAL.
func TestJanitorDrivesExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig{sessionTimeout: 90 * time.Second, expiryWarning: 0, maxGames: 16, maxSeats: 100}
		const interval = 40 * time.Second
		h := startTestHub(t, cfg)
		startTestJanitor(t, h, interval)
		time.Sleep(7 * time.Second)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		hubRegister(t, h, a)
		start := time.Now()
		for !connStopped(a) {
			time.Sleep(time.Second)
			synctest.Wait()
			if time.Since(start) > cfg.sessionTimeout+2*interval {
				t.Fatalf("session still live after %s idle", time.Since(start))
			}
		}
		idle := time.Since(start)
		// Ticks at 40, 80, 120 s since the janitor started; a went idle at 7 s.
		if idle != 113*time.Second {
			t.Errorf("expired after %s idle, want 113s (the first tick past %s)", idle, cfg.sessionTimeout)
		}
		checkConnStopped(t, a, reasonExpired)
	})
}
