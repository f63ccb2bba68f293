package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// protoGame is the game the protocol tests use, in its canonical spelling.
const protoGame = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"

// protoGameID is protoGame parsed.
var protoGameID = uuid.MustParse(protoGame)

// protoMaxMessage bounds an error frame's message: it must never grow with
// the size of the client's input. quoteShort keeps 32 bytes of a client string,
// which escaping can at most quadruple, so 200 leaves room for the prose.
const protoMaxMessage = 200

// protoMsg builds a client frame for a game command; id "" leaves the id out and
// data is the raw JSON of the data field ("" leaves it out).
func protoMsg(typ, id, data string) string {
	var b strings.Builder
	b.WriteString(`{"type":` + strconv.Quote(typ))
	if id != "" {
		b.WriteString(`,"id":` + strconv.Quote(id))
	}
	if data != "" {
		b.WriteString(`,"data":` + data)
	}
	b.WriteString("}")
	return b.String()
}

// protoData is the data of a game command for protoGame plus extra raw fields.
func protoData(extra string) string {
	if extra == "" {
		return `{"game_id":"` + protoGame + `"}`
	}
	return `{"game_id":"` + protoGame + `",` + extra + `}`
}

// protoDice renders n dice of the given sides as a JSON array.
func protoDice(n, sides int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = strconv.Itoa(sides)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// TestDecodeValid checks every valid client frame decodes into the command the
// hub expects, with the client's id kept for the reply.
func TestDecodeValid(t *testing.T) {
	id64 := strings.Repeat("a", 64)
	rune64 := strings.Repeat("é", 64)             // 128 bytes, 64 characters
	emoji64 := strings.Repeat(`\ud83c\udfb2`, 64) // 64 dice emoji written as surrogate pairs
	cases := []struct {
		name     string
		msg      string
		kind     cmdKind
		id       string
		game     uuid.UUID
		decision string
		dice     []int
	}{
		{name: "heartbeat without data or id", msg: `{"type":"heartbeat"}`, kind: cmdHeartbeat},
		{name: "heartbeat with id", msg: `{"type":"heartbeat","id":"h1"}`, kind: cmdHeartbeat, id: "h1"},
		{name: "heartbeat with object data", msg: `{"type":"heartbeat","id":"h2","data":{"x":[1,2]}}`, kind: cmdHeartbeat, id: "h2"},
		{name: "heartbeat with null data", msg: `{"type":"heartbeat","data":null}`, kind: cmdHeartbeat},
		{name: "heartbeat with array data", msg: `{"type":"heartbeat","data":[1,"a"]}`, kind: cmdHeartbeat},
		{name: "heartbeat with string data", msg: `{"type":"heartbeat","data":"ping"}`, kind: cmdHeartbeat},
		{name: "heartbeat with number data", msg: `{"type":"heartbeat","data":3.5}`, kind: cmdHeartbeat},
		{name: "heartbeat with boolean data", msg: `{"type":"heartbeat","data":false}`, kind: cmdHeartbeat},
		{name: "heartbeat with null id", msg: `{"type":"heartbeat","id":null}`, kind: cmdHeartbeat},
		{name: "heartbeat with unknown extra field", msg: `{"type":"heartbeat","extra":1}`, kind: cmdHeartbeat},
		{name: "heartbeat surrounded by whitespace", msg: " \r\n\t{\"type\":\"heartbeat\"}\n ", kind: cmdHeartbeat},
		{name: "id of 64 ASCII characters", msg: protoMsg("heartbeat", id64, ""), kind: cmdHeartbeat, id: id64},
		{name: "id of 64 two-byte characters", msg: protoMsg("heartbeat", rune64, ""), kind: cmdHeartbeat, id: rune64},
		{name: "id of 64 escaped astral characters", msg: `{"type":"heartbeat","id":"` + emoji64 + `"}`, kind: cmdHeartbeat, id: strings.Repeat("🎲", 64)},
		{name: "join_game with id", msg: protoMsg("join_game", "j1", protoData("")), kind: cmdJoin, id: "j1", game: protoGameID},
		{name: "join_game without id", msg: protoMsg("join_game", "", protoData("")), kind: cmdJoin, game: protoGameID},
		{name: "leave_game with id", msg: protoMsg("leave_game", "l1", protoData("")), kind: cmdLeave, id: "l1", game: protoGameID},
		{name: "leave_game without id", msg: protoMsg("leave_game", "", protoData("")), kind: cmdLeave, game: protoGameID},
		{
			name: "defensive decision with id", msg: protoMsg("submit_defensive_decision", "d1", protoData(`"decision":{"shift":"infield_in"}`)),
			kind: cmdDefensive, id: "d1", game: protoGameID, decision: `{"shift":"infield_in"}`,
		},
		{
			name: "defensive decision without id", msg: protoMsg("submit_defensive_decision", "", protoData(`"decision":{}`)),
			kind: cmdDefensive, game: protoGameID, decision: `{}`,
		},
		{
			name: "offensive decision with id", msg: protoMsg("submit_offensive_decision", "o1", protoData(`"decision":{"steal":[2,3]}`)),
			kind: cmdOffensive, id: "o1", game: protoGameID, decision: `{"steal":[2,3]}`,
		},
		{
			name: "offensive decision without id", msg: protoMsg("submit_offensive_decision", "", protoData(`"decision":{"bunt":true}`)),
			kind: cmdOffensive, game: protoGameID, decision: `{"bunt":true}`,
		},
		{
			name: "roll_dice with dice and id", msg: protoMsg("roll_dice", "r1", protoData(`"dice":[2,100,6]`)),
			kind: cmdRoll, id: "r1", game: protoGameID, dice: []int{2, 100, 6},
		},
		{
			name: "roll_dice without dice defaults", msg: protoMsg("roll_dice", "r2", protoData("")),
			kind: cmdRoll, id: "r2", game: protoGameID, dice: []int{6, 6, 6, 20},
		},
		{
			name: "roll_dice with null dice defaults", msg: protoMsg("roll_dice", "", protoData(`"dice":null`)),
			kind: cmdRoll, game: protoGameID, dice: []int{6, 6, 6, 20},
		},
		{
			name: "roll_dice with one die", msg: protoMsg("roll_dice", "", protoData(`"dice":[20]`)),
			kind: cmdRoll, game: protoGameID, dice: []int{20},
		},
		{
			name: "roll_dice with ten dice", msg: protoMsg("roll_dice", "", protoData(`"dice":`+protoDice(10, 12))),
			kind: cmdRoll, game: protoGameID, dice: slices.Repeat([]int{12}, 10),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, perr := decode([]byte(tc.msg))
			if perr != nil {
				t.Fatalf("decode(%s) = error %v, want success", tc.msg, perr)
			}
			if got.kind != tc.kind || got.id != tc.id || got.game != tc.game {
				t.Errorf("decode = kind %d id %q game %s, want kind %d id %q game %s",
					got.kind, got.id, got.game, tc.kind, tc.id, tc.game)
			}
			if string(got.decision) != tc.decision {
				t.Errorf("decision = %s, want %s", got.decision, tc.decision)
			}
			if !slices.Equal(got.dice, tc.dice) {
				t.Errorf("dice = %v, want %v", got.dice, tc.dice)
			}
		})
	}
}

