package main

// Outbound frames. Each encoder returns the whole frame so that one
// serialisation can be shared by every member of a game.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// outFrame is the envelope of every server frame.
type outFrame struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Data any    `json:"data"`
}

// encode marshals a server frame. Every value passed here is built by the
// server from plain types, so a failure is a programming error.
func encode(typ, id string, data any) []byte {
	b, err := json.Marshal(outFrame{Type: typ, ID: id, Data: data})
	if err != nil {
		panic(fmt.Sprintf("encode %s: %v", typ, err))
	}
	return b
}

// sessionData is the first frame of every connection.
type sessionData struct {
	SID              string `json:"sid"`
	UserID           *int64 `json:"user_id"`
	PingIntervalMS   int64  `json:"ping_interval_ms"`
	SessionTimeoutMS int64  `json:"session_timeout_ms"`
	Protocol         int    `json:"protocol"`
	ResumeToken      string `json:"resume_token"`
	ResumeWindowMS   int64  `json:"resume_window_ms"`
	TokenExp         *int64 `json:"token_exp"` // the handshake token's exp, Unix s; null for none
}

// protocolVersion is what session.data.protocol says.
const protocolVersion = 2

// member is one entry of a game's member list.
type member struct {
	SID    string `json:"sid"`
	UserID *int64 `json:"user_id"`
	Status string `json:"status"` // "connected" or "away"
}

// Member statuses.
const (
	statusConnected = "connected"
	statusAway      = "away"
)

// gameView is a game's settings as members and the backend see them: a game
// the backend never set has null, null and multi_seat.
type gameView struct {
	State         *string `json:"state"`
	IdleTimeoutMS *int64  `json:"idle_timeout_ms"`
	SeatPolicy    string  `json:"seat_policy"`
}

// gameJoinedData answers join_game.
type gameJoinedData struct {
	GameID string `json:"game_id"`
	gameView
	Epoch   string   `json:"epoch"`
	Offset  uint64   `json:"offset"`
	Members []member `json:"members"`
}

// resumedData answers a successful resume.
type resumedData struct {
	SID    string        `json:"sid"`
	UserID *int64        `json:"user_id"`
	AwayMS int64         `json:"away_ms"`
	Games  []resumedGame `json:"games"`
}

// resumedGame is one game of a resumed session: where it stands, and whether
// the events the client missed follow.
type resumedGame struct {
	game   uuid.UUID
	GameID string `json:"game_id"`
	gameView
	Epoch     string   `json:"epoch"`
	Offset    uint64   `json:"offset"`
	Recovered bool     `json:"recovered"`
	Members   []member `json:"members"`
}

// gameRef answers leave_game.
type gameRef struct {
	GameID string `json:"game_id"`
}

// gameLeftData tells a session the server ended its seat: kicked by the
// backend, or superseded by another session of its user (by_sid).
type gameLeftData struct {
	GameID string `json:"game_id"`
	Reason string `json:"reason"`
	BySID  string `json:"by_sid,omitempty"`
}

// gameUpdatedData tells a game's members the backend changed its settings.
type gameUpdatedData struct {
	GameID string `json:"game_id"`
	gameView
}

// presenceData tells a game that a member came or went, and why.
type presenceData struct {
	GameID         string `json:"game_id"`
	SID            string `json:"sid"`
	UserID         *int64 `json:"user_id"`
	Status         string `json:"status"`
	Reason         string `json:"reason,omitempty"`
	ResumeWindowMS *int64 `json:"resume_window_ms,omitempty"` // away only
	AwayMS         *int64 `json:"away_ms,omitempty"`          // back only
}

// decisionData is a defensive or offensive decision relayed to the game.
type decisionData struct {
	GameID   string          `json:"game_id"`
	SID      string          `json:"sid"`
	UserID   *int64          `json:"user_id"`
	Decision json.RawMessage `json:"decision"`
}

// diceData is a server-rolled dice result relayed to the game.
type diceData struct {
	GameID  string `json:"game_id"`
	SID     string `json:"sid"`
	UserID  *int64 `json:"user_id"`
	Dice    []int  `json:"dice"`
	Results []int  `json:"results"`
}

// expiringData warns a session that it will expire unless the client acts:
// when, and which game's timeout it is (null: SESSION_TIMEOUT's).
type expiringData struct {
	ExpiresInMS int64   `json:"expires_in_ms"`
	ExpiresAt   string  `json:"expires_at"`
	GameID      *string `json:"game_id"`
}

// heartbeatData answers heartbeat.
type heartbeatData struct {
	Timestamp string `json:"timestamp"`
}

