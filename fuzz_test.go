package main

// Fuzz targets: FuzzDecode throws arbitrary bytes at decode and checks that
// what comes out is a command the rest of the server can trust, or an error
// frame the client can read; FuzzHub reads arbitrary bytes as a sequence of
// hub operations and checks the hub against a small model after every one.
//
//	go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 60s
//	go test -run '^$' -fuzz '^FuzzHub$' -fuzztime 60s
//
// Interesting inputs found that way are kept under testdata/fuzz/<Name>/ and
// run as regression seeds by every plain `go test`.

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
)

// fzGame is the game the decode seeds name, in a non-canonical spelling.
const fzGame = "6F9619FF-8B86-D011-B42D-00C04FD430C8"

// fzContractCodes are the error codes protocol-v1.md lists.
var fzContractCodes = map[string]bool{
	"invalid_json": true, "invalid_message": true, "unknown_type": true, "invalid_game_id": true,
	"not_in_game": true, "too_many_games": true, "rate_limited": true,
}

// fzDecodeCodes are the codes decode itself may return: the others need the
// hub's state (not_in_game, too_many_games) or the reader's (rate_limited).
var fzDecodeCodes = map[string]bool{
	"invalid_json": true, "invalid_message": true, "unknown_type": true, "invalid_game_id": true,
}

// fzWireTypes maps the contract's client frame types to the kinds decode must produce.
var fzWireTypes = map[string]cmdKind{
	"heartbeat": cmdHeartbeat, "join_game": cmdJoin, "leave_game": cmdLeave,
	"submit_defensive_decision": cmdDefensive, "submit_offensive_decision": cmdOffensive, "roll_dice": cmdRoll,
	"refresh_token": cmdRefresh, "resume": cmdResume,
}

// fzDecodeSeeds are frames worth starting from: one valid frame of every type
// and spelling, and one of every error decode can report.
func fzDecodeSeeds() []string {
	game := `"game_id":"` + fzGame + `"`
	return []string{
		// valid, one per type
		`{"type":"heartbeat"}`,
		`{"type":"heartbeat","id":"h1","data":[1,2,{"x":null}]}`,
		`{"type":"heartbeat","id":""}`,
		`{"type":"join_game","id":"j1","data":{` + game + `}}`,
		`{"type":"leave_game","id":"l1","data":{` + game + `}}`,
		`{"type":"submit_defensive_decision","id":"d1","data":{` + game + `,"decision":{"shift":"infield_in"}}}`,
		`{"type":"submit_offensive_decision","data":{` + game + `,"decision":{"a":[1,{"b":"\u00e9<&>"}],"n":1e999}}}`,
		`{"type":"roll_dice","id":"r1","data":{` + game + `}}`,
		`{"type":"roll_dice","id":"r2","data":{` + game + `,"dice":[2,100,6,6,6,6,6,6,6,20]}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":null}}`,
		`{"type":"refresh_token","id":"t1","data":{"token":"a.b.c"}}`,
		`{"type":"refresh_token","data":{"token":""}}`,
		`{"type":"resume","id":"s1","data":{"resume_token":"AAAA","games":{"` + fzGame + `":{"epoch":"e","offset":3}}}}`,
		`{"type":"resume","data":{` + game + `,"resume_token":"AAAA"}}`,
		// spellings and readings
		`{"Type":"JOIN_GAME","ID":"x","Data":{"GAME_ID":"{6f9619ff-8b86-d011-b42d-00c04fd430c8}"}}`,
		`{"type":"join_game","data":{"game_id":"urn:uuid:6f9619ff-8b86-d011-b42d-00c04fd430c8"}}`,
		`{"type":"join_game","data":{"game_id":"6f9619ff8b86d011b42d00c04fd430c8"}}`,
		`{"type":"join_game","data":{"game_id":"00000000-0000-0000-0000-000000000000"}}`,
		`{"type":"heartbeat","type":"join_game","data":{` + game + `},"id":"a","id":"b"}`,
		` 	{"type":"heartbeat","id":"` + strings.Repeat("é", 64) + `"}`,
		// invalid_json
		``, `nope`, `[]`, `"heartbeat"`, `42`, `null`, `{"type":"heartbeat"`, `{"type":"heartbeat"} {}`,
		"{\"type\":\"heartbeat\",\"id\":\"\xff\"}",
		strings.Repeat("[", 64),
		// invalid_message
		`{}`, `{"id":"m1"}`, `{"type":5}`, `{"type":"heartbeat","id":7}`,
		`{"type":"heartbeat","id":"` + strings.Repeat("x", 65) + `"}`,
		`{"type":"join_game","id":"m2"}`, `{"type":"join_game","data":"x"}`, `{"type":"join_game","data":[]}`,
		`{"type":"join_game","data":{}}`, `{"type":"join_game","data":{"game_id":7}}`,
		`{"type":"submit_defensive_decision","data":{` + game + `}}`,
		`{"type":"submit_offensive_decision","data":{` + game + `,"decision":"bunt"}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":[]}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":[1]}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":[101]}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":[6,6,6,6,6,6,6,6,6,6,6]}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":[6.5]}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":[1e999]}}`,
		`{"type":"roll_dice","data":{` + game + `,"dice":6}}`,
		`{"type":"refresh_token","id":"t2","data":{}}`, `{"type":"refresh_token","data":{"token":7}}`,
		`{"type":"refresh_token","data":{"token":null}}`, `{"type":"refresh_token","data":"a.b.c"}`,
		// unknown_type
		`{"type":"chat","id":"u1"}`, `{"type":"heartbeat_ack"}`, `{"type":""}`,
		`{"type":"` + strings.Repeat("\\u0001", 40) + `"}`,
		// invalid_game_id
		`{"type":"join_game","id":"g1","data":{"game_id":"not-a-uuid"}}`,
		`{"type":"leave_game","data":{"game_id":"x6f9619ff-8b86-d011-b42d-00c04fd430c8x"}}`,
		`{"type":"roll_dice","data":{"game_id":""}}`,
	}
}

