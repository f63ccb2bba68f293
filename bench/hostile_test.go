package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHostileSmall runs every hostile scenario at a tiny size against a
// freshly built dugout and checks that each produces its figures. It asserts
// what holds for any dugout, hardened or not (the figures are there and
// plausible), never the bounds themselves: those are for the full runs to show.
func TestHostileSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs servers; skipped under -short")
	}
	bins := buildForTest(t, map[string]string{"dugout": ".", "bench": "./bench"})
	common := []string{"-dugout-bin", bins["dugout"], "-quiet-wait", "0", "-busy-retries", "0", "-deadline", "60s"}

	type figs map[string]float64
	positive := func(t *testing.T, f figs, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if f[k] <= 0 {
				t.Errorf("%s = %v (present %t), want > 0", k, f[k], hasKey(f, k))
			}
		}
	}
	present := func(t *testing.T, f figs, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if !hasKey(f, k) {
				t.Errorf("figure %s missing", k)
			}
		}
	}
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, f figs)
	}{
		{"flood", []string{"-duration", "1s", "-drain", "1s"}, func(t *testing.T, f figs) {
			positive(t, f, "sent", "ref_samples", "by_samples", "by_p50_ms")
			present(t, f, "cpu_s", "closed", "refused", "accepted")
		}},
		{"nonreaders", []string{"-games", "2", "-duration", "1s", "-drain", "1s"}, func(t *testing.T, f figs) {
			positive(t, f, "decisions_sent", "rss_end_mib", "rss_drain_mib", "by_samples")
			present(t, f, "nonreaders_closed", "cpu_s")
			if f["clients"] != 8 {
				t.Errorf("clients = %v, want 8", f["clients"])
			}
		}},
		{"fds", []string{"-nofile", "128"}, func(t *testing.T, f figs) {
			positive(t, f, "sessions", "log_lines")
			present(t, f, "refused_ms", "livez_answered", "readyz_answered", "health_answered", "log_nonjson_lines")
			if f["nofile"] != 128 || f["sessions"] > 128 {
				t.Errorf("nofile %v, sessions %v; want 128 and at most 128", f["nofile"], f["sessions"])
			}
		}},
		{"healthloop", []string{"-games", "320", "-duration", "1s"}, func(t *testing.T, f figs) {
			positive(t, f, "health_calls", "body_bytes", "quiet_samples", "loop_samples", "loop_cpu_s")
			if f["games"] != 320 || f["active_games"] != 320 {
				t.Errorf("games %v, active %v; want 320", f["games"], f["active_games"])
			}
		}},
		{"expiry", []string{"-n", "50", "-session-timeout", "2s", "-drain", "3s"}, func(t *testing.T, f figs) {
			positive(t, f, "by_samples", "first_close_s")
			present(t, f, "spread_ms", "by_p99_ms")
			if f["closed_4000"] != 50 || f["by_closed"] != 0 {
				t.Errorf("closed with 4000 %v, bystander closed %v; want 50 and 0", f["closed_4000"], f["by_closed"])
			}
		}},
		{"join", []string{"-members", "20", "-drain", "20s"}, func(t *testing.T, f figs) {
			positive(t, f, "join_ms", "presences")
			if f["joined"] != 20 || f["complete"] != 20 || f["timed_out"] != 0 {
				t.Errorf("joined %v, complete %v, timed out %v; want 20, 20, 0", f["joined"], f["complete"], f["timed_out"])
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "fds" {
				if _, err := exec.LookPath("prlimit"); err != nil {
					t.Skip("prlimit (util-linux) not installed")
				}
			}
			args := append(append([]string{"hostile", "-scenario", c.name}, c.args...), common...)
			out, errOut, line := runTool(t, bins["bench"], 90*time.Second, args...)
			var f map[string]figs
			if err := json.Unmarshal(line["figures"], &f); err != nil {
				t.Fatalf("figures: %v", err)
			}
			var params map[string]any
			_ = json.Unmarshal(line["params"], &params)
			if params["scenario"] != c.name {
				t.Errorf("params.scenario = %v, want %s", params["scenario"], c.name)
			}
			if _, bad := line["errors"]; bad {
				t.Errorf("run reported errors: %s", line["errors"])
			}
			if len(f) != 1 || len(f["dugout"]) == 0 {
				t.Fatalf("figures for dugout alone wanted, got %s", line["figures"])
			}
			if !strings.Contains(out, "| ratio (d/b)") {
				t.Errorf("no human table in the output:\n%s", out)
			}
			c.check(t, f["dugout"])
			if t.Failed() {
				t.Logf("output:\n%s\nstderr:\n%s", out, errOut)
			}
		})
	}
}

func hasKey(f map[string]float64, k string) bool {
	_, ok := f[k]
	return ok
}
