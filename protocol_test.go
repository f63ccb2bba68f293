package main

// Table tests of decode: every valid client frame and the command it becomes,
// and every kind of mistake with the error code and id it gets; quoteShort.
// The client-frame builders (protoMsg, protoData, protoDice) live here.

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
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
// decode is the reader's decoding of one text message as serveMessage runs
// it: decodeFast, then decodeStrict for what the fast path leaves.
func decode(msg []byte) (command, *protoError) {
	if cmd, perr, ok := decodeFast(msg); ok {
		return cmd, perr
	}
	return decodeStrict(msg)
}

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

// TestDecodeFastAgreesWithStrict runs the one-pass decoder on frames at the
// edges of what it reads itself: where it answers, its answer is the strict
// decoder's, and the plain frames of every game type take it.
func TestDecodeFastAgreesWithStrict(t *testing.T) {
	game := `"game_id":"` + protoGame + `"`
	cases := []struct {
		msg  string
		fast bool // decodeFast answers it itself
	}{
		{protoMsg("heartbeat", "h1", `[1,{"}":"]"}]`), true},
		{protoMsg("join_game", "j1", `{`+game+`}`), true},
		{protoMsg("leave_game", "", `{`+game+`}`), true},
		{protoMsg("submit_defensive_decision", "d1", `{`+game+`,"decision":{"s":"a,b}]","n":[1,-2.5e3,true,null],"o":{}}}`), true},
		{" {\n\"type\" : \"submit_offensive_decision\" ,\t\"data\":{ \"decision\" : { \"x\" : 1 } , " + game + " } }\r\n", true},
		{protoMsg("roll_dice", "r1", `{`+game+`,"dice":[6,20]}`), true},
		{protoMsg("roll_dice", "r2", `{`+game+`,"dice":null}`), true},
		{protoMsg("roll_dice", "r3", `{`+game+`,"dice":"six"}`), true}, // diagnosed by the fast path itself
		{protoMsg("join_game", "j1", `{"game_id":"{`+protoGame+`}"}`), true},
		// escapes, repeated and unknown keys, other spellings: the strict decoder's
		{`{"type":"heartbe\u0061t","id":"h"}`, false},
		{`{"type":"heartbeat","id":"a\nb"}`, false},
		{protoMsg("join_game", "j1", `{"game_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c\u0038"}`), false},
		{`{"type":"heartbeat","type":"join_game","data":{` + game + `}}`, false},
		{protoMsg("join_game", "j1", `{`+game+`,"game_id":"00000000-0000-0000-0000-000000000000"}`), false},
		{`{"Type":"join_game","data":{` + game + `}}`, false},
		{protoMsg("join_game", "j1", `{"Game_ID":"`+protoGame+`"}`), false},
		{`{"type":"heartbeat","extra":1}`, false},
		{protoMsg("submit_defensive_decision", "d1", `{`+game+`,"decision":{},"note":"x"}`), false},
		{`{"type":"resume","data":{` + game + `,"resume_token":"t"}}`, false},
		{`{"type":"refresh_token","data":{"token":"a.b.c"}}`, false},
		{`{"type":"heartbeat","id":null}`, false},
		{protoMsg("join_game", "j1", `"x"`), false},
		{`{"type":"heartbeat"} {}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.msg, func(t *testing.T) {
			strict, strictErr := decodeStrict([]byte(tc.msg))
			fast, fastErr, ok := decodeFast([]byte(tc.msg))
			if ok != tc.fast {
				t.Errorf("decodeFast answered: %v, want %v", ok, tc.fast)
			}
			if ok && (!reflect.DeepEqual(fast, strict) || !reflect.DeepEqual(fastErr, strictErr)) {
				t.Errorf("decodeFast %+v %v\ndecodeStrict %+v %v", fast, fastErr, strict, strictErr)
			}
			if got, gotErr := decode([]byte(tc.msg)); !reflect.DeepEqual(got, strict) || !reflect.DeepEqual(gotErr, strictErr) {
				t.Errorf("decode %+v %v\ndecodeStrict %+v %v", got, gotErr, strict, strictErr)
			}
		})
	}
}

// TestDecodeAllocations keeps a relayed decision's decode to the copies its
// command keeps: the id and the decision.
func TestDecodeAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what allocates")
	}
	msg := []byte(protoMsg("submit_defensive_decision", "d1", `{"game_id":"`+protoGame+`","decision":{"shift":"in","seq":1}}`))
	if n := testing.AllocsPerRun(100, func() { _, _ = decode(msg) }); n > 2 {
		t.Errorf("decode made %v allocations, want at most 2", n)
	}
}