// protoErrCase is one bad client frame and the error frame it must produce;
// id is the id the error must echo, "" when none may be echoed.
type protoErrCase struct {
	name string
	msg  string
	code string
	id   string
}

// protoCheckErrors runs decode on each case and checks the error code, the
// echoed id and that the human message is present and short.
func protoCheckErrors(t *testing.T, cases []protoErrCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, perr := decode([]byte(tc.msg))
			if perr == nil {
				t.Fatalf("decode succeeded (kind %d, id %q, game %s), want %s", got.kind, got.id, got.game, tc.code)
			}
			if perr.code != tc.code || perr.id != tc.id {
				t.Errorf("decode = code %q id %q (%s), want code %q id %q", perr.code, perr.id, perr.message, tc.code, tc.id)
			}
			if perr.message == "" || len(perr.message) > protoMaxMessage {
				t.Errorf("message %q: want 1 to %d bytes", perr.message, protoMaxMessage)
			}
			if got.kind != 0 || got.id != "" || got.decision != nil || got.dice != nil {
				t.Errorf("command %+v returned with the error, want the zero command", got)
			}
		})
	}
}

// TestDecodeInvalidJSON checks that a frame that is not one JSON object is
// invalid_json and echoes no id, since none can be trusted.
func TestDecodeInvalidJSON(t *testing.T) {
	protoCheckErrors(t, []protoErrCase{
		{name: "invalid UTF-8 inside a string", msg: "{\"type\":\"heartbeat\",\"id\":\"a\xff\"}", code: codeInvalidJSON},
		{name: "invalid UTF-8 alone", msg: "\xff\xfe\xfd", code: codeInvalidJSON},
		{name: "truncated UTF-8 sequence", msg: "{\"type\":\"heartbeat\",\"id\":\"\xc3\"}", code: codeInvalidJSON},
		{name: "empty frame", msg: "", code: codeInvalidJSON},
		{name: "whitespace only", msg: " \n\t", code: codeInvalidJSON},
		{name: "plain text", msg: "hello", code: codeInvalidJSON},
		{name: "unterminated object", msg: `{"type":"heartbeat","id":"a"`, code: codeInvalidJSON},
		{name: "missing value", msg: `{"type":}`, code: codeInvalidJSON},
		{name: "single quotes", msg: `{'type':'heartbeat'}`, code: codeInvalidJSON},
		{name: "trailing comma", msg: `{"type":"heartbeat",}`, code: codeInvalidJSON},
		{name: "JSON empty array", msg: `[]`, code: codeInvalidJSON},
		{name: "JSON array holding a frame", msg: `[{"type":"heartbeat","id":"a"}]`, code: codeInvalidJSON},
		{name: "JSON string", msg: `"heartbeat"`, code: codeInvalidJSON},
		{name: "JSON number", msg: `42`, code: codeInvalidJSON},
		{name: "JSON true", msg: `true`, code: codeInvalidJSON},
		{name: "JSON null", msg: `null`, code: codeInvalidJSON},
		{name: "trailing garbage word", msg: `{"type":"heartbeat","id":"a"} x`, code: codeInvalidJSON},
		{name: "trailing second object", msg: `{"type":"heartbeat","id":"a"}{"type":"heartbeat"}`, code: codeInvalidJSON},
		{name: "trailing bracket", msg: `{"type":"heartbeat","id":"a"}]`, code: codeInvalidJSON},
	})
}

