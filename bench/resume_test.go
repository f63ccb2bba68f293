package main

import (
	"encoding/json"
	"testing"
	"time"
)

// TestResumeSmall runs the resume mode at a tiny size against a freshly built
// dugout and checks that every session went away and resumed. It keeps the
// mode compiling and honest; it measures nothing.
func TestResumeSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs a server; skipped under -short")
	}
	bins := buildForTest(t, map[string]string{"dugout": ".", "bench": "./bench"})
	args := []string{"resume", "-n", "50", "-settle", "200ms", "-dugout-bin", bins["dugout"],
		"-quiet-wait", "0", "-busy-retries", "0", "-deadline", "40s"}
	out, errOut, line := runTool(t, bins["bench"], 60*time.Second, args...)
	if _, bad := line["errors"]; bad {
		t.Errorf("run reported errors: %s", line["errors"])
	}
	var f map[string]map[string]float64
	if err := json.Unmarshal(line["figures"], &f); err != nil {
		t.Fatalf("figures: %v", err)
	}
	d := f["dugout"]
	if len(f) != 1 || len(d) == 0 {
		t.Fatalf("figures for dugout alone wanted, got %s", line["figures"])
	}
	if d["sessions"] != 50 || d["games"] != 13 || d["resumes"] != 50 || d["resume_failed"] != 0 {
		t.Errorf("sessions %v, games %v, resumes %v, failed %v; want 50, 13, 50, 0",
			d["sessions"], d["games"], d["resumes"], d["resume_failed"])
	}
	for _, k := range []string{"drop_to_away_ms", "resume_rate", "lat_p50_ms", "rss_before_mib", "rss_away_mib", "rss_resumed_mib"} {
		if d[k] <= 0 {
			t.Errorf("%s = %v, want > 0", k, d[k])
		}
	}
	if d["goroutines_away"] >= d["goroutines_connected"] || d["after_dropped"] != 0 || d["after_error_frames"] != 0 {
		t.Errorf("goroutines away %v (connected %v), dropped %v, error frames %v",
			d["goroutines_away"], d["goroutines_connected"], d["after_dropped"], d["after_error_frames"])
	}
	if t.Failed() {
		t.Logf("output:\n%s\nstderr:\n%s", out, errOut)
	}
}
