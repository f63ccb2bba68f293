package main

// The error frame's shape.

import (
	"encoding/json"
	"strconv"
	"testing"
)

// TestEncodeError checks error frames carry the code and message, and the id
// only when the client's message had a valid one.
func TestEncodeError(t *testing.T) {
	cases := []struct {
		name string
		err  protoError
	}{
		{"with id", protoError{code: codeNotInGame, message: "not in that game", id: "e1"}},
		{"without id", protoError{code: codeInvalidJSON, message: "frame must be one JSON object"}},
		{"id needing escapes", protoError{code: codeRateLimited, message: "slow down", id: "a\"b</script>"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := protoParse(t, encodeError(&tc.err))
			protoField(t, f.top, "type", `"error"`)
			if tc.err.id == "" {
				protoKeys(t, f.top, "type", "data")
			} else {
				protoKeys(t, f.top, "type", "id", "data")
				var id string
				if err := json.Unmarshal(f.top["id"], &id); err != nil || id != tc.err.id {
					t.Errorf("id = %s, want %q", f.top["id"], tc.err.id)
				}
			}
			protoKeys(t, f.data, "code", "message")
			protoField(t, f.data, "code", strconv.Quote(tc.err.code))
			var msg string
			if err := json.Unmarshal(f.data["message"], &msg); err != nil || msg != tc.err.message {
				t.Errorf("message = %s, want %q", f.data["message"], tc.err.message)
			}
		})
	}
}