// TestDecodeInvalidMessage checks valid JSON with a missing or mistyped field,
// a bad id or bad dice is invalid_message, echoing the id only when it is valid.
func TestDecodeInvalidMessage(t *testing.T) {
	cases := []protoErrCase{
		{name: "missing type echoes id", msg: `{"id":"m1"}`, code: codeInvalidMessage, id: "m1"},
		{name: "missing type without id", msg: `{}`, code: codeInvalidMessage},
		{name: "missing type with data", msg: `{"id":"m2","data":{"game_id":"` + protoGame + `"}}`, code: codeInvalidMessage, id: "m2"},
		{name: "null type", msg: `{"type":null,"id":"m3"}`, code: codeInvalidMessage, id: "m3"},
		{name: "numeric type", msg: `{"type":1,"id":"m4"}`, code: codeInvalidMessage, id: "m4"},
		{name: "boolean type", msg: `{"type":true,"id":"m5"}`, code: codeInvalidMessage, id: "m5"},
		{name: "array type", msg: `{"type":["heartbeat"],"id":"m6"}`, code: codeInvalidMessage, id: "m6"},
		{name: "object type", msg: `{"type":{"name":"heartbeat"},"id":"m7"}`, code: codeInvalidMessage, id: "m7"},
		{name: "numeric id is not echoed", msg: `{"type":"heartbeat","id":7}`, code: codeInvalidMessage},
		{name: "float id is not echoed", msg: `{"type":"heartbeat","id":7.5}`, code: codeInvalidMessage},
		{name: "boolean id is not echoed", msg: `{"type":"heartbeat","id":true}`, code: codeInvalidMessage},
		{name: "array id is not echoed", msg: `{"type":"heartbeat","id":["a"]}`, code: codeInvalidMessage},
		{name: "object id is not echoed", msg: `{"type":"heartbeat","id":{"a":1}}`, code: codeInvalidMessage},
		{name: "id of 65 ASCII characters is not echoed", msg: protoMsg("heartbeat", strings.Repeat("a", 65), ""), code: codeInvalidMessage},
		{name: "id of 65 two-byte characters is not echoed", msg: protoMsg("heartbeat", strings.Repeat("é", 65), ""), code: codeInvalidMessage},
		{name: "huge id is not echoed", msg: protoMsg("join_game", strings.Repeat("x", 100000), protoData("")), code: codeInvalidMessage},
		{name: "numeric id checked before unknown type", msg: `{"type":"nope","id":1}`, code: codeInvalidMessage},
	}
	for _, typ := range []string{"join_game", "leave_game", "submit_defensive_decision", "submit_offensive_decision", "roll_dice"} {
		cases = append(cases,
			protoErrCase{name: typ + " without data", msg: protoMsg(typ, "x1", ""), code: codeInvalidMessage, id: "x1"},
			protoErrCase{name: typ + " with null data", msg: protoMsg(typ, "x2", "null"), code: codeInvalidMessage, id: "x2"},
			protoErrCase{name: typ + " with array data", msg: protoMsg(typ, "x3", `[{"game_id":"`+protoGame+`"}]`), code: codeInvalidMessage, id: "x3"},
			protoErrCase{name: typ + " with string data", msg: protoMsg(typ, "x4", `"`+protoGame+`"`), code: codeInvalidMessage, id: "x4"},
			protoErrCase{name: typ + " with number data", msg: protoMsg(typ, "x5", "1"), code: codeInvalidMessage, id: "x5"},
			protoErrCase{name: typ + " with boolean data", msg: protoMsg(typ, "x6", "true"), code: codeInvalidMessage, id: "x6"},
			protoErrCase{name: typ + " without game_id", msg: protoMsg(typ, "g1", `{}`), code: codeInvalidMessage, id: "g1"},
			protoErrCase{name: typ + " with null game_id", msg: protoMsg(typ, "g2", `{"game_id":null}`), code: codeInvalidMessage, id: "g2"},
			protoErrCase{name: typ + " with numeric game_id", msg: protoMsg(typ, "g3", `{"game_id":12345}`), code: codeInvalidMessage, id: "g3"},
			protoErrCase{name: typ + " with array game_id", msg: protoMsg(typ, "g4", `{"game_id":["`+protoGame+`"]}`), code: codeInvalidMessage, id: "g4"},
			protoErrCase{name: typ + " with object game_id", msg: protoMsg(typ, "g5", `{"game_id":{}}`), code: codeInvalidMessage, id: "g5"},
			protoErrCase{name: typ + " with boolean game_id", msg: protoMsg(typ, "g6", `{"game_id":true}`), code: codeInvalidMessage, id: "g6"},
		)
	}
	for _, typ := range []string{"submit_defensive_decision", "submit_offensive_decision"} {
		cases = append(cases,
			protoErrCase{name: typ + " without decision", msg: protoMsg(typ, "d1", protoData("")), code: codeInvalidMessage, id: "d1"},
			protoErrCase{name: typ + " with null decision", msg: protoMsg(typ, "d2", protoData(`"decision":null`)), code: codeInvalidMessage, id: "d2"},
			protoErrCase{name: typ + " with string decision", msg: protoMsg(typ, "d3", protoData(`"decision":"bunt"`)), code: codeInvalidMessage, id: "d3"},
			protoErrCase{name: typ + " with array decision", msg: protoMsg(typ, "d4", protoData(`"decision":[{"bunt":true}]`)), code: codeInvalidMessage, id: "d4"},
			protoErrCase{name: typ + " with number decision", msg: protoMsg(typ, "d5", protoData(`"decision":3`)), code: codeInvalidMessage, id: "d5"},
			protoErrCase{name: typ + " with boolean decision", msg: protoMsg(typ, "d6", protoData(`"decision":true`)), code: codeInvalidMessage, id: "d6"},
		)
	}
	roll := func(name, dice string) protoErrCase {
		return protoErrCase{name: "dice " + name, msg: protoMsg("roll_dice", "r", protoData(`"dice":`+dice)), code: codeInvalidMessage, id: "r"}
	}
	cases = append(cases,
		roll("empty", `[]`),
		roll("eleven", protoDice(11, 6)),
		roll("ten thousand", protoDice(10000, 6)),
		roll("side 1", `[1]`),
		roll("side 0", `[0]`),
		roll("negative side", `[-6]`),
		roll("side 101", `[101]`),
		roll("one bad side among good", `[6,6,101,6]`),
		roll("non-integer side", `[2.5]`),
		roll("huge number side", `[1e400]`),
		roll("side beyond int64", `[9223372036854775808]`),
		roll("string side", `["6"]`),
		roll("null side", `[null]`),
		roll("boolean side", `[true]`),
		roll("nested array side", `[[6]]`),
		roll("string", `"6,6,6,20"`),
		roll("number", `6`),
		roll("object", `{"sides":6}`),
		roll("boolean", `true`),
	)
	protoCheckErrors(t, cases)
}

