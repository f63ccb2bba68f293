package main

// The dice rule, and the bounded decode of a roll's dice array.

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestCheckDice checks the dice rule: 1 to 10 dice of 2 to 100 sides.
func TestCheckDice(t *testing.T) {
	cases := []struct {
		name string
		dice []int
		ok   bool
	}{
		{"nil", nil, false},
		{"empty", []int{}, false},
		{"one two-sided die", []int{2}, true},
		{"one hundred-sided die", []int{100}, true},
		{"default set", []int{6, 6, 6, 20}, true},
		{"ten dice", slices.Repeat([]int{6}, 10), true},
		{"eleven dice", slices.Repeat([]int{6}, 11), false},
		{"ten thousand dice", slices.Repeat([]int{6}, 10000), false},
		{"side 1", []int{1}, false},
		{"side 0", []int{0}, false},
		{"negative side", []int{-20}, false},
		{"side 101", []int{101}, false},
		{"bad side last", []int{6, 6, 6, 101}, false},
		{"largest int side", []int{int(^uint(0) >> 1)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := checkDice(tc.dice)
			if (msg == "") != tc.ok {
				t.Errorf("checkDice(%d dice) = %q, want ok=%v", len(tc.dice), msg, tc.ok)
			}
			if len(msg) > protoMaxMessage {
				t.Errorf("message is %d bytes, want at most %d", len(msg), protoMaxMessage)
			}
		})
	}
}

func TestParseDice(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		want []int
		err  error
	}{
		{"one die", `[6]`, []int{6}, nil},
		{"ten dice with white space", "[ 6 ,6,\n6,6,6,6,6,6,6, 20 ]", []int{6, 6, 6, 6, 6, 6, 6, 6, 6, 20}, nil},
		{"empty", `[]`, []int{}, nil},
		{"null", `null`, nil, nil},
		{"eleven dice", `[6,6,6,6,6,6,6,6,6,6,6]`, nil, errTooManyDice},
		{"half a million dice", "[" + strings.Repeat("6,", 499_999) + "6]", nil, errTooManyDice},
		{"a fraction", `[6.5]`, nil, errNotDice},
		{"an exponent", `[6e1]`, nil, errNotDice},
		{"a string", `["6"]`, nil, errNotDice},
		{"an object", `[{}]`, nil, errNotDice},
		{"out of range", `[99999999999999999999]`, nil, errNotDice},
		{"not an array", `{"a":6}`, nil, errNotDice},
		{"a number", `6`, nil, errNotDice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseDice([]byte(tc.raw))
			if !errors.Is(err, tc.err) || (err == nil && !slices.Equal(d, tc.want)) || (tc.want != nil) != (d != nil && err == nil) {
				t.Fatalf("parseDice(%.40q) = %v, %v; want %v, %v", tc.raw, d, err, tc.want, tc.err)
			}
		})
	}
}

// TestDecodeOfHugeDiceIsBounded checks that a roll_dice carrying half a
// million dice is refused at the eleventh, without decoding the rest: its
// decode allocates no more than one with eleven dice does (the old []int
// decode grew a slice to half a million and took 172 ms).
func TestDecodeOfHugeDiceIsBounded(t *testing.T) {
	frame := func(dice int) []byte {
		return []byte(`{"type":"roll_dice","id":"r","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","dice":[` +
			strings.TrimSuffix(strings.Repeat("6,", dice), ",") + `]}}`)
	}
	small, huge := frame(11), frame(499_000)
	for _, msg := range [][]byte{small, huge} {
		if _, perr := decode(msg); perr == nil || perr.code != codeInvalidMessage || !strings.Contains(perr.message, "1 to 10 dice") || perr.id != "r" {
			t.Fatalf("decode of %d bytes of dice = %+v, want invalid_message about 1 to 10 dice, id r", len(msg), perr)
		}
	}
	smallAllocs := testing.AllocsPerRun(20, func() { decode(small) })
	hugeAllocs := testing.AllocsPerRun(5, func() { decode(huge) })
	if hugeAllocs > smallAllocs+2 {
		t.Fatalf("decoding half a million dice allocates %.0f times, eleven dice %.0f: the rest was decoded", hugeAllocs, smallAllocs)
	}
}