// FuzzDecode checks decode on any bytes: it never panics, returns exactly one
// of a command and an error, and each is what the contract promises.
func FuzzDecode(f *testing.F) {
	for _, s := range fzDecodeSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		orig := bytes.Clone(msg)
		cmd, perr := decode(msg)
		if !bytes.Equal(msg, orig) {
			t.Fatalf("decode changed its input")
		}
		// The reader reuses msg's buffer for its next message: nothing decoded may point into it.
		for i := range msg {
			msg[i] = 'x'
		}
		if again, againErr := decode(orig); !reflect.DeepEqual(cmd, again) || !reflect.DeepEqual(perr, againErr) {
			t.Fatalf("decode kept part of its input: after overwriting it, %+v %v, not %+v %v", cmd, perr, again, againErr)
		}
		msg = orig
		// The fast path answers only where it agrees with the strict one.
		if fast, fastErr, ok := decodeFast(msg); ok {
			if strict, strictErr := decodeStrict(msg); !reflect.DeepEqual(fast, strict) || !reflect.DeepEqual(fastErr, strictErr) {
				t.Fatalf("decodeFast %+v %v, decodeStrict %+v %v", fast, fastErr, strict, strictErr)
			}
		}
		if !slices.Equal(defaultDice, []int{6, 6, 6, 20}) {
			t.Fatalf("defaultDice is now %v", defaultDice)
		}
		if perr != nil {
			fzCheckError(t, msg, cmd, perr)
			return
		}
		fzCheckCommand(t, msg, cmd)
	})
}

// fzIsObject is the oracle for invalid_json: the frame is one JSON object in valid UTF-8.
func fzIsObject(msg []byte) bool {
	trimmed := bytes.TrimLeft(msg, " \t\r\n")
	return utf8.Valid(msg) && json.Valid(msg) && len(trimmed) > 0 && trimmed[0] == '{'
}

// fzWantID is the id a reply to msg must echo: the message's id when it is a
// string of at most 64 characters, else none.
func fzWantID(msg []byte) string {
	var env struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(msg, &env) != nil || len(env.ID) == 0 {
		return ""
	}
	var id string
	if json.Unmarshal(env.ID, &id) != nil || utf8.RuneCountInString(id) > maxIDLen {
		return ""
	}
	return id
}

// fzWireType returns msg's type when it is a string.
func fzWireType(msg []byte) (string, bool) {
	var env struct {
		Type json.RawMessage `json:"type"`
	}
	var typ string
	if json.Unmarshal(msg, &env) != nil || len(env.Type) == 0 || json.Unmarshal(env.Type, &typ) != nil || string(env.Type) == "null" {
		return "", false
	}
	return typ, true
}