// TestDecodeUnknownType checks a string type outside the contract's table is
// unknown_type with the id echoed, and that the message never grows with the type.
func TestDecodeUnknownType(t *testing.T) {
	protoCheckErrors(t, []protoErrCase{
		{name: "made-up type", msg: `{"type":"fly_away","id":"u1"}`, code: codeUnknownType, id: "u1"},
		{name: "made-up type without id", msg: `{"type":"fly_away"}`, code: codeUnknownType},
		{name: "empty type", msg: `{"type":"","id":"u2"}`, code: codeUnknownType, id: "u2"},
		{name: "wrong case", msg: `{"type":"Heartbeat","id":"u3"}`, code: codeUnknownType, id: "u3"},
		{name: "trailing space", msg: `{"type":"heartbeat ","id":"u4"}`, code: codeUnknownType, id: "u4"},
		{name: "server frame type", msg: `{"type":"heartbeat_ack","id":"u5"}`, code: codeUnknownType, id: "u5"},
		{name: "error frame type", msg: `{"type":"error","id":"u6"}`, code: codeUnknownType, id: "u6"},
		{name: "room event type", msg: `{"type":"dice_rolled","id":"u7","data":` + protoData("") + `}`, code: codeUnknownType, id: "u7"},
		{name: "very long type", msg: protoMsg(strings.Repeat("t", 1<<20), "u8", ""), code: codeUnknownType, id: "u8"},
		{name: "very long multibyte type", msg: protoMsg(strings.Repeat("日本", 100000), "u9", ""), code: codeUnknownType, id: "u9"},
		{name: "long type of control characters", msg: `{"type":"` + strings.Repeat(`\u0001`, 5000) + `","id":"u10"}`, code: codeUnknownType, id: "u10"},
	})
}

// TestDecodeInvalidGameID checks that a game_id string that is not a UUID is
// invalid_game_id for every game command, with the id echoed.
func TestDecodeInvalidGameID(t *testing.T) {
	bad := []struct{ name, gameID string }{
		{"empty", ""},
		{"word", "game-1"},
		{"35 characters", protoGame[:35]},
		{"37 characters", protoGame + "0"},
		{"non-hex digit", "6ba7b810-9dad-11d1-80b4-00c04fd430cg"},
		{"misplaced dash", "6ba7b8109-dad-11d1-80b4-00c04fd430c8"},
		{"dashes replaced by spaces", "6ba7b810 9dad 11d1 80b4 00c04fd430c8"},
		{"leading space", " " + protoGame},
		{"trailing newline", protoGame + "\n"},
		{"opening brace only", "{" + protoGame},
		{"closing brace only", protoGame + "}"},
		{"wrong urn prefix", "urn:uuix:" + protoGame},
		{"urn prefix without dashes", "urn:uuid:6ba7b8109dad11d180b400c04fd430c8"},
		{"32 non-hex characters", strings.Repeat("z", 32)},
		{"33 hex digits", "6ba7b8109dad11d180b400c04fd430c80"},
		{"integer text", "12345"},
	}
	var cases []protoErrCase
	for _, typ := range []string{"join_game", "leave_game", "submit_defensive_decision", "submit_offensive_decision", "roll_dice"} {
		for _, b := range bad {
			data := `{"game_id":` + strconv.Quote(b.gameID) + `,"decision":{},"dice":[6]}`
			cases = append(cases, protoErrCase{name: typ + " " + b.name, msg: protoMsg(typ, "gid", data), code: codeInvalidGameID, id: "gid"})
		}
	}
	protoCheckErrors(t, cases)
}

// TestDecodeGameIDFakeBraces checks that only real braces make the braced
// spelling: any other pair of characters around a UUID is not a UUID.
// google/uuid's Parse strips the first and last of any 38 characters without
// looking at them, so decode must not rely on it alone.
func TestDecodeGameIDFakeBraces(t *testing.T) {
	var cases []protoErrCase
	for _, b := range []struct{ name, gameID string }{
		{"parentheses instead of braces", "(" + protoGame + ")"},
		{"letters instead of braces", "x" + protoGame + "y"},
		{"braces reversed", "}" + protoGame + "{"},
		{"quotes instead of braces", `"` + protoGame + `"`},
	} {
		cases = append(cases, protoErrCase{
			name: b.name, msg: protoMsg("join_game", "gid", `{"game_id":`+strconv.Quote(b.gameID)+`}`),
			code: codeInvalidGameID, id: "gid",
		})
	}
	protoCheckErrors(t, cases)
}

