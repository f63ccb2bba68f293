package main

// The hostile mode: what a few misbehaving clients cost everyone else. Each
// scenario drives dugout (never the baseline: it has none of the limits being
// probed) with one kind of abuse, and watches a well-behaved bystander beside
// it. See "hostile" in bench/README.md.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// hostileScenarios are the scenarios of the hostile mode, in the README's order.
var hostileScenarios = []string{"flood", "nonreaders", "fds", "healthloop", "expiry", "join"}

// hostileOptions are the flags only the hostile mode has.
type hostileOptions struct {
	scenario       string
	nofile         int           // fds: the server's open-files limit
	sessionTimeout time.Duration // expiry: SESSION_TIMEOUT
	rssCapMiB      int64         // nonreaders: the senders stop when the server's RSS passes it
}

// register adds the hostile mode's own flags to fs.
func (h *hostileOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&h.scenario, "scenario", "", "hostile: the scenario, one of "+fmt.Sprint(hostileScenarios))
	fs.IntVar(&h.nofile, "nofile", 1024, "hostile fds: the server's open-files limit (prlimit --nofile=N:N)")
	h.sessionTimeout = 10 * time.Second
	fs.Var(durValue{&h.sessionTimeout, time.Second}, "session-timeout", "hostile expiry: SESSION_TIMEOUT (bare number = s)")
	fs.Int64Var(&h.rssCapMiB, "rss-cap", 6144, "hostile nonreaders: the senders stop when the server's RSS passes this many MiB, and the server is killed at 1.5 times it (a guard for a shared machine)")
}