// The reader's own frames (heartbeat_ack, and a join's or a leave's
// presence and game_left) are written by hand, byte for byte what their
// Marshal twins write, and fall back to them for strings Marshal would
// escape. The reader encodes them on its own stack, which an idle
// connection keeps for its life: json.Marshal's reflection is deep enough
// that a heartbeat grew every reader from 4 KiB to 8 for good
// (TestMessagesKeepStacks).

// encodeHeartbeatAck builds heartbeat_ack for the time now.
func encodeHeartbeatAck(id string, now time.Time) []byte {
	if !plainJSONString(id) {
		return encodeHeartbeatAckMarshal(id, now)
	}
	b := make([]byte, 0, len(`{"type":"heartbeat_ack","id":"","data":{"timestamp":""}}`)+len(id)+len(time.RFC3339Nano))
	b = append(b, `{"type":"heartbeat_ack",`...)
	b = appendIDMember(b, id)
	b = append(b, `"data":{"timestamp":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano) // digits, '-', ':', 'T', '.' and 'Z': nothing to escape
	return append(b, `"}}`...)
}

func encodeHeartbeatAckMarshal(id string, now time.Time) []byte {
	return encode("heartbeat_ack", id, heartbeatData{Timestamp: now.UTC().Format(time.RFC3339Nano)})
}

// encodeGameLeft builds the game_left that answers leave_game id.
func encodeGameLeft(id string, game uuid.UUID) []byte {
	if !plainJSONString(id) {
		return encodeGameLeftMarshal(id, game)
	}
	b := make([]byte, 0, len(`{"type":"game_left","id":"","data":{"game_id":""}}`)+len(id)+36)
	b = append(b, `{"type":"game_left",`...)
	b = appendIDMember(b, id)
	b = append(b, `"data":{"game_id":"`...)
	b = appendUUID(b, game)
	return append(b, `"}}`...)
}

func encodeGameLeftMarshal(id string, game uuid.UUID) []byte {
	return encode("game_left", id, gameRef{GameID: game.String()})
}

// appendMember appends what presence and game events share: the game id's
// text and closing quote (the caller wrote the opening one), then the sid
// and user_id members (null for none). sid is plain.
func appendMember(b []byte, game uuid.UUID, sid string, userID *int64) []byte {
	b = appendUUID(b, game)
	b = append(b, `","sid":"`...)
	b = append(b, sid...)
	b = append(b, `","user_id":`...)
	if userID == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, *userID, 10)
}

// appendIDMember appends a frame's "id" member and its comma; none for no id
// (omitempty). id is plain.
func appendIDMember(b []byte, id string) []byte {
	if id == "" {
		return b
	}
	b = append(b, `"id":"`...)
	b = append(b, id...)
	return append(b, `",`...)
}

// encodePresence builds a presence frame; reason is empty for "joined".
func encodePresence(game uuid.UUID, sid string, userID *int64, status, reason string) []byte {
	if !plainJSONString(sid) || !plainJSONString(status) || !plainJSONString(reason) {
		return encodePresenceMarshal(game, sid, userID, status, reason)
	}
	b := make([]byte, 0, len(`{"type":"presence","data":{"game_id":"","sid":"","user_id":,"status":"","reason":""}}`)+
		36+len(sid)+20+len(status)+len(reason))
	b = append(b, `{"type":"presence","data":{"game_id":"`...)
	b = appendMember(b, game, sid, userID)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	if reason != "" {
		b = append(b, `","reason":"`...)
		b = append(b, reason...)
	}
	return append(b, `"}}`...)
}

func encodePresenceMarshal(game uuid.UUID, sid string, userID *int64, status, reason string) []byte {
	return encode("presence", "", presenceData{GameID: game.String(), SID: sid, UserID: userID, Status: status, Reason: reason})
}

// encodeAway builds the presence of a member whose connection was lost.
func encodeAway(game uuid.UUID, sid string, userID *int64, reason string, window time.Duration) []byte {
	ms := window.Milliseconds()
	return encode("presence", "", presenceData{GameID: game.String(), SID: sid, UserID: userID, Status: statusAway,
		Reason: reason, ResumeWindowMS: &ms})
}

// encodeBack builds the presence of a member that resumed after away.
func encodeBack(game uuid.UUID, sid string, userID *int64, away time.Duration) []byte {
	ms := away.Milliseconds()
	return encode("presence", "", presenceData{GameID: game.String(), SID: sid, UserID: userID, Status: "back", AwayMS: &ms})
}