// TestDecodeGameIDSpellings checks every spelling of one UUID names the same game.
func TestDecodeGameIDSpellings(t *testing.T) {
	spellings := []struct{ name, gameID string }{
		{"canonical", protoGame},
		{"upper case", strings.ToUpper(protoGame)},
		{"mixed case", "6BA7b810-9DAD-11d1-80B4-00c04FD430C8"},
		{"braces", "{" + protoGame + "}"},
		{"braces upper case", "{" + strings.ToUpper(protoGame) + "}"},
		{"urn", "urn:uuid:" + protoGame},
		{"urn upper case", "URN:UUID:" + strings.ToUpper(protoGame)},
		{"no dashes", strings.ReplaceAll(protoGame, "-", "")},
		{"no dashes upper case", strings.ToUpper(strings.ReplaceAll(protoGame, "-", ""))},
	}
	for _, typ := range []string{"join_game", "leave_game", "submit_defensive_decision", "submit_offensive_decision", "roll_dice"} {
		for _, sp := range spellings {
			t.Run(typ+" "+sp.name, func(t *testing.T) {
				data := `{"game_id":` + strconv.Quote(sp.gameID) + `,"decision":{}}`
				cmd, perr := decode([]byte(protoMsg(typ, "", data)))
				if perr != nil {
					t.Fatalf("decode: %v", perr)
				}
				if cmd.game != protoGameID {
					t.Errorf("game = %s, want %s", cmd.game, protoGameID)
				}
			})
		}
	}
}

// TestDecodeDeepNesting checks pathological nesting neither crashes decode nor
// passes as valid: encoding/json's depth limit turns it into an error frame.
func TestDecodeDeepNesting(t *testing.T) {
	const depth = 100000
	cases := []struct{ name, msg string }{
		{"unbalanced brackets in decision", protoMsg("submit_offensive_decision", "n", protoData(`"decision":`+strings.Repeat("[", depth)))},
		{"balanced brackets in decision", protoMsg("submit_offensive_decision", "n", protoData(`"decision":{"a":`+strings.Repeat("[", depth)+strings.Repeat("]", depth)+`}`))},
		{"nested objects in decision", protoMsg("submit_defensive_decision", "n", protoData(`"decision":`+strings.Repeat(`{"a":`, depth)+"1"+strings.Repeat("}", depth)))},
		{"nested arrays in heartbeat data", protoMsg("heartbeat", "n", strings.Repeat("[", depth)+strings.Repeat("]", depth))},
		{"nested arrays as dice", protoMsg("roll_dice", "n", protoData(`"dice":`+strings.Repeat("[", depth)+strings.Repeat("]", depth)))},
		{"nested arrays as id", `{"type":"heartbeat","id":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var perr *protoError
			panicked := func() (p any) {
				defer func() { p = recover() }()
				_, perr = decode([]byte(tc.msg))
				return nil
			}()
			if panicked != nil {
				t.Fatalf("decode panicked: %v", panicked)
			}
			if perr == nil {
				t.Fatalf("decode accepted %d levels of nesting", depth)
			}
			if perr.code != codeInvalidJSON && perr.code != codeInvalidMessage {
				t.Errorf("code = %q, want %q or %q", perr.code, codeInvalidJSON, codeInvalidMessage)
			}
			if len(perr.message) > protoMaxMessage {
				t.Errorf("message is %d bytes, want at most %d", len(perr.message), protoMaxMessage)
			}
		})
	}
}

// TestDecodeModerateNesting checks a decision nested within encoding/json's
// limits is relayed whole.
func TestDecodeModerateNesting(t *testing.T) {
	decision := strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat("}", 1000)
	cmd, perr := decode([]byte(protoMsg("submit_defensive_decision", "", protoData(`"decision":`+decision))))
	if perr != nil {
		t.Fatalf("decode: %v", perr)
	}
	if string(cmd.decision) != decision {
		t.Errorf("decision was not kept byte for byte (%d bytes, want %d)", len(cmd.decision), len(decision))
	}
}

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

// TestQuoteShort checks client strings are quoted and cut to a short, valid
// UTF-8 text that never splits a character.
func TestQuoteShort(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", `""`},
		{"short", "abc", `"abc"`},
		{"quotes and control characters are escaped", "a\"b\n\x01", `"a\"b\n\x01"`},
		{"32 bytes kept whole", strings.Repeat("a", 32), `"` + strings.Repeat("a", 32) + `"`},
		{"33 bytes cut", strings.Repeat("a", 33), `"` + strings.Repeat("a", 32) + `…"`},
		{"huge", strings.Repeat("b", 1<<20), `"` + strings.Repeat("b", 32) + `…"`},
		{"two-byte character across the cut", strings.Repeat("a", 31) + "éb", `"` + strings.Repeat("a", 31) + `…"`},
		{"four-byte character across the cut", strings.Repeat("a", 30) + "🎲b", `"` + strings.Repeat("a", 30) + `…"`},
		{"character ending at the cut", strings.Repeat("a", 30) + "éb", `"` + strings.Repeat("a", 30) + `é…"`},
		{"all multibyte", strings.Repeat("日", 20), `"` + strings.Repeat("日", 10) + `…"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := quoteShort(tc.in)
			if got != tc.want {
				t.Errorf("quoteShort = %s, want %s", got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("quoteShort = %q is not valid UTF-8", got)
			}
		})
	}
}

// TestQuoteShortInvalidUTF8 checks bytes that are not UTF-8 at all are cut without
// panicking and still come out as valid UTF-8.
func TestQuoteShortInvalidUTF8(t *testing.T) {
	got := quoteShort(strings.Repeat("\x80", 40))
	if !utf8.ValidString(got) || len(got) > 2*protoMaxMessage {
		t.Errorf("quoteShort = %q, want short valid UTF-8", got)
	}
}

