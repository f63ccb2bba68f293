package main

import (
	"strings"
	"testing"
)

func TestSessionLimitFor(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured int
		fds        uint64
		want       int
		from, warn string // substrings; "" for none
		err        string
	}{
		{"no limit set: 10 % reserved", 0, 20_000, 18_000, "descriptor limit 20000 less a reserve of 2000", "", ""},
		{"no limit set: at least 64 reserved", 0, 256, 192, "descriptor limit 256 less a reserve of 64", "", ""},
		{"no limit set, the usual soft limit", 0, 1024, 922, "reserve of 102", "", ""},
		{"no limit set, a million descriptors", 0, 1 << 20, 943_719, "reserve of 104857", "", ""},
		{"no limit set and no room", 0, 64, 0, "", "", "MAX_SESSIONS"},
		{"set within the limit", 1000, 20_000, 1000, "MAX_SESSIONS", "", ""},
		{"set past the limit less the reserve", 19_000, 20_000, 19_000, "MAX_SESSIONS", "fewer than 2000", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sessionLimitFor(tc.configured, tc.fds)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("sessionLimitFor(%d, %d) = %+v, %v; want an error naming %s", tc.configured, tc.fds, got, err, tc.err)
				}
				return
			}
			if err != nil || got.sessions != tc.want || !strings.Contains(got.from, tc.from) ||
				(tc.warn == "") != (got.warning == "") || !strings.Contains(got.warning, tc.warn) {
				t.Fatalf("sessionLimitFor(%d, %d) = %+v, %v; want %d from %q, warning %q", tc.configured, tc.fds, got, err, tc.want, tc.from, tc.warn)
			}
		})
	}
}

// TestSessionLimitReadsTheProcess checks the limit taken from this process's
// own descriptor limit leaves its reserve.
func TestSessionLimitReadsTheProcess(t *testing.T) {
	got, err := sessionLimit(0)
	if err != nil {
		t.Fatalf("sessionLimit(0): %v", err)
	}
	if got.fds == 0 || uint64(got.sessions)+max(got.fds/10, 64) != got.fds {
		t.Fatalf("sessionLimit(0) = %+v: sessions + reserve is not the descriptor limit", got)
	}
}