// withDup returns a remembered reply marked as a duplicate: {"dup":true,…}.
func withDup(frame []byte) []byte {
	out := make([]byte, 0, len(frame)+len(`"dup":true,`))
	out = append(out, '{')
	out = append(out, `"dup":true,`...)
	return append(out, frame[1:]...)
}

// expiresAtLayout is RFC 3339 with milliseconds, the precision of expires_in_ms.
const expiresAtLayout = "2006-01-02T15:04:05.000Z07:00"

// encodeExpiring builds session_expiring, sent at now for an expiry at at,
// set by game's timeout (nil: SESSION_TIMEOUT's).
func encodeExpiring(now, at time.Time, game *uuid.UUID) []byte {
	d := expiringData{ExpiresInMS: at.Sub(now).Milliseconds(), ExpiresAt: at.UTC().Format(expiresAtLayout)}
	if game != nil {
		id := game.String()
		d.GameID = &id
	}
	return encode("session_expiring", "", d)
}

// encodeEvent builds a game action's room event, without an id and before
// its offset: the hub sequences it, and the sender's copy gets its id then.
//
// It is every game event's first serialisation, so it is written by hand into
// one buffer of the right size: json.Marshal's reflection, its boxed data and
// the game id's string were a fifth of the garbage a relayed decision made.
// The bytes are json.Marshal's (encodeEventMarshal, which TestEncodeEventBytes
// holds it to); a decision json.Marshal would rewrite (whitespace to drop,
// HTML characters to escape) or a sid that needs escaping goes through it.
func encodeEvent(cmd command, sid string, userID *int64, results []int) []byte {
	if !plainJSONString(sid) || (cmd.kind != cmdRoll && !compactPlainJSON(cmd.decision)) {
		return encodeEventMarshal(cmd, sid, userID, results)
	}
	typ := eventTypes[cmd.kind]
	size := len(`{"type":"","data":{"game_id":"","sid":"","user_id":,"decision":}}`) + len(typ) + 36 + len(sid) + 20 +
		len(cmd.decision) + len(`,"dice":,"results":`) + 12*(len(cmd.dice)+len(results)) + 4
	b := make([]byte, 0, size)
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","data":{"game_id":"`...)
	b = appendMember(b, cmd.game, sid, userID)
	if cmd.kind == cmdRoll {
		b = append(b, `,"dice":`...)
		b = appendInts(b, cmd.dice)
		b = append(b, `,"results":`...)
		b = appendInts(b, results)
	} else {
		b = append(b, `,"decision":`...)
		b = append(b, cmd.decision...)
	}
	return append(b, "}}"...)
}

// encodeEventMarshal is encodeEvent by json.Marshal: the reference its bytes
// are held to, and the way for what it does not write by hand.
func encodeEventMarshal(cmd command, sid string, userID *int64, results []int) []byte {
	game := cmd.game.String()
	var data any
	if cmd.kind == cmdRoll {
		data = diceData{GameID: game, SID: sid, UserID: userID, Dice: cmd.dice, Results: results}
	} else {
		data = decisionData{GameID: game, SID: sid, UserID: userID, Decision: cmd.decision}
	}
	return encode(eventTypes[cmd.kind], "", data)
}

// plainJSONString reports whether json.Marshal writes s as it is, between quotes.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// compactPlainJSON reports whether json.Marshal writes raw, valid JSON, as it
// is: no whitespace for it to drop, no HTML character for it to escape, and no
// U+2028 or U+2029 (their UTF-8 begins 0xE2), which it escapes too.
func compactPlainJSON(raw []byte) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return false
		}
	}
	return true
}

// appendInts appends ns as a JSON array; nil as null, as json.Marshal does.
func appendInts(b []byte, ns []int) []byte {
	if ns == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, n := range ns {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(n), 10)
	}
	return append(b, ']')
}

// withID returns frame, encoded without an id, with id added after its type:
// a reply and the copies for everyone else share one serialisation of the data.
func withID(frame []byte, id string) []byte {
	if id == "" {
		return frame
	}
	quoted, err := json.Marshal(id)
	if err != nil {
		panic("encode id: " + err.Error()) // a Go string always marshals
	}
	// frame is {"type":"<name>","data":...}; the type's closing quote is the
	// first `",` since type names hold no quotes or commas.
	cut := bytes.Index(frame, []byte(`",`)) + 1
	out := make([]byte, 0, len(frame)+len(quoted)+6)
	out = append(out, frame[:cut]...)
	out = append(out, `,"id":`...)
	out = append(out, quoted...)
	return append(out, frame[cut:]...)
}
