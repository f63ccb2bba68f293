package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestModesSmall runs every mode of the tool at a tiny size against both
// servers, as a user would, and checks the output parses and shows that
// nothing was lost. It keeps the tool compiling and honest; it measures nothing.
func TestModesSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries and runs servers; skipped under -short")
	}
	bins := buildForTest(t, map[string]string{"dugout": ".", "baseline": "./bench/baseline", "bench": "./bench"})
	common := []string{"-dugout-bin", bins["dugout"], "-baseline-bin", bins["baseline"],
		"-quiet-wait", "0", "-busy-retries", "0", "-deadline", "60s", "-settle", "200ms"}

	type figs map[string]map[string]float64
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, f figs)
	}{
		{"idle", []string{"idle", "-n", "50", "-hold", "1s", "-ping-interval", "300ms", "-jwt"}, func(t *testing.T, f figs) {
			for s, v := range f {
				if v["ping_rounds"] < 2 || v["hold_bytes_in_per_conn"] <= 0 || v["rss_held_per_conn_kib"] == 0 {
					t.Errorf("%s: %v ping rounds, %v bytes of pings per conn, %v KiB per conn held; want at least 2 rounds, both positive",
						s, v["ping_rounds"], v["hold_bytes_in_per_conn"], v["rss_held_per_conn_kib"])
				}
				if v["conns"] != 50 || v["survived"] != 50 || v["connect_failures"] != 0 {
					t.Errorf("%s: conns %v, survived %v, failures %v; want 50, 50, 0", s, v["conns"], v["survived"], v["connect_failures"])
				}
				if v["connect_rate"] <= 0 || v["rss_before_mib"] <= 0 {
					t.Errorf("%s: connect rate %v, RSS before %v; want both positive", s, v["connect_rate"], v["rss_before_mib"])
				}
			}
		}},
		{"fanout", []string{"fanout", "-games", "5", "-members", "4", "-interval", "200", "-duration", "2s",
			"-warmup", "500ms", "-drain", "3s"}, func(t *testing.T, f figs) {
			for s, v := range f {
				for _, k := range []string{"losses", "out_of_order", "error_frames", "dropped_conns", "send_errors"} {
					if got, ok := v[k]; !ok || got != 0 {
						t.Errorf("%s: %s = %v (present %t), want 0", s, k, got, ok)
					}
				}
				// 20 members at 5/s, each frame to 3 others: about 300 deliveries/s
				// on a quiet machine; CI runs other tests beside this one, so
				// only check that frames flowed and were timed.
				if v["delivered_per_s"] <= 0 || v["lat_samples"] <= 0 || v["lat_p50_ms"] <= 0 {
					t.Errorf("%s: delivered/s %v, samples %v, p50 %v; want all positive",
						s, v["delivered_per_s"], v["lat_samples"], v["lat_p50_ms"])
				}
			}
		}},
		{"churn", []string{"churn", "-waves", "2", "-clients", "50", "-games", "10"}, func(t *testing.T, f figs) {
			for s, v := range f {
				for _, k := range []string{"connect_failures", "missing_echoes", "missing_left", "error_frames", "dropped_conns"} {
					if got, ok := v[k]; !ok || got != 0 {
						t.Errorf("%s: %s = %v (present %t), want 0", s, k, got, ok)
					}
				}
				if v["connected"] != 100 || v["w2_rss_mib"] <= 0 {
					t.Errorf("%s: connected %v, wave 2 RSS %v; want 100 and positive", s, v["connected"], v["w2_rss_mib"])
				}
			}
			d := f["dugout"]
			if d["zero_timeouts"] != 0 || d["w1_zero_ms"] <= 0 || d["w2_zero_ms"] <= 0 {
				t.Errorf("dugout: zero timeouts %v, time to zero %v / %v ms", d["zero_timeouts"], d["w1_zero_ms"], d["w2_zero_ms"])
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, line := runTool(t, bins["bench"], 90*time.Second, append(c.args, common...)...)
			l := line
			var mode string
			var f figs
			if err := json.Unmarshal(l["mode"], &mode); err != nil || mode != c.name {
				t.Errorf("mode %q (%v), want %q", mode, err, c.name)
			}
			if _, bad := l["errors"]; bad {
				t.Errorf("run reported errors: %s", l["errors"])
			}
			if err := json.Unmarshal(l["figures"], &f); err != nil {
				t.Fatalf("figures: %v", err)
			}
			if len(f["dugout"]) == 0 || len(f["baseline"]) == 0 {
				t.Fatalf("figures for both servers wanted, got %s", l["figures"])
			}
			if !strings.Contains(out, "| ratio (d/b)") {
				t.Errorf("no human table in the output:\n%s", out)
			}
			c.check(t, f)
			if t.Failed() {
				t.Logf("output:\n%s\nstderr:\n%s", out, errOut)
			}
		})
	}
}