// protoFrame is a server frame split into its top-level and data fields, each
// kept raw so tests can tell null, absent and present apart.
type protoFrame struct {
	top  map[string]json.RawMessage
	data map[string]json.RawMessage
}

// protoParse splits a server frame, failing the test if it is not one JSON
// object whose data is an object.
func protoParse(t *testing.T, b []byte) protoFrame {
	t.Helper()
	var f protoFrame
	if err := json.Unmarshal(b, &f.top); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	if err := json.Unmarshal(f.top["data"], &f.data); err != nil {
		t.Fatalf("frame %s data: %v", b, err)
	}
	return f
}

// protoField checks that a field holds exactly the raw JSON want.
func protoField(t *testing.T, fields map[string]json.RawMessage, key, want string) {
	t.Helper()
	got, ok := fields[key]
	if !ok {
		t.Errorf("field %q is missing, want %s", key, want)
		return
	}
	if string(got) != want {
		t.Errorf("field %q = %s, want %s", key, got, want)
	}
}

// protoKeys checks that fields holds exactly the given keys.
func protoKeys(t *testing.T, fields map[string]json.RawMessage, keys ...string) {
	t.Helper()
	var got []string
	for k := range fields {
		got = append(got, k)
	}
	slices.Sort(got)
	keys = slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, keys) {
		t.Errorf("keys = %v, want %v", got, keys)
	}
}

// protoUser returns a pointer to a user id.
func protoUser(n int64) *int64 { return &n }

// TestEncodeEvent checks the room event: the sender's copy carries its id, the
// shared copy never does, and without an id both are the same bytes.
func TestEncodeEvent(t *testing.T) {
	upper := uuid.MustParse(strings.ToUpper(protoGame))
	cases := []struct {
		name    string
		cmd     command
		userID  *int64
		results []int
		typ     string
		want    map[string]string // data fields, raw JSON
	}{
		{
			name: "defensive decision with id", userID: protoUser(42), typ: "defensive_decision",
			cmd:  command{kind: cmdDefensive, id: "d1", game: upper, decision: json.RawMessage(`{"shift":"in"}`)},
			want: map[string]string{"game_id": `"` + protoGame + `"`, "sid": `"s1"`, "user_id": `42`, "decision": `{"shift":"in"}`},
		},
		{
			name: "offensive decision without id", userID: nil, typ: "offensive_decision",
			cmd:  command{kind: cmdOffensive, game: upper, decision: json.RawMessage(`{"steal":2}`)},
			want: map[string]string{"game_id": `"` + protoGame + `"`, "sid": `"s1"`, "user_id": `null`, "decision": `{"steal":2}`},
		},
		{
			name: "dice with id", userID: protoUser(7), typ: "dice_rolled", results: []int{3, 17},
			cmd:  command{kind: cmdRoll, id: "r1", game: upper, dice: []int{6, 20}},
			want: map[string]string{"game_id": `"` + protoGame + `"`, "sid": `"s1"`, "user_id": `7`, "dice": `[6,20]`, "results": `[3,17]`},
		},
		{
			name: "dice without id", userID: nil, typ: "dice_rolled", results: []int{1, 2, 3, 4},
			cmd:  command{kind: cmdRoll, game: upper, dice: []int{6, 6, 6, 20}},
			want: map[string]string{"game_id": `"` + protoGame + `"`, "sid": `"s1"`, "user_id": `null`, "dice": `[6,6,6,20]`, "results": `[1,2,3,4]`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			others := encodeEvent(tc.cmd, "s1", tc.userID, tc.results)
			self := withID(others, tc.cmd.id)
			o := protoParse(t, others)
			protoKeys(t, o.top, "type", "data")
			protoField(t, o.top, "type", strconv.Quote(tc.typ))
			keys := make([]string, 0, len(tc.want))
			for k, v := range tc.want {
				keys = append(keys, k)
				protoField(t, o.data, k, v)
			}
			protoKeys(t, o.data, keys...)

			if tc.cmd.id == "" {
				if !bytes.Equal(self, others) {
					t.Errorf("without an id the two copies differ:\nself   %s\nothers %s", self, others)
				}
				return
			}
			s := protoParse(t, self)
			protoKeys(t, s.top, "type", "id", "data")
			protoField(t, s.top, "type", strconv.Quote(tc.typ))
			protoField(t, s.top, "id", strconv.Quote(tc.cmd.id))
			if !bytes.Equal(s.top["data"], o.top["data"]) {
				t.Errorf("self data %s differs from others data %s", s.top["data"], o.top["data"])
			}
		})
	}
}

