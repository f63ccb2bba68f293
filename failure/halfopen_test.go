package failure

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/google/uuid"
)

// run runs a command and returns its combined output, trimmed.
func run(ctx context.Context, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// netns is a network namespace made for one test and deleted after it.
type netns struct {
	name     string
	iptables string // the iptables binary that works inside it
}

// wrap is the wrapper that runs a command inside the namespace.
func (n *netns) wrap() []string { return []string{"ip", "netns", "exec", n.name} }

// in runs argv inside the namespace.
func (n *netns) in(ctx context.Context, argv ...string) (string, error) {
	return run(ctx, append(n.wrap(), argv...)...)
}

// newNetns creates a namespace with lo up and finds an iptables that works in
// it, or skips the test saying which prerequisite is missing and why.
func newNetns(t *testing.T, ctx context.Context) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("half-open test skipped: it needs root to create a network namespace and add iptables rules (running as uid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("half-open test skipped: the ip command (iproute2) is not installed: %v", err)
	}
	var candidates []string
	for _, name := range []string{"iptables", "iptables-legacy"} {
		if _, err := exec.LookPath(name); err == nil {
			candidates = append(candidates, name)
		}
	}
	if len(candidates) == 0 {
		t.Skip("half-open test skipped: neither iptables nor iptables-legacy is installed (apt-get install -y iptables)")
	}

	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := &netns{name: "dugout-ho-" + hex.EncodeToString(b)}
	if out, err := run(ctx, "ip", "netns", "add", n.name); err != nil {
		t.Skipf("half-open test skipped: cannot create a network namespace: `ip netns add %s` failed: %v: %s", n.name, err, out)
	}
	// Registered first, so it runs last: after every process inside is killed.
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := run(cctx, "ip", "netns", "delete", n.name); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", n.name, err, out)
		}
	})
	if out, err := n.in(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		t.Skipf("half-open test skipped: cannot bring lo up in namespace %s: %v: %s", n.name, err, out)
	}

	// Probe each iptables with a rule on a port nothing uses, added and removed.
	var failures []string
	for _, ipt := range candidates {
		rule := []string{"INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"}
		out, err := n.in(ctx, append([]string{ipt, "-w", "-I"}, rule...)...)
		if err == nil {
			if out2, err2 := n.in(ctx, append([]string{ipt, "-w", "-D"}, rule...)...); err2 != nil {
				t.Fatalf("%s added a probe rule in %s but could not delete it: %v: %s", ipt, n.name, err2, out2)
			}
			n.iptables = ipt
			return n
		}
		failures = append(failures, fmt.Sprintf("%s: %v: %s", ipt, err, out))
	}
	t.Skipf("half-open test skipped: iptables does not work inside the namespace (no filter rule can be added): %s",
		strings.Join(failures, "; "))
	return nil
}