// fzCheckError checks an error result: no command alongside it, a contract
// code that fits the input, a short message, and an error frame that parses
// and echoes the right id.
func fzCheckError(t *testing.T, msg []byte, cmd command, perr *protoError) {
	if !reflect.DeepEqual(cmd, command{}) {
		t.Fatalf("decode returned both a command %+v and an error %v", cmd, perr)
	}
	if !fzContractCodes[perr.code] || !fzDecodeCodes[perr.code] {
		t.Fatalf("error code %q is not one decode may return", perr.code)
	}
	if (perr.code == codeInvalidJSON) == fzIsObject(msg) {
		t.Fatalf("code %q, but the frame is a JSON object: %v", perr.code, fzIsObject(msg))
	}
	wantID := ""
	if perr.code != codeInvalidJSON {
		wantID = fzWantID(msg)
	}
	if perr.id != wantID {
		t.Fatalf("error echoes id %q, want %q", perr.id, wantID)
	}
	if typ, ok := fzWireType(msg); perr.code == codeUnknownType {
		if _, known := fzWireTypes[typ]; !ok || known {
			t.Fatalf("unknown_type for type %q (a string: %v)", typ, ok)
		}
	}
	if perr.message == "" || len(perr.message) > protoMaxMessage || !utf8.ValidString(perr.message) {
		t.Fatalf("error message %q: want 1 to %d bytes of UTF-8", perr.message, protoMaxMessage)
	}
	var out struct {
		Type string          `json:"type"`
		ID   *string         `json:"id"`
		Data json.RawMessage `json:"data"`
	}
	b := encodeError(perr)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("error frame %s is not JSON: %v", b, err)
	}
	var data errorData
	if err := json.Unmarshal(out.Data, &data); err != nil {
		t.Fatalf("error frame data %s: %v", out.Data, err)
	}
	switch {
	case out.Type != "error" || data.Code != perr.code || data.Message != perr.message:
		t.Fatalf("error frame %s does not carry %+v", b, *perr)
	case perr.id == "" && out.ID != nil:
		t.Fatalf("error frame %s carries an id the message did not have", b)
	case perr.id != "" && (out.ID == nil || *out.ID != perr.id):
		t.Fatalf("error frame %s does not echo id %q", b, perr.id)
	}
}

// fzCheckCommand checks a command decode accepted: it re-validates against the
// contract's limits, survives a round trip through the wire, and every frame
// the server builds from it is valid JSON.
func fzCheckCommand(t *testing.T, msg []byte, cmd command) {
	if !fzIsObject(msg) {
		t.Fatalf("decode accepted a frame that is not one JSON object")
	}
	typ, ok := fzWireType(msg)
	if kind, known := fzWireTypes[typ]; !ok || !known || kind != cmd.kind {
		t.Fatalf("command kind %d from type %q", cmd.kind, typ)
	}
	if cmd.id != fzWantID(msg) || !utf8.ValidString(cmd.id) || utf8.RuneCountInString(cmd.id) > maxIDLen {
		t.Fatalf("command id %q, want %q", cmd.id, fzWantID(msg))
	}
	if cmd.kind != cmdDefensive && cmd.kind != cmdOffensive && cmd.decision != nil {
		t.Fatalf("kind %d carries a decision", cmd.kind)
	}
	if cmd.kind != cmdRoll && cmd.dice != nil {
		t.Fatalf("kind %d carries dice", cmd.kind)
	}
	if cmd.kind != cmdRefresh && cmd.token != "" {
		t.Fatalf("kind %d carries a token", cmd.kind)
	}
	if (cmd.kind == cmdResume) != (cmd.resume != nil) {
		t.Fatalf("kind %d with resume data %+v: a resume carries its data, nothing else does", cmd.kind, cmd.resume)
	}
	if cmd.kind == cmdResume {
		if cmd.game != uuid.Nil {
			t.Fatalf("resume carries game %s", cmd.game)
		}
		return
	}
	if cmd.kind == cmdRefresh {
		var env struct {
			Data struct {
				Token *string `json:"token"`
			} `json:"data"`
		}
		if json.Unmarshal(msg, &env) != nil || env.Data.Token == nil || *env.Data.Token != cmd.token || cmd.game != uuid.Nil {
			t.Fatalf("refresh_token command %+v from %q", cmd, msg)
		}
		return
	}
	if cmd.kind == cmdHeartbeat {
		if cmd.game != uuid.Nil {
			t.Fatalf("heartbeat carries game %s", cmd.game)
		}
		fzCheckRoundTrip(t, cmd)
		return
	}
	fzCheckGame(t, msg, cmd)
	switch cmd.kind {
	case cmdDefensive, cmdOffensive:
		var obj map[string]json.RawMessage
		if !json.Valid(cmd.decision) || !isObject(cmd.decision) || json.Unmarshal(cmd.decision, &obj) != nil {
			t.Fatalf("decision %s is not a JSON object", cmd.decision)
		}
	case cmdRoll:
		if len(cmd.dice) < 1 || len(cmd.dice) > 10 {
			t.Fatalf("%d dice", len(cmd.dice))
		}
		for _, sides := range cmd.dice {
			if sides < 2 || sides > 100 {
				t.Fatalf("a die of %d sides", sides)
			}
		}
	}
	fzCheckRoundTrip(t, cmd)
	fzCheckFrames(t, cmd)
}