// TestEncodePresence checks presence frames: no id, canonical game id, and a
// reason only when a member left.
func TestEncodePresence(t *testing.T) {
	upper := uuid.MustParse("{" + strings.ToUpper(protoGame) + "}")
	cases := []struct {
		name, status, reason string
		userID               *int64
		wantReason           string // raw JSON; "" means the key must be absent
		wantUser             string
	}{
		{name: "joined has no reason", status: "joined", userID: protoUser(42), wantUser: "42"},
		{name: "anonymous joined", status: "joined", wantUser: "null"},
		{name: "left by leaving", status: "left", reason: presenceLeft, userID: protoUser(1), wantReason: `"left"`, wantUser: "1"},
		{name: "left by disconnecting", status: "left", reason: presenceDisconnected, wantReason: `"disconnected"`, wantUser: "null"},
		{name: "left by expiry", status: "left", reason: presenceExpired, userID: protoUser(3), wantReason: `"expired"`, wantUser: "3"},
		{name: "left by timeout", status: "left", reason: presenceTimeout, wantReason: `"timeout"`, wantUser: "null"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := protoParse(t, encodePresence(upper, "sid-1", tc.userID, tc.status, tc.reason))
			protoKeys(t, f.top, "type", "data")
			protoField(t, f.top, "type", `"presence"`)
			protoField(t, f.data, "game_id", `"`+protoGame+`"`)
			protoField(t, f.data, "sid", `"sid-1"`)
			protoField(t, f.data, "user_id", tc.wantUser)
			protoField(t, f.data, "status", strconv.Quote(tc.status))
			if tc.wantReason == "" {
				protoKeys(t, f.data, "game_id", "sid", "user_id", "status")
			} else {
				protoField(t, f.data, "reason", tc.wantReason)
			}
		})
	}
}

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

// protoRFC3339UTC matches an RFC 3339 timestamp in UTC ("Z"), with optional fraction.
var protoRFC3339UTC = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$`)

// TestEncodeHeartbeatAck checks heartbeat_ack carries the moment as an RFC 3339
// UTC timestamp, and the heartbeat's id when it had one.
func TestEncodeHeartbeatAck(t *testing.T) {
	east := time.FixedZone("UTC+5:30", 5*3600+1800)
	cases := []struct {
		name string
		id   string
		now  time.Time
	}{
		{"UTC time with id", "h1", time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)},
		{"local time converted to UTC", "", time.Date(2024, 3, 1, 2, 15, 0, 0, east)},
		{"fractional seconds kept", "h2", time.Date(2024, 12, 31, 23, 59, 59, 123456789, time.UTC)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := protoParse(t, encodeHeartbeatAck(tc.id, tc.now))
			protoField(t, f.top, "type", `"heartbeat_ack"`)
			if tc.id == "" {
				protoKeys(t, f.top, "type", "data")
			} else {
				protoField(t, f.top, "id", strconv.Quote(tc.id))
			}
			protoKeys(t, f.data, "timestamp")
			var ts string
			if err := json.Unmarshal(f.data["timestamp"], &ts); err != nil {
				t.Fatalf("timestamp %s: %v", f.data["timestamp"], err)
			}
			if !protoRFC3339UTC.MatchString(ts) {
				t.Errorf("timestamp %q is not RFC 3339 in UTC", ts)
			}
			got, err := time.Parse(time.RFC3339, ts)
			if err != nil || !got.Equal(tc.now) {
				t.Errorf("timestamp %q parses to %v (%v), want %v", ts, got, err, tc.now)
			}
		})
	}
}

// TestEncodeExpiring checks session_expiring states the time left in
// milliseconds, the instant in RFC 3339 (UTC, milliseconds), and the game
// whose timeout it is, null for SESSION_TIMEOUT's.
func TestEncodeExpiring(t *testing.T) {
	now := time.Date(2026, 11, 27, 15, 22, 48, 0, time.FixedZone("CET", 3600))
	game := uuid.MustParse("6F9619FF-8B86-D011-B42D-00C04FD430C8")
	for _, tc := range []struct {
		name     string
		game     *uuid.UUID
		wantGame string
	}{
		{"SESSION_TIMEOUT's", nil, "null"},
		{"a game's", &game, `"6f9619ff-8b86-d011-b42d-00c04fd430c8"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := protoParse(t, encodeExpiring(now, now.Add(90*time.Second+500*time.Millisecond), tc.game))
			protoKeys(t, f.top, "type", "data")
			protoField(t, f.top, "type", `"session_expiring"`)
			protoKeys(t, f.data, "expires_in_ms", "expires_at", "game_id")
			protoField(t, f.data, "expires_in_ms", "90500")
			protoField(t, f.data, "expires_at", `"2026-11-27T14:24:18.500Z"`)
			protoField(t, f.data, "game_id", tc.wantGame)
		})
	}
}

// TestEncodeSessionFrame checks the first frame's shape: sid, user id (null
// when anonymous), the two timings in milliseconds, the token's exp (null
// when none), and no id.
func TestEncodeSessionFrame(t *testing.T) {
	cases := []struct {
		name     string
		userID   *int64
		wantUser string
		exp      int64
		wantExp  string
	}{
		{"anonymous", nil, "null", 0, "null"},
		{"authenticated", protoUser(42), "42", 1796150606, "1796150606"},
		{"large user id, token without exp", protoUser(1 << 53), "9007199254740992", 0, "null"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := protoParse(t, encode("session", "", sessionData{
				SID: "0123456789abcdefGHIJ", UserID: tc.userID,
				PingIntervalMS: 25000, SessionTimeoutMS: 300000,
				Protocol: protocolVersion, ResumeToken: "T0KEN", ResumeWindowMS: 60000, TokenExp: expJSON(tc.exp),
			}))
			protoKeys(t, f.top, "type", "data")
			protoField(t, f.top, "type", `"session"`)
			protoKeys(t, f.data, "sid", "user_id", "ping_interval_ms", "session_timeout_ms", "protocol", "resume_token", "resume_window_ms", "token_exp")
			protoField(t, f.data, "token_exp", tc.wantExp)
			protoField(t, f.data, "protocol", "2")
			protoField(t, f.data, "resume_token", `"T0KEN"`)
			protoField(t, f.data, "resume_window_ms", "60000")
			protoField(t, f.data, "sid", `"0123456789abcdefGHIJ"`)
			protoField(t, f.data, "user_id", tc.wantUser)
			protoField(t, f.data, "ping_interval_ms", "25000")
			protoField(t, f.data, "session_timeout_ms", "300000")
		})
	}
}

