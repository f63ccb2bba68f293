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
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
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
	"refresh_token": cmdRefresh,
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

// ---- FuzzHub ----

// fzHubGames are the games FuzzHub plays in: more than a session may join.
var fzHubGames = []uuid.UUID{
	uuid.MustParse("6f9619ff-8b86-d011-b42d-00c04fd430c8"),
	uuid.MustParse("0e4b1c7a-3f1d-4c55-9a57-4f3f4a9e1b01"),
	uuid.MustParse("9b8e2a44-7d0c-4e6b-8f4a-1c2d3e4f5a6b"),
	uuid.MustParse("11111111-2222-4333-8444-555555555555"),
}

// fzHubEnds are the reasons a conn's own handler may end it with.
var fzHubEnds = []closeReason{reasonDisconnected, reasonTimeout, reasonTooBig, reasonBinary, reasonFlood}

// fzHubAdvance are the steps of fake time between sweeps: around the warning
// (at 240 s of idleness by default) and the expiry (at 300 s).
var fzHubAdvance = []time.Duration{0, time.Second, 59 * time.Second, 60 * time.Second, 61 * time.Second,
	120 * time.Second, 179 * time.Second, 239 * time.Second, 240 * time.Second, 241 * time.Second,
	299 * time.Second, 300 * time.Second, 301 * time.Second, 600 * time.Second}

// Limits that keep one input cheap. Only the first fzHubMaxBytes bytes of an
// input are read: the fuzzer minimises every new input by trying to remove
// each run of bytes, which costs the square of the bytes that matter, and a
// long input stalled fuzzing for most of a minute.
const (
	fzHubMaxBytes = 160
	fzHubMaxConns = 12
	fzHubDrained  = 256 // queue of a drained conn: never fills within one step
)

// fzConn is the model's record of one conn the hub accepted.
type fzConn struct {
	c    *conn
	tiny bool // queue of one or two frames, never drained: a slow consumer waiting to happen

	// while the model holds its session
	live    bool
	games   map[uuid.UUID]bool
	last    time.Time
	touched int // when it was last active, in the model's count of touches: the idle order within one instant
	warned  bool
	queued  int      // frames in a tiny conn's queue
	want    []string // canonical frames a drained conn should get this step

	// once the model has ended it
	reason   closeReason
	endedNow bool // ended during the current step
	frozen   int  // a tiny conn's queue length once ended
}

// fzHubModel is what the hub should hold; it mirrors the contract, not the
// hub's code: a list in registration order instead of an idle list, sorted
// by activity when a sweep walks it in steps.
type fzHubModel struct {
	cfg     hubConfig
	touches int       // activity so far, to order sessions active at the same instant
	conns   []*fzConn // every conn the hub accepted, in order
	games   map[uuid.UUID]map[*fzConn]bool
	slow    []*fzConn
}

// deliver queues frame for fc as the hub should, noting an overflow.
func (m *fzHubModel) deliver(fc *fzConn, frame []byte) {
	switch {
	case !fc.tiny:
		fc.want = append(fc.want, fzCanon(frame))
	case fc.queued < fc.c.out.limit:
		fc.queued++
	default:
		m.slow = append(m.slow, fc)
	}
}

// refuse queues an error reply for fc as the hub should: a tiny conn takes
// it only while its queue is at most half full, and is never made slow by it.
func (m *fzHubModel) refuse(fc *fzConn, frame []byte) {
	switch {
	case !fc.tiny:
		fc.want = append(fc.want, fzCanon(frame))
	case fc.queued < fc.c.out.limit/2:
		fc.queued++
	}
}

// broadcast delivers frame to every member of game but from.
func (m *fzHubModel) broadcast(game uuid.UUID, from *fzConn, frame []byte) {
	for fc := range m.games[game] {
		if fc != from {
			m.deliver(fc, frame)
		}
	}
}

// leaveGame takes fc out of game, dropping the game when it empties.
func (m *fzHubModel) leaveGame(fc *fzConn, game uuid.UUID) {
	delete(fc.games, game)
	delete(m.games[game], fc)
	if len(m.games[game]) == 0 {
		delete(m.games, game)
	}
}