// fzCheckGame checks a game command's game: what data.game_id parses to, and
// non-zero unless the client spelled the nil UUID itself.
func fzCheckGame(t *testing.T, msg []byte, cmd command) {
	var env struct {
		Data struct {
			GameID string `json:"game_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(msg, &env); err != nil {
		t.Fatalf("accepted frame's game_id is not a string: %v", err)
	}
	want, err := uuid.Parse(env.Data.GameID)
	if err != nil || want != cmd.game {
		t.Fatalf("game %s from game_id %q (%v)", cmd.game, env.Data.GameID, err)
	}
	if cmd.game == uuid.Nil && want != uuid.Nil {
		t.Fatalf("game command with a zero game id from %q", env.Data.GameID)
	}
}

// fzCheckRoundTrip writes cmd back as a canonical client frame and checks that
// decode reads the same command from it.
func fzCheckRoundTrip(t *testing.T, cmd command) {
	frame := map[string]any{"type": fzKindName(cmd.kind)}
	if cmd.id != "" {
		frame["id"] = cmd.id
	}
	if cmd.kind != cmdHeartbeat {
		data := map[string]any{"game_id": cmd.game.String()}
		if cmd.decision != nil {
			data["decision"] = cmd.decision
		}
		if cmd.dice != nil {
			data["dice"] = cmd.dice
		}
		frame["data"] = data
	}
	b, err := json.Marshal(frame)
	if err != nil {
		t.Fatalf("re-encode %+v: %v", cmd, err)
	}
	again, perr := decode(b)
	if perr != nil {
		t.Fatalf("command %+v written back as %s fails to decode: %v", cmd, b, perr)
	}
	if again.kind != cmd.kind || again.id != cmd.id || again.game != cmd.game || !slices.Equal(again.dice, cmd.dice) ||
		!fzSameJSON(again.decision, cmd.decision) {
		t.Fatalf("round trip through %s: %+v, want %+v", b, again, cmd)
	}
}

// fzSameJSON reports whether two raw JSON values are equal as values, with
// numbers compared by their text so that 1e999 is a number like any other.
func fzSameJSON(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var va, vb any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// fzCheckFrames builds the frames the reader and the hub build from cmd and
// checks each is one JSON object that carries the command faithfully.
func fzCheckFrames(t *testing.T, cmd command) {
	user := int64(7)
	game := cmd.game.String()
	presence := encodePresence(cmd.game, "SID", &user, "joined", "")
	var p presenceData
	if err := json.Unmarshal(presence, &struct {
		Data *presenceData `json:"data"`
	}{&p}); err != nil || p.GameID != game || p.Status != "joined" {
		t.Fatalf("presence frame %s (%v)", presence, err)
	}
	if cmd.kind != cmdDefensive && cmd.kind != cmdOffensive && cmd.kind != cmdRoll {
		return
	}
	var results []int
	if cmd.kind == cmdRoll {
		results = rollDice(cmd.dice)
		for i, r := range results {
			if r < 1 || r > cmd.dice[i] {
				t.Fatalf("rolled %d on a die of %d sides", r, cmd.dice[i])
			}
		}
	}
	others := encodeEvent(cmd, "SID", &user, results)
	if want := encodeEventMarshal(cmd, "SID", &user, results); !bytes.Equal(others, want) {
		t.Fatalf("event written by hand\n%s\nis not json.Marshal's\n%s", others, want)
	}
	self := withID(others, cmd.id)
	for _, tc := range []struct {
		b  []byte
		id string
	}{{self, cmd.id}, {others, ""}} {
		var out struct {
			Type string          `json:"type"`
			ID   *string         `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(tc.b, &out); err != nil {
			t.Fatalf("event %s is not JSON: %v", tc.b, err)
		}
		if out.Type != eventTypes[cmd.kind] || (tc.id == "") != (out.ID == nil) || (out.ID != nil && *out.ID != tc.id) {
			t.Fatalf("event %s: want type %s id %q", tc.b, eventTypes[cmd.kind], tc.id)
		}
		var data struct {
			GameID   string          `json:"game_id"`
			Decision json.RawMessage `json:"decision"`
			Dice     []int           `json:"dice"`
			Results  []int           `json:"results"`
		}
		if err := json.Unmarshal(out.Data, &data); err != nil || data.GameID != game {
			t.Fatalf("event data %s (%v)", out.Data, err)
		}
		if cmd.kind == cmdRoll && (!slices.Equal(data.Dice, cmd.dice) || !slices.Equal(data.Results, results)) {
			t.Fatalf("dice event %s, want dice %v results %v", out.Data, cmd.dice, results)
		}
		if cmd.kind != cmdRoll && !fzSameJSON(data.Decision, cmd.decision) {
			t.Fatalf("decision event carries %s, want %s", data.Decision, cmd.decision)
		}
	}
}