// resolveHostile checks the hostile flags and fills in each scenario's own
// defaults for the shared flags the command line did not set (-duration,
// -drain, -games, -members, -interval mean the same thing everywhere, but the
// sizes that make each scenario meaningful differ).
func (o *options) resolveHostile(fs *flag.FlagSet) error {
	h := &o.hostile
	if !slices.Contains(hostileScenarios, h.scenario) {
		return fmt.Errorf("hostile: -scenario must be one of %v (got %q)", hostileScenarios, h.scenario)
	}
	if len(o.servers) != 1 || o.servers[0] != "dugout" {
		return fmt.Errorf("hostile: runs dugout only (-server dugout)")
	}
	if h.nofile < 64 || h.sessionTimeout <= 0 || h.rssCapMiB < 64 {
		return fmt.Errorf("hostile: -nofile must be at least 64, -session-timeout positive, -rss-cap at least 64")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	def := func(name string, apply func()) {
		if !set[name] {
			apply()
		}
	}
	switch h.scenario {
	case "flood":
		def("duration", func() { o.duration = 5 * time.Second })
		def("drain", func() { o.drain = 3 * time.Second })
	case "nonreaders":
		def("duration", func() { o.duration = 30 * time.Second })
		def("drain", func() { o.drain = 40 * time.Second })
		def("games", func() { o.games = 50 })
		def("interval", func() { o.interval = 50 * time.Millisecond })
	case "healthloop":
		def("duration", func() { o.duration = 10 * time.Second })
		def("games", func() { o.games = 100000 })
	case "expiry":
		def("drain", func() { o.drain = 20 * time.Second })
	case "join":
		def("members", func() { o.members = 100 })
		def("drain", func() { o.drain = 60 * time.Second })
	}
	if o.games == 0 {
		o.games = 1 // unused by this scenario; keeps the generic checks quiet
	}
	return nil
}

// hostileConns is how many sockets the tool holds at most in the scenario.
func (o *options) hostileConns() int {
	switch o.hostile.scenario {
	case "nonreaders":
		return o.games*4 + bystanderConns
	case "fds":
		return 3*o.hostile.nofile + bystanderConns
	case "healthloop":
		return (o.games+gamesPerSession-1)/gamesPerSession + bystanderConns + healthLoopers
	case "expiry":
		return o.n + bystanderConns
	case "join":
		return o.members
	}
	return 1 + bystanderConns
}

// hostileEnv is dugout's environment for the scenario: the defaults of
// .env.example wherever the scenario is about them (rate limit, queue sizes,
// message size, game limits), and only what the scenario needs changed.
func (o *options) hostileEnv() map[string]string {
	env := map[string]string{
		// A dropped attacker ends at once, so health shows when it was dropped.
		"RESUME_WINDOW":   "0",
		"LISTEN_ADDR":     "127.0.0.1:0",
		"PING_INTERVAL":   o.pingInterval.String(),
		"PING_TIMEOUT":    o.pingTimeout.String(),
		"LOG_LEVEL":       o.logLevel,
		"GOMAXPROCS":      strconv.Itoa(o.serverProcs),
		"SESSION_TIMEOUT": "0",
	}
	switch o.hostile.scenario {
	case "healthloop":
		// 16 joins per session at once; the defaults would refuse none of
		// them either, but the set-up is not what is measured.
		env["RATE_LIMIT"], env["RATE_BURST"] = "1000", "1000"
	case "expiry":
		env["SESSION_TIMEOUT"] = o.hostile.sessionTimeout.String()
		env["EXPIRY_WARNING"] = "0"
		env["EXPIRY_CHECK_INTERVAL"] = "1s"
	}
	return env
}

// hostileParams are the JSON line's params for the scenario.
func (o *options) hostileParams(p map[string]any) {
	h := o.hostile
	p["scenario"] = h.scenario
	switch h.scenario {
	case "flood":
		p["duration"], p["drain"], p["message_bytes"] = o.duration.String(), o.drain.String(), floodBytes
	case "nonreaders":
		p["games"], p["interval_ms"], p["duration"], p["drain"] = o.games, o.interval.Milliseconds(), o.duration.String(), o.drain.String()
		p["message_bytes"], p["rss_cap_mib"] = floodBytes, h.rssCapMiB
	case "fds":
		p["nofile"] = h.nofile
	case "healthloop":
		p["games"], p["duration"], p["loopers"] = o.games, o.duration.String(), healthLoopers
	case "expiry":
		p["n"], p["session_timeout"], p["drain"] = o.n, h.sessionTimeout.String(), o.drain.String()
	case "join":
		p["members"], p["drain"] = o.members, o.drain.String()
	}
	p["bystander"] = fmt.Sprintf("%d connections, one heartbeat every %s in turn", bystanderConns, bystanderEvery)
}

// hostileParamLine is the table header's summary of the scenario's sizes.
func (o *options) hostileParamLine() string {
	h := o.hostile
	switch h.scenario {
	case "flood":
		return fmt.Sprintf("scenario=flood duration=%s drain=%s message=%dB", o.duration, o.drain, floodBytes)
	case "nonreaders":
		return fmt.Sprintf("scenario=nonreaders games=%d interval=%s duration=%s drain=%s rss_cap=%dMiB",
			o.games, o.interval, o.duration, o.drain, h.rssCapMiB)
	case "fds":
		return fmt.Sprintf("scenario=fds nofile=%d", h.nofile)
	case "healthloop":
		return fmt.Sprintf("scenario=healthloop games=%d duration=%s (each phase)", o.games, o.duration)
	case "expiry":
		return fmt.Sprintf("scenario=expiry n=%d session_timeout=%s drain=%s", o.n, h.sessionTimeout, o.drain)
	}
	return fmt.Sprintf("scenario=join members=%d wait=%s", o.members, o.drain)
}

// hostileFigures are the rows of the scenario's table.
func (o *options) hostileFigures() []figure {
	switch o.hostile.scenario {
	case "flood":
		return floodFigures
	case "nonreaders":
		return nonreaderFigures
	case "fds":
		return fdsFigures
	case "healthloop":
		return healthLoopFigures
	case "expiry":
		return expiryFigures
	}
	return joinFigures
}

// startHostile starts dugout for the scenario: like every other mode, except
// that fds runs it under prlimit, so that the limit is in place before the
// server starts (the hardened server sizes its session limit from it).
func (o *options) startHostile(name, bin string, env map[string]string, cpu int) (*proc, error) {
	if o.hostile.scenario != "fds" {
		return startServer(name, bin, env, cpu)
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		return nil, fmt.Errorf("fds: prlimit (util-linux) not found: %w", err)
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	// A two-line script keeps startServer as it is: taskset runs the script,
	// which becomes prlimit, which becomes dugout, all under one pid.
	dir, err := os.MkdirTemp("", "dugout-hostile-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) // the exec chain has finished once the start-up line is read
	script := filepath.Join(dir, "dugout-prlimit")
	body := fmt.Sprintf("#!/bin/sh\nexec %s --nofile=%d:%d %s\n", prlimit, o.hostile.nofile, o.hostile.nofile, abs)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return nil, err
	}
	return startServer(name, script, env, cpu)
}

// runHostile runs the chosen scenario against p.
func runHostile(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	switch o.hostile.scenario {
	case "flood":
		return runFlood(ctx, o, p, d)
	case "nonreaders":
		return runNonReaders(ctx, o, p, d)
	case "fds":
		return runFDs(ctx, o, p, d)
	case "healthloop":
		return runHealthLoop(ctx, o, p, d)
	case "expiry":
		return runExpiry(ctx, o, p, d)
	}
	return runJoin(ctx, o, p, d)
}