// end removes fc, tells its games why and marks it stopped; a no-op for an ended conn.
func (m *fzHubModel) end(fc *fzConn, reason closeReason) {
	if !fc.live {
		return
	}
	fc.live, fc.reason, fc.endedNow = false, reason, true
	games := maps.Clone(fc.games)
	for g := range games {
		m.leaveGame(fc, g)
	}
	for g := range games {
		m.broadcast(g, fc, encodePresence(g, fc.c.sid, fc.c.userID, "left", reason.presence))
	}
	fc.games = nil
}

// dropSlow ends every conn that overflowed, until none is left.
func (m *fzHubModel) dropSlow() {
	for len(m.slow) > 0 {
		fc := m.slow[0]
		m.slow = m.slow[1:]
		m.end(fc, reasonSlow)
	}
}

// command applies msg from fc at now.
func (m *fzHubModel) command(fc *fzConn, msg commandMsg, now time.Time) {
	if !fc.live {
		return // a reader that has not noticed its session ended: ignored
	}
	fc.last, fc.warned = now, false
	m.touches++
	fc.touched = m.touches
	cmd := msg.cmd
	in := fc.games[cmd.game]
	switch {
	case cmd.kind == cmdHeartbeat:
		m.deliver(fc, msg.self)
	case cmd.kind == cmdJoin && !in && len(fc.games) >= m.cfg.maxGames:
		m.refuse(fc, encodeError(&protoError{code: codeTooManyGames, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin && !in && len(m.games[cmd.game]) >= m.cfg.maxSeats:
		m.refuse(fc, encodeError(&protoError{code: codeGameFull, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin:
		var others []member
		for o := range m.games[cmd.game] {
			if o != fc {
				others = append(others, member{SID: o.c.sid, UserID: o.c.userID, Status: statusConnected})
			}
		}
		slices.SortFunc(others, func(a, b member) int { return strings.Compare(a.SID, b.SID) })
		members := append([]member{{SID: fc.c.sid, UserID: fc.c.userID, Status: statusConnected}}, others...)
		if !in {
			fc.games[cmd.game] = true
			if m.games[cmd.game] == nil {
				m.games[cmd.game] = map[*fzConn]bool{}
			}
			m.games[cmd.game][fc] = true
		}
		m.deliver(fc, encode("game_joined", cmd.id, gameJoinedData{GameID: cmd.game.String(), Members: members}))
		if !in {
			m.broadcast(cmd.game, fc, msg.others)
		}
	case !in:
		m.refuse(fc, encodeError(&protoError{code: codeNotInGame, id: cmd.id, message: "x"}))
	case cmd.kind == cmdLeave:
		m.leaveGame(fc, cmd.game)
		m.deliver(fc, msg.self)
		m.broadcast(cmd.game, fc, msg.others)
	default:
		m.deliver(fc, withID(msg.others, cmd.id))
		m.broadcast(cmd.game, fc, msg.others)
	}
	m.dropSlow()
}

// sweep expires every session idle for the timeout, then warns every one
// within the warning window that has not been warned since its last message.
func (m *fzHubModel) sweep(now time.Time) {
	timeout, warning := m.cfg.sessionTimeout, m.cfg.expiryWarning
	if timeout <= 0 {
		return
	}
	var order []*fzConn
	for _, fc := range m.conns {
		if fc.live {
			order = append(order, fc)
		}
	}
	slices.SortFunc(order, func(a, b *fzConn) int { return a.touched - b.touched })
	looked := 0
	for _, fc := range order {
		if looked == m.cfg.sweepStep { // the hub ends a step here and drops its slow consumers
			m.dropSlow()
			looked = 0
		}
		if !fc.live {
			continue // dropped as slow meanwhile: out of the idle list, never looked at
		}
		looked++
		idle := now.Sub(fc.last)
		if idle >= timeout {
			m.end(fc, reasonExpired)
			continue
		}
		if warning == 0 || idle < timeout-warning {
			break
		}
		if !fc.warned {
			fc.warned = true
			m.deliver(fc, encodeExpiring(timeout-idle))
		}
	}
	m.dropSlow()
}

// fzCanon reduces a server frame to what the model predicts. The model builds
// every frame with the same encoders as the hub, so frames compare byte for
// byte; only an error's message is the hub's prose, kept as present or not.
func fzCanon(b []byte) string {
	if !bytes.HasPrefix(b, []byte(`{"type":"error"`)) {
		// The model does not sequence: offsets and epochs are the hub's.
		b = fzOffset.ReplaceAll(b, nil)
		return string(fzEpoch.ReplaceAll(b, []byte(`"epoch":"",`)))
	}
	var f struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
		Data struct {
			Code    string `json:"code"`
			Message any    `json:"message"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Sprintf("not JSON: %q", b)
	}
	msg, _ := f.Data.Message.(string)
	f.Data.Message = msg != ""
	out, _ := json.Marshal(f)
	return string(out)
}

// fzOffset and fzEpoch find what the hub adds to a frame that the model does
// not predict: an event's offset (first in its data) and game_joined's epoch
// and offset (the model writes "" and 0).
var (
	fzOffset = regexp.MustCompile(`"offset":[0-9]+,?`)
	fzEpoch  = regexp.MustCompile(`"epoch":"[^"]*",`)
)

// fzHubRun drives a hub by calling its step function directly, as its own
// goroutine would, so the test reads the hub's state between steps safely.
type fzHubRun struct {
	t       *testing.T
	h       *hub
	m       *fzHubModel
	ops     []byte
	refused []*conn // conns the hub refused for a taken sid
	step    int
	action  string
}

// next returns the next input byte, 0 once the input is used up.
func (r *fzHubRun) next() byte {
	if len(r.ops) == 0 {
		return 0
	}
	b := r.ops[0]
	r.ops = r.ops[1:]
	return b
}

// pick returns one of the accepted conns (live or not), nil when there are none.
func (r *fzHubRun) pick() *fzConn {
	b := r.next()
	if len(r.m.conns) == 0 {
		return nil
	}
	return r.m.conns[int(b)%len(r.m.conns)]
}

// handle applies one message on the test goroutine, as the hub's run loop does.
func (r *fzHubRun) handle(msg hubMsg) {
	if !r.h.handle(msg) {
		r.t.Fatalf("step %d (%s): hub stopped on a %T", r.step, r.action, msg)
	}
}

// fzHubConfig reads the hub's configuration from the first input byte:
// 1 to 3 games a session, expiry on (300 s) or off, a 60 s warning or none,
// 2 or 3 seats a game, sweeps of 1 or 2 sessions a step.
func fzHubConfig(b byte) hubConfig {
	cfg := hubConfig{maxGames: 1 + int(b%3), sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second,
		maxSeats: 2 + int(b>>6&1), sweepStep: 1 + int(b>>7)}
	if b&0x08 != 0 {
		cfg.expiryWarning = 0
	}
	if b&0x30 == 0x30 {
		cfg.sessionTimeout, cfg.expiryWarning = 0, 0
	}
	return cfg
}

// stepOnce reads one operation from the input and applies it to the hub and the model.
func (r *fzHubRun) stepOnce() {
	m := r.m
	switch op := r.next() % 10; op {
	case 0, 1:
		r.register()
	case 2:
		r.registerTaken()
	case 3:
		r.unregister()
	case 4, 5, 6, 7:
		r.command(op)
	case 8:
		d := fzHubAdvance[int(r.next())%len(fzHubAdvance)]
		time.Sleep(d) // inside the synctest bubble: fake time, returns at once
		now := time.Now()
		r.action = fmt.Sprintf("sweep after %s", d)
		r.handle(sweepMsg{now: now})
		r.finishSweep()
		m.sweep(now)
	case 9:
		r.action = "unregister a sid never registered"
		r.handle(unregisterMsg{sid: "never-registered", reason: reasonDisconnected})
	}
}

// finishSweep runs the sweep the hub has begun to its end, as the hub's loop
// would when its inbox is empty, checking that the steps each look at their
// share of the sessions: a sweep over n sessions takes at most n/step + 1.
func (r *fzHubRun) finishSweep() {
	for steps := 1; r.h.sweeping; steps++ {
		r.h.sweepSome()
		r.h.dropSlow()
		if steps > len(r.m.conns)/r.h.cfg.sweepStep+1 {
			r.t.Fatalf("step %d (%s): sweep still going after %d steps", r.step, r.action, steps)
		}
	}
}

// register adds a conn: anonymous or one of three users, drained or tiny.
func (r *fzHubRun) register() {
	b := r.next()
	if len(r.m.conns) >= fzHubMaxConns {
		r.action = "register skipped: enough conns"
		return
	}
	var user *int64
	if u := int64(b % 4); u != 0 {
		user = &u
	}
	fc := &fzConn{games: map[uuid.UUID]bool{}, tiny: b&0x10 != 0, live: true}
	capacity := fzHubDrained
	if fc.tiny {
		capacity = 1 + int(b>>5)%2
	}
	fc.c = &conn{sid: fmt.Sprintf("fz%02d", len(r.m.conns)), userID: user, out: newSendQueue(capacity, testQueueBytes), quit: make(chan struct{})}
	r.action = fmt.Sprintf("register %s (user %v, queue %d)", fc.c.sid, b%4, capacity)
	reply := make(chan bool, 1)
	r.handle(registerMsg{c: fc.c, reply: reply})
	if !<-reply {
		r.t.Fatalf("step %d (%s): refused", r.step, r.action)
	}
	fc.last = time.Now()
	r.m.touches++
	fc.touched = r.m.touches
	r.m.conns = append(r.m.conns, fc)
}

// registerTaken offers a second conn under a live session's sid.
func (r *fzHubRun) registerTaken() {
	fc := r.pick()
	if fc == nil || !fc.live {
		r.action = "register taken skipped: no live conn picked"
		return
	}
	c := &conn{sid: fc.c.sid, out: newSendQueue(1, testQueueBytes), quit: make(chan struct{})}
	r.action = "register a second conn as " + c.sid
	reply := make(chan bool, 1)
	r.handle(registerMsg{c: c, reply: reply})
	if <-reply {
		r.t.Fatalf("step %d (%s): accepted", r.step, r.action)
	}
	r.refused = append(r.refused, c)
}

// unregister ends a conn as its handler would: stop (sometimes already done
// before the hub hears of it), then unregister with the same reason. For a
// conn the hub already ended it is the stale unregister every handler sends.
func (r *fzHubRun) unregister() {
	fc := r.pick()
	b := r.next()
	if fc == nil {
		r.action = "unregister skipped: no conns"
		return
	}
	reason := fzHubEnds[int(b)%len(fzHubEnds)]
	if !fc.live {
		reason = fc.c.reason
	}
	r.action = fmt.Sprintf("unregister %s (%s %q, live %v)", fc.c.sid, reason.presence, reason.word, fc.live)
	if b&0x80 != 0 {
		fc.c.stop(reason)
	}
	r.handle(unregisterMsg{c: fc.c, sid: fc.c.sid, reason: reason})
	r.m.end(fc, reason)
	r.m.dropSlow()
}

// command sends one client command from a conn (a stale one when the conn has
// ended): op 4 join, 5 leave, 6 a decision or a roll, 7 a heartbeat.
func (r *fzHubRun) command(op byte) {
	fc := r.pick()
	b := r.next()
	if fc == nil {
		r.action = "command skipped: no conns"
		return
	}
	cmd := command{game: fzHubGames[int(b)%len(fzHubGames)]}
	if b&0x80 != 0 {
		cmd.id = "i" + strconv.Itoa(r.step)
	}
	msg := commandMsg{c: fc.c, sid: fc.c.sid}
	switch op {
	case 4:
		cmd.kind = cmdJoin
		msg.others = encodePresence(cmd.game, fc.c.sid, fc.c.userID, "joined", "")
	case 5:
		cmd.kind = cmdLeave
		msg.self = encode("game_left", cmd.id, gameRef{GameID: cmd.game.String()})
		msg.others = encodePresence(cmd.game, fc.c.sid, fc.c.userID, "left", presenceLeft)
	case 6:
		cmd.kind = []cmdKind{cmdDefensive, cmdOffensive, cmdRoll}[int(b>>2)%3]
		var results []int
		if cmd.kind == cmdRoll {
			cmd.dice, results = []int{100}, []int{r.step}
		} else {
			cmd.decision = json.RawMessage(`{"step":` + strconv.Itoa(r.step) + `}`)
		}
		msg.others = encodeEvent(cmd, fc.c.sid, fc.c.userID, results)
	default:
		cmd = command{kind: cmdHeartbeat, id: cmd.id}
		msg.self = encodeHeartbeatAck(cmd.id, time.Now())
	}
	msg.cmd = cmd
	r.action = fmt.Sprintf("%s: %s about %s (live %v)", fc.c.sid, fzKindName(cmd.kind), cmd.game, fc.live)
	r.handle(msg)
	r.m.command(fc, msg, time.Now())
}

// fzKindName is the wire name of a command kind, for failure messages.
func fzKindName(k cmdKind) string {
	for name, kind := range fzWireTypes {
		if kind == k {
			return name
		}
	}
	return "kind " + strconv.Itoa(int(k))
}

// fzStopped reports whether c's quit is closed.
func fzStopped(c *conn) bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// fzQuietTB is t with Helper a no-op: runtime.Callers in Helper cost FuzzHub a
// third of its time, and a failure message names its step anyway.
type fzQuietTB struct{ testing.TB }

// Helper does nothing.
func (fzQuietTB) Helper() {}

// check compares the hub with the model after a step.
func (r *fzHubRun) check() {
	t, h, m := r.t, r.h, r.m
	if len(h.slow) != 0 {
		t.Errorf("%d sessions still marked slow after the step", len(h.slow))
	}
	checkIndex(fzQuietTB{t}, h.idx)
	reply := make(chan stats, 1)
	r.handle(statsRequest{reply: reply})
	st := <-reply
	users, live := map[int64]bool{}, 0
	for _, fc := range m.conns {
		if fc.live {
			live++
			if fc.c.userID != nil {
				users[*fc.c.userID] = true
			}
		}
	}
	per := map[string]int{}
	for g, set := range m.games {
		per[g.String()] = len(set)
	}
	if st.TotalSessions != live || st.UniqueUsers != len(users) || st.ActiveGames != len(per) || !maps.Equal(seatsPerGame(st), per) {
		t.Errorf("stats %+v; model: %d sessions, %d users, games %v", st, live, len(users), per)
	}
	for g, n := range seatsPerGame(st) {
		if n <= 0 {
			t.Errorf("game %s listed with %d sessions", g, n)
		}
	}
	for _, fc := range m.conns {
		r.checkConn(fc)
	}
	for _, c := range r.refused {
		if fzStopped(c) || c.out.len() != 0 || h.idx.sessions[c.sid] != nil && h.idx.sessions[c.sid].conn == c {
			t.Errorf("refused conn %s was stopped, sent frames or holds a session", c.sid)
		}
	}
}

// checkConn compares one conn with the model: stopped and why, its session
// and what the hub records in it, and the frames it got during the step.
func (r *fzHubRun) checkConn(fc *fzConn) {
	t := r.t
	sid := fc.c.sid
	s := r.h.idx.sessions[sid]
	switch {
	case fzStopped(fc.c) && s != nil:
		t.Errorf("conn %s was stopped (%+v) but its session is still in the hub", sid, fc.c.reason)
	case fzStopped(fc.c) == fc.live:
		t.Errorf("conn %s: stopped %v (%+v), model says live %v", sid, fzStopped(fc.c), fc.c.reason, fc.live)
	case !fc.live && fc.c.reason != fc.reason:
		t.Errorf("conn %s stopped with %+v, model says %+v", sid, fc.c.reason, fc.reason)
	case fc.live && (s == nil || s.conn != fc.c):
		t.Errorf("conn %s is live but the hub holds no session for it", sid)
	case fc.live && (!s.lastActivity.Equal(fc.last) || s.warned != fc.warned):
		t.Errorf("session %s: last activity %v warned %v, model %v %v", sid, s.lastActivity, s.warned, fc.last, fc.warned)
	case fc.live && len(s.games) != len(fc.games):
		t.Errorf("session %s in %d games, model %v", sid, len(s.games), fc.games)
	}
	if fc.live {
		for g := range fc.games {
			if _, in := s.games[g]; !in {
				t.Errorf("session %s is not in game %s, model says it is", sid, g)
			}
		}
	}
	fresh := fc.endedNow
	fc.endedNow = false
	if fc.tiny {
		switch {
		case fresh:
			fc.frozen = fc.c.out.len()
		case !fc.live && fc.c.out.len() != fc.frozen:
			t.Errorf("conn %s got frames after it was stopped", sid)
		case fc.live && fc.c.out.len() != fc.queued:
			t.Errorf("tiny conn %s holds %d frames, model %d", sid, fc.c.out.len(), fc.queued)
		}
		return
	}
	var got []string
	for fc.c.out.len() > 0 {
		got = append(got, fzCanon(fc.c.out.next()))
	}
	want := fc.want
	fc.want = nil
	if fresh {
		// Which frames a conn got in the step that ended it depends on the
		// order the hub walked its sets; only later silence is checked.
		return
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("conn %s got frames:\n  %s\nmodel wants:\n  %s", sid, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// shutdown stops the hub and checks every live conn was told going-away and
// the hub forgot every session.
func (r *fzHubRun) shutdown() {
	t := r.t
	if r.h.handle(shutdownMsg{}) {
		t.Fatalf("hub goes on after shutdownMsg")
	}
	if len(r.h.idx.sessions) != 0 || len(r.h.idx.byGame) != 0 || len(r.h.idx.byUser) != 0 {
		t.Errorf("hub holds %d sessions after shutdown", len(r.h.idx.sessions))
	}
	for _, fc := range r.m.conns {
		want := fc.reason
		if fc.live {
			want = reasonShutdown
		}
		if !fzStopped(fc.c) || fc.c.reason != want {
			t.Errorf("after shutdown conn %s stopped %v with %+v, want %+v", fc.c.sid, fzStopped(fc.c), fc.c.reason, want)
		}
	}
}

// fzHubSeeds are op sequences worth starting from (see stepOnce for the
// encoding): joins, relays, leaves, expiry and warning, slow consumers.
var fzHubSeeds = [][]byte{
	{0x00},
	// two drained conns join a game, relay, leave, heartbeat
	{0x02, 0, 0x01, 0, 0x02, 4, 0, 0x80, 4, 1, 0, 6, 0, 0x84, 6, 1, 0x08, 5, 0, 0x80, 7, 1, 0x80},
	// a tiny conn in a game with a chatty drained one: slow consumer
	{0x02, 0, 0x01, 0, 0x12, 4, 0, 0, 4, 1, 0, 6, 0, 0, 6, 0, 0, 6, 0, 0, 6, 0, 0},
	// expiry with warning: both warned at 241 s, one heartbeats, the other expires at 302 s
	{0x02, 0, 0x01, 0, 0x02, 4, 0, 0, 4, 1, 0, 8, 9, 7, 0, 0, 8, 4, 8, 3},
	// too many games, not in game, stale command after unregister
	{0x00, 0, 0x01, 4, 0, 0, 4, 0, 1, 5, 0, 2, 6, 0, 3, 3, 0, 0x81, 6, 0, 0, 7, 0, 0, 3, 0, 0},
	// duplicate sid, unknown unregister, sweeps with expiry off
	{0x30, 0, 0x01, 2, 0, 9, 8, 13, 8, 13, 4, 0, 0},
	// cascade: three tiny conns in one game, one drained sender
	{0x01, 0, 0x00, 0, 0x10, 0, 0x30, 0, 0x11, 4, 0, 0, 4, 1, 0, 4, 2, 0, 4, 3, 0, 6, 0, 0, 6, 0, 0, 3, 0, 0},
}

// FuzzHub reads its input as a hub configuration and a sequence of
// operations (register, register a taken sid, unregister with a reason, join,
// leave, relay, heartbeat, sweep at an advancing fake time, unregister of an
// unknown sid), from drained conns and tiny never-drained ones, and applies them
// to a real hub through its step function. After every step it checks
// checkIndex on the hub's index, the stats against a model, that no stopped
// conn keeps a session and no game is listed empty, and every conn's frames.
//
// The steps run inside a synctest bubble only for its clock: the hub stamps
// activity with time.Now(), so sweeps at an advancing fake time need the
// bubble's fake time to agree with it.
func FuzzHub(f *testing.F) {
	for _, s := range fzHubSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		synctest.Test(t, func(t *testing.T) { fzHubPlay(t, ops) })
	})
}

// fzHubPlay runs one FuzzHub input; it must run inside a synctest bubble.
func fzHubPlay(t *testing.T, ops []byte) {
	r := &fzHubRun{t: t, ops: ops[:min(len(ops), fzHubMaxBytes)]}
	cfg := fzHubConfig(r.next())
	r.h = newHub(cfg, 1)
	r.m = &fzHubModel{cfg: cfg, games: map[uuid.UUID]map[*fzConn]bool{}}
	for r.step = 0; len(r.ops) > 0; r.step++ {
		r.stepOnce()
		r.check()
		if t.Failed() {
			t.Fatalf("step %d (%s): hub and model disagree", r.step, r.action)
		}
	}
	r.shutdown()
}