// TestEncodeGameIDCanonical checks that whatever spelling a client used, the
// frames built from its decoded command write the game id in canonical lowercase.
func TestEncodeGameIDCanonical(t *testing.T) {
	spellings := []string{
		strings.ToUpper(protoGame),
		"{" + strings.ToUpper(protoGame) + "}",
		"URN:UUID:" + protoGame,
		strings.ToUpper(strings.ReplaceAll(protoGame, "-", "")),
	}
	for _, sp := range spellings {
		t.Run(sp, func(t *testing.T) {
			data := `{"game_id":` + strconv.Quote(sp) + `,"decision":{}}`
			cmd, perr := decode([]byte(protoMsg("submit_defensive_decision", "c", data)))
			if perr != nil {
				t.Fatalf("decode: %v", perr)
			}
			others := encodeEvent(cmd, "s", nil, nil)
			self := withID(others, cmd.id)
			frames := map[string][]byte{
				"event to sender": self,
				"event to others": others,
				"presence":        encodePresence(cmd.game, "s", nil, "joined", ""),
				"game_left":       encode("game_left", cmd.id, gameRef{GameID: cmd.game.String()}),
				"game_joined":     encode("game_joined", cmd.id, gameJoinedData{GameID: cmd.game.String(), Members: []member{{SID: "s"}}}),
			}
			for name, b := range frames {
				f := protoParse(t, b)
				if string(f.data["game_id"]) != `"`+protoGame+`"` {
					t.Errorf("%s game_id = %s, want %q", name, f.data["game_id"], protoGame)
				}
			}
		})
	}
}

// TestCloseReasons checks the close-reason table against contract v2 §3 and
// §6: code, goodbye word, v1's left reason, whether a close frame is sent,
// whether the session goes away (and why) or ends, and what the goodbye says.
func TestCloseReasons(t *testing.T) {
	cases := []struct {
		name       string
		r          closeReason
		code       int
		word       string
		presence   string
		sendsClose bool
		away       string
		resumable  bool
	}{
		{"expired", reasonExpired, 4000, "expired", "expired", true, "", false},
		{"taken over", reasonTakenOver, 4001, "taken_over", "", true, "", false},
		{"shutdown", reasonShutdown, 1001, "shutdown", "disconnected", true, "", false},
		{"slow consumer", reasonSlow, 1008, "slow_consumer", "disconnected", true, "slow_consumer", true},
		{"flood", reasonFlood, 1008, "rate_limited", "disconnected", true, "", false},
		{"too big", reasonTooBig, 1009, "too_big", "disconnected", true, "", false},
		{"binary", reasonBinary, 1003, "binary", "disconnected", true, "", false},
		{"missed pong", reasonTimeout, 1006, "", "timeout", false, "timeout", false},
		{"lost", reasonDisconnected, 1006, "", "disconnected", false, "disconnected", false},
		{"client's goodbye", peerClosed(1000), 1000, "", "disconnected", false, "", false},
		{"tab closed", peerClosed(1001), 1001, "", "disconnected", false, "disconnected", false},
		{"client's own code", peerClosed(4321), 4321, "", "disconnected", false, "disconnected", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := struct {
				code                 int
				word, presence, away string
				sendsClose, resum    bool
			}{int(tc.r.code), tc.r.word, tc.r.presence, tc.r.away, tc.r.sendsClose, tc.r.resumable}
			want := struct {
				code                 int
				word, presence, away string
				sendsClose, resum    bool
			}{tc.code, tc.word, tc.presence, tc.away, tc.sendsClose, tc.resumable}
			if got != want {
				t.Errorf("reason = %+v, want %+v", got, want)
			}
			if tc.r.sendsClose != (tc.r.word != "") {
				t.Errorf("a close frame needs a goodbye word, and only it has one: %+v", tc.r)
			}
		})
	}
}

// TestGoodbye checks the goodbye frame: code, word, retry_after_ms null or a
// number, resumable.
func TestGoodbye(t *testing.T) {
	for _, tc := range []struct {
		r    closeReason
		want string
	}{
		{reasonExpired, `{"type":"goodbye","data":{"code":4000,"reason":"expired","retry_after_ms":null,"resumable":false}}`},
		{reasonSlow, `{"type":"goodbye","data":{"code":1008,"reason":"slow_consumer","retry_after_ms":null,"resumable":true}}`},
		{reasonShutdown.withRetry(1234 * time.Millisecond), `{"type":"goodbye","data":{"code":1001,"reason":"shutdown","retry_after_ms":1234,"resumable":false}}`},
		{reasonShutdown.withRetry(0), `{"type":"goodbye","data":{"code":1001,"reason":"shutdown","retry_after_ms":0,"resumable":false}}`},
	} {
		if got := string(encodeGoodbye(tc.r)); got != tc.want {
			t.Errorf("goodbye\n got %s\nwant %s", got, tc.want)
		}
	}
}

// TestPresenceWords checks the presence reasons are the contract's words.
func TestPresenceWords(t *testing.T) {
	cases := []struct{ name, got, want string }{
		{"left", presenceLeft, "left"},
		{"disconnected", presenceDisconnected, "disconnected"},
		{"expired", presenceExpired, "expired"},
		{"timeout", presenceTimeout, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("presence word = %q, want %q", tc.got, tc.want)
			}
		})
	}
}

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