// TestHalfOpenPeerTimesOut cuts every packet of one client's TCP connection
// inside a network namespace, a true half-open connection: neither side gets a
// FIN or a RST. dugout must find out from the missing pongs alone, within
// PING_INTERVAL + PING_TIMEOUT, and tell the game "timeout".
func TestHalfOpenPeerTimesOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := newNetns(t, ctx)
	bound := pingInterval + pingTimeout
	sl := slack(t)

	p := servertest.Start(t, servertest.Options{Env: serverEnv, Wrapper: ns.wrap()})
	game := uuid.NewString()
	health := func(ctx context.Context) (servertest.Health, error) {
		var h servertest.Health
		out, err := ns.in(ctx, zombieClient(t), "-mode", "health", "-url", p.URL("/health/connections"))
		if err != nil {
			return h, fmt.Errorf("%v: %s", err, out)
		}
		return h, json.Unmarshal([]byte(out), &h)
	}

	// The observer and the victim run inside the namespace too.
	obs := startClient(t, ns.wrap(), "-mode", "observe", "-url", p.WSURL(), "-game", game)
	from := 0
	first, ok := obs.stdout.waitFor(&from, time.Now().Add(10*time.Second), func(string) bool { return true })
	if !ok {
		t.Fatalf("observer printed no session frame within 10 s; %s\ndugout log:\n%s", obs.describe(), p.Log())
	}
	var f frame
	var s struct {
		SID string `json:"sid"`
	}
	if json.Unmarshal([]byte(first.text), &f) != nil || f.Type != "session" || json.Unmarshal(f.Data, &s) != nil {
		t.Fatalf("observer's first frame is not a session frame: %s", first.text)
	}
	if _, ok := obs.stdout.waitFor(&from, time.Now().Add(10*time.Second), func(l string) bool {
		var f frame
		return json.Unmarshal([]byte(l), &f) == nil && f.Type == "game_joined"
	}); !ok {
		t.Fatalf("observer printed no game_joined within 10 s; %s", obs.describe())
	}

	victim := startClient(t, ns.wrap(), "-mode", "join", "-url", p.WSURL(), "-game", game)
	sid, port := victim.joined(t, 10*time.Second)
	t.Logf("namespace %s (%s); dugout %s; observer sid %s; victim sid %s local port %s",
		ns.name, ns.iptables, p.Addr, s.SID, sid, port)
	if _, ok := obs.stdout.waitFor(&from, time.Now().Add(5*time.Second), presenceOf(game, sid, "joined")); !ok {
		t.Fatalf("observer saw no presence joined for the victim; frames:\n%s", obs.stdout)
	}

	// While its packets flow the victim answers pings and stays.
	time.Sleep(bound + 400*time.Millisecond)
	if ln, ok := obs.stdout.waitFor(&from, time.Now(), presenceOf(game, sid, "left")); ok {
		t.Fatalf("the victim left before its packets were cut: %s\nvictim %s\ndugout log:\n%s", ln.text, victim.describe(), p.Log())
	}
	if h, err := health(ctx); err != nil || h.TotalSessions != 2 || h.SessionsPerGame[game] != 2 {
		t.Fatalf("before the cut: health %+v, %v; want 2 sessions, 2 in the game", h, err)
	}

	// Pongs (victim -> server, source port = victim's) are dropped from the
	// moment the first rule is in; the second drops the server's packets to it.
	cutStart := time.Now()
	for i, dir := range []string{"--sport", "--dport"} {
		if out, err := ns.in(ctx, ns.iptables, "-w", "-I", "INPUT", "-p", "tcp", dir, port, "-j", "DROP"); err != nil {
			t.Fatalf("%s -I INPUT -p tcp %s %s -j DROP in %s: %v: %s", ns.iptables, dir, port, ns.name, err, out)
		}
		if i == 0 {
			t.Logf("first rule (%s) in place %s after the cut began", dir, time.Since(cutStart).Round(time.Millisecond))
		}
	}
	cutAt := time.Now() // both rules in place
	// The bound holds from the moment pongs stop; the reference used is the
	// start of the cut (before either rule was in), the strictest choice.
	deadline := cutStart.Add(bound + sl)

	ln, ok := obs.stdout.waitFor(&from, deadline, presenceOf(game, sid, "left"))
	if !ok {
		out, _ := ns.in(ctx, ns.iptables, "-L", "INPUT", "-n", "-v")
		t.Fatalf("no presence left for the cut-off victim within %s (PING_INTERVAL %s + PING_TIMEOUT %s + slack %s)\n"+
			"rules:\n%s\nobserver %s frames:\n%s\ndugout log:\n%s",
			bound+sl, pingInterval, pingTimeout, sl, out, obs.describe(), obs.stdout, p.Log())
	}
	elapsed := ln.at.Sub(cutStart)
	t.Logf("presence left after %s from the start of the cut, %s after both rules were in "+
		"(bound PING_INTERVAL+PING_TIMEOUT = %s, +slack %s = %s): %s",
		elapsed.Round(time.Millisecond), ln.at.Sub(cutAt).Round(time.Millisecond), bound, sl, bound+sl, ln.text)
	if pr, _ := parsePresence(ln.text); pr.Reason != "timeout" {
		t.Errorf("presence left reason %q, want \"timeout\" (frame %s)", pr.Reason, ln.text)
	}
	if elapsed > bound {
		t.Logf("note: %s is past the bare bound %s by %s (within slack)", elapsed.Round(time.Millisecond), bound, (elapsed - bound).Round(time.Millisecond))
	}

	h, at, ok, err := waitHealth(ctx, deadline, health, func(h servertest.Health) bool {
		return h.TotalSessions == 1 && h.SessionsPerGame[game] == 1
	})
	if !ok {
		t.Errorf("health still counts the victim %s after the cut (bound %s): %+v, err %v",
			time.Since(cutStart).Round(time.Millisecond), bound+sl, h, err)
	} else {
		t.Logf("health shows total_sessions=1 at %s from the start of the cut (%+v)", at.Sub(cutStart).Round(time.Millisecond), h)
	}

	// The connection is truly half-open: the victim never heard that it ended.
	if victim.exited() {
		t.Errorf("the victim process ended, so the connection was not half-open: %s", victim.describe())
	}
	if obs.exited() {
		t.Errorf("the observer's connection ended: %s", obs.describe())
	}
	if out, err := ns.in(ctx, ns.iptables, "-L", "INPUT", "-n", "-v", "-x"); err == nil {
		t.Logf("rules at the end:\n%s", out)
	} else {
		t.Logf("listing rules: %v: %s", err, out)
	}
}
