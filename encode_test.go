package main

// The server frames' shapes, checked on their raw JSON fields (protoParse,
// protoField and protoKeys, which other tests use too), and the canonical game
// id in every frame built from a client's command.

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

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

// TestEncodeEventBytes holds the hand-written event encoder to json.Marshal's
// bytes, on the frames it writes itself and on those it hands to Marshal.
func TestEncodeEventBytes(t *testing.T) {
	game := uuid.MustParse(protoGame)
	decision := func(raw string) command {
		return command{kind: cmdDefensive, game: game, decision: json.RawMessage(raw)}
	}
	cases := []struct {
		name    string
		cmd     command
		sid     string
		userID  *int64
		results []int
	}{
		{"plain decision", decision(`{"shift":"infield_in","seq":12345}`), "S1", protoUser(42), nil},
		{"offensive, no user", command{kind: cmdOffensive, game: game, decision: json.RawMessage(`{"steal":2}`)}, "S1", nil, nil},
		{"negative user", decision(`{}`), "S1", protoUser(-9), nil},
		{"escapes kept", decision(`{"a\"b":"c\\d\u00e9","n":[1,{"x":null}]}`), "S1", nil, nil},
		{"non-ASCII kept", decision(`{"name":"Ichirō"}`), "S1", nil, nil},
		{"whitespace dropped", decision("{ \"a\" :\t[1, 2]\n}"), "S1", nil, nil},
		{"HTML escaped", decision(`{"tag":"<b>&"}`), "S1", nil, nil},
		{"line separator escaped", decision("{\"s\":\"\u2028\u2029\"}"), "S1", nil, nil},
		{"sid needing escapes", decision(`{}`), `a"b<c`, nil, nil},
		{"dice", command{kind: cmdRoll, game: game, dice: []int{6, 6, 6, 20}}, "S1", protoUser(7), []int{1, 2, 3, 20}},
		{"dice, no results", command{kind: cmdRoll, game: game, dice: []int{100}}, "S1", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := encodeEvent(tc.cmd, tc.sid, tc.userID, tc.results)
			if want := encodeEventMarshal(tc.cmd, tc.sid, tc.userID, tc.results); !bytes.Equal(got, want) {
				t.Errorf("encodeEvent\n%s\njson.Marshal\n%s", got, want)
			}
		})
	}
}

// TestReaderFramesBytes holds the frames the reader writes by hand to what
// json.Marshal writes for them, on both of their paths.
func TestReaderFramesBytes(t *testing.T) {
	game := uuid.MustParse("{" + strings.ToUpper(protoGame) + "}")
	east := time.FixedZone("UTC+5:30", 5*3600+1800)
	times := []time.Time{
		time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC),
		time.Date(2024, 3, 1, 2, 15, 0, 0, east),
		time.Date(2024, 12, 31, 23, 59, 59, 123456789, time.UTC),
		time.Date(2024, 12, 31, 23, 59, 59, 120000000, time.UTC), // trailing zeros dropped
	}
	ids := []string{"", "h1", `a"b`, `c\d`, "<x>&", "é", "tab\t", "\u2028"}
	for _, id := range ids {
		for _, now := range times {
			if got, want := encodeHeartbeatAck(id, now), encodeHeartbeatAckMarshal(id, now); !bytes.Equal(got, want) {
				t.Errorf("heartbeat_ack %q at %v\n%s\njson.Marshal\n%s", id, now, got, want)
			}
		}
		if got, want := encodeGameLeft(id, game), encodeGameLeftMarshal(id, game); !bytes.Equal(got, want) {
			t.Errorf("game_left %q\n%s\njson.Marshal\n%s", id, got, want)
		}
	}
	presences := []struct {
		sid, status, reason string
		userID              *int64
	}{
		{"S1", "joined", "", protoUser(42)},
		{"S1", "joined", "", nil},
		{"S1", "left", presenceLeft, protoUser(-9)},
		{"S1", "left", presenceDisconnected, nil},
		{`a"b<c`, "joined", "", nil},
		{"S1", "left", "<&>", nil},
		{"S1", "joined\u2028", "", nil},
	}
	for _, p := range presences {
		if got, want := encodePresence(game, p.sid, p.userID, p.status, p.reason),
			encodePresenceMarshal(game, p.sid, p.userID, p.status, p.reason); !bytes.Equal(got, want) {
			t.Errorf("presence %+v\n%s\njson.Marshal\n%s", p, got, want)
		}
	}
}

// TestEncodeEventAllocatesOnce keeps a relayed decision's first serialisation
// to the one buffer it is.
func TestEncodeEventAllocatesOnce(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes what allocates")
	}
	cmd := command{kind: cmdDefensive, game: uuid.MustParse(protoGame), decision: json.RawMessage(`{"shift":"in","seq":1}`)}
	user := int64(42)
	if n := testing.AllocsPerRun(100, func() { encodeEvent(cmd, "S1", &user, nil) }); n != 1 {
		t.Errorf("encodeEvent made %v allocations, want 1", n)
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
