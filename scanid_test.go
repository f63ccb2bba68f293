package main

// scanID: the ids it finds and refuses, and that its cost does not grow with
// the frame.

import (
	"strings"
	"testing"
)

func TestScanID(t *testing.T) {
	pad := strings.Repeat("x", idScanLimit)
	for _, tc := range []struct {
		name string
		msg  string
		want string
	}{
		{"id first", `{"id":"a1","type":"heartbeat"}`, "a1"},
		{"id after type", `{"type":"heartbeat","id":"a1","data":{}}`, "a1"},
		{"id after nested data", `{"type":"x","data":{"a":[1,{"b":"}"}],"c":"\"id\":\"no\""},"id":"a1"}`, "a1"},
		{"id after numbers and literals", `{"n":-1.5e3,"t":true,"f":false,"z":null,"id":"a1"}`, "a1"},
		{"white space everywhere", " {\n\t\"id\" :\r \"a1\" } ", "a1"},
		{"escaped id", `{"id":"a\"b\u00e9"}`, "a\"bé"},
		{"id matched case-insensitively, as decode does", `{"ID":"a1"}`, "a1"},
		{"a key holding id is not the id", `{"idx":"no","id":"a1"}`, "a1"},
		{"id of 64 characters", `{"id":"` + strings.Repeat("é", 64) + `"}`, strings.Repeat("é", 64)},
		{"id of 65 characters", `{"id":"` + strings.Repeat("é", 65) + `"}`, ""},
		{"numeric id", `{"id":7}`, ""},
		{"no id", `{"type":"heartbeat"}`, ""},
		{"id past the scan limit", `{"data":"` + pad + `","id":"a1"}`, ""},
		{"id within the limit after a long value", `{"data":"` + pad[:idScanLimit-40] + `","id":"a1"}`, "a1"},
		{"not an object", `["id","a1"]`, ""},
		{"not JSON", `id=a1`, ""},
		{"truncated", `{"id":"a1`, ""},
		{"empty", ``, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := scanID([]byte(tc.msg)); got != tc.want {
				t.Fatalf("scanID(%.60q) = %q, want %q", tc.msg, got, tc.want)
			}
		})
	}
}

// TestScanIDIsBounded checks that a refused message costs the same whatever
// its size: the scan reads at most idScanLimit bytes and allocates nothing
// for an id it cannot use.
func TestScanIDIsBounded(t *testing.T) {
	huge := []byte(`{"type":"heartbeat","data":{"pad":"` + strings.Repeat("x", 1_000_000) + `"},"id":"late"}`)
	if got := scanID(huge); got != "" {
		t.Fatalf("scanID found %q past %d bytes", got, idScanLimit)
	}
	if allocs := testing.AllocsPerRun(100, func() { scanID(huge) }); allocs != 0 {
		t.Fatalf("scanID of a 1 MB frame allocates %.0f times, want 0", allocs)
	}
}
