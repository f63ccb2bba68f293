package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// closeReason says why a conn ends: what the peer is told, whether its
// session ends or only goes away, and what the room hears. Every way a
// connection can end is one row of the table below; no close code, goodbye
// word or presence reason is spelled anywhere else.
type closeReason struct {
	code       websocket.StatusCode
	word       string // the goodbye's reason and the close frame's text; "" when no close frame is sent
	presence   string // the left reason the room hears when the session ends ("" for none: a takeover)
	sendsClose bool   // false when the peer is presumed dead and gets no close frame
	// away is the reason the room hears when the session survives its conn,
	// away for RESUME_WINDOW; "" when the conn's end ends the session.
	away      string
	resumable bool // what the goodbye tells the client
	// retryAfterMS is the goodbye's retry_after_ms; -1 sends null.
	retryAfterMS int64
}

// The close-reason table (contract v2 §3, §6). A connection lost without a
// close frame is logged as 1006; a peer that closed gets peerClosed.
var (
	reasonDisconnected = closeReason{code: websocket.StatusAbnormalClosure, presence: presenceDisconnected,
		away: presenceDisconnected, retryAfterMS: -1}
	reasonTimeout = closeReason{code: websocket.StatusAbnormalClosure, presence: presenceTimeout,
		away: presenceTimeout, retryAfterMS: -1}
	reasonSlow = closeReason{code: websocket.StatusPolicyViolation, word: "slow_consumer", presence: presenceDisconnected,
		sendsClose: true, away: presenceSlowConsumer, resumable: true, retryAfterMS: -1}
	reasonExpired   = closeReason{code: 4000, word: "expired", presence: presenceExpired, sendsClose: true, retryAfterMS: -1}
	reasonTakenOver = closeReason{code: 4001, word: "taken_over", sendsClose: true, retryAfterMS: -1}
	reasonShutdown  = closeReason{code: websocket.StatusGoingAway, word: "shutdown", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: 0}
	reasonTooBig = closeReason{code: websocket.StatusMessageTooBig, word: "too_big", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: -1}
	reasonBinary = closeReason{code: websocket.StatusUnsupportedData, word: "binary", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: -1}
	reasonFlood = closeReason{code: websocket.StatusPolicyViolation, word: "rate_limited", presence: presenceDisconnected,
		sendsClose: true, retryAfterMS: -1}
	// The session outlives a token that ran out: a fresh token resumes it.
	// With RESUME_WINDOW=0 it ends, and its games hear left for the same reason.
	reasonTokenExpired = closeReason{code: 4002, word: "token_expired", presence: presenceTokenExpired,
		sendsClose: true, away: presenceTokenExpired, resumable: true, retryAfterMS: -1}
)

// peerClosed is the reason of a connection the client ended with a close frame
// carrying code. 1000 is a goodbye: the session ends as disconnected. Any
// other code (a browser closing or reloading a tab sends 1001) leaves the
// session away, resumable. Either way the log shows the client's code.
func peerClosed(code websocket.StatusCode) closeReason {
	r := closeReason{code: code, presence: presenceDisconnected, retryAfterMS: -1}
	if code != websocket.StatusNormalClosure {
		r.away = presenceDisconnected
	}
	return r
}

// withRetry returns r telling the client to come back after d.
func (r closeReason) withRetry(d time.Duration) closeReason {
	r.retryAfterMS = d.Milliseconds()
	return r
}

// Presence words: why a member is no longer in a game.
const (
	presenceLeft         = "left"
	presenceDisconnected = "disconnected"
	presenceExpired      = "expired"
	presenceTimeout      = "timeout"
	presenceSlowConsumer = "slow_consumer"
	presenceTokenExpired = "token_expired"
	presenceKicked       = "kicked"     // the backend kicked the seat (§8)
	presenceSuperseded   = "superseded" // a newer session of the same user took the seat (§8)
)

// Error codes of the contract's error frame; the connection stays open after each.
const (
	codeInvalidJSON    = "invalid_json"
	codeInvalidMessage = "invalid_message"
	codeUnknownType    = "unknown_type"
	codeInvalidGameID  = "invalid_game_id"
	codeNotInGame      = "not_in_game"
	codeTooManyGames   = "too_many_games"
	codeRateLimited    = "rate_limited"
	codeGameFull       = "game_full"
	codeResumeFailed   = "resume_failed"
	codeIDReused       = "id_reused"
	codeInvalidToken   = "invalid_token"
)

// Why a resume failed: the reason of a resume_failed error.
const (
	resumeUnknown      = "unknown"
	resumeUserMismatch = "user_mismatch"
	resumeNotFirst     = "not_first"
	resumeDisabled     = "disabled"
)

// Limits the contract puts on client frames.
const (
	maxIDLen = 64
	minDice  = 1
	maxDice  = 10
	minSides = 2
	maxSides = 100
)

// defaultDice is what roll_dice rolls when the client names no dice. Decoded
// commands share it, so nothing may write to a command's dice.
var defaultDice = []int{6, 6, 6, 20}

// cmdKind names a client command after decoding.
type cmdKind uint8

const (
	cmdHeartbeat cmdKind = iota + 1
	cmdJoin
	cmdLeave
	cmdDefensive
	cmdOffensive
	cmdRoll
	cmdResume
	cmdRefresh
)

// clientTypes maps the wire names of client frames to their kinds.
var clientTypes = map[string]cmdKind{
	"heartbeat":                 cmdHeartbeat,
	"join_game":                 cmdJoin,
	"leave_game":                cmdLeave,
	"submit_defensive_decision": cmdDefensive,
	"submit_offensive_decision": cmdOffensive,
	"roll_dice":                 cmdRoll,
	"resume":                    cmdResume,
	"refresh_token":             cmdRefresh,
}

// eventTypes maps the game actions to the room event each one becomes.
var eventTypes = map[cmdKind]string{
	cmdDefensive: "defensive_decision",
	cmdOffensive: "offensive_decision",
	cmdRoll:      "dice_rolled",
}

// command is one decoded and validated client message, ready for the hub.
type command struct {
	kind     cmdKind
	id       string
	game     uuid.UUID
	decision json.RawMessage // submit_*_decision only
	dice     []int           // roll_dice only
	resume   *resumeRequest  // resume only
	token    string          // refresh_token only: the JWT, not yet verified
}

// resumeRequest is a resume's data: the session to take up again, and where
// the client is in each of its games.
type resumeRequest struct {
	token string
	games map[uuid.UUID]gamePosition
}

// gamePosition is the last event of a game a client has processed.
type gamePosition struct {
	epoch  string
	offset uint64
}

// maxTokenLen bounds a resume token: the server's own are 26 characters.
const maxTokenLen = 128

// diceField decodes a dice array, refusing one longer than the contract
// allows at its eleventh element, without decoding the rest: a roll_dice may
// be as large as MAX_MESSAGE_BYTES, and half a million dice cost 172 ms to
// decode into a []int. Its elements must be JSON integers, as for a []int.
// A malformed array is kept as err rather than returned, so that the frame's
// other fields are still decoded in the same pass and the error can be
// reported without decoding the frame again.
type diceField struct {
	dice []int // nil when absent or null
	err  error // errTooManyDice or errNotDice
}

// errTooManyDice is what a dice array longer than maxDice decodes to.
var errTooManyDice = errors.New("too many dice")

// errNotDice is what any other malformed dice array decodes to.
var errNotDice = errors.New("dice must be an array of integers")

// UnmarshalJSON reads raw, which encoding/json has already checked is valid JSON.
func (d *diceField) UnmarshalJSON(raw []byte) error {
	d.dice, d.err = parseDice(raw)
	return nil
}

// parseDice reads a JSON array of at most maxDice integers.
func parseDice(raw []byte) ([]int, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	if len(raw) < 2 || raw[0] != '[' {
		return nil, errNotDice
	}
	dice := make([]int, 0, maxDice)
	rest := bytes.TrimLeft(raw[1:], " \t\r\n")
	if len(rest) > 0 && rest[0] == ']' {
		return dice, nil
	}
	for {
		if len(dice) == maxDice {
			return nil, errTooManyDice
		}
		end := 0
		for end < len(rest) && (rest[end] == '-' || rest[end] >= '0' && rest[end] <= '9') {
			end++
		}
		n, err := strconv.Atoi(string(rest[:end]))
		if err != nil {
			return nil, errNotDice // a fraction, an exponent, a string, an object, or out of range
		}
		dice = append(dice, n)
		rest = bytes.TrimLeft(rest[end:], " \t\r\n")
		if len(rest) == 0 {
			return nil, errNotDice
		}
		switch rest[0] {
		case ']':
			return dice, nil
		case ',':
			rest = bytes.TrimLeft(rest[1:], " \t\r\n")
		default:
			return nil, errNotDice
		}
	}
}

// diceProblem is the message for a dice array parseDice refused.
func diceProblem(err error) string {
	if errors.Is(err, errTooManyDice) {
		return fmt.Sprintf("data.dice must hold %d to %d dice", minDice, maxDice)
	}
	return "data.dice must be an array of integers"
}

// protoError is a client mistake that becomes an error frame; the conn stays open.
type protoError struct {
	code    string
	message string
	id      string // echoed when the offending message carried a valid one
	reason  string // resume_failed and invalid_token only: which of their reasons
}

func (e *protoError) Error() string { return e.code + ": " + e.message }

// envelope is the outer shape of a client frame. ID and Data stay raw so that a
// numeric id or a data of the wrong type is reported as invalid_message, not
// mistaken for invalid JSON.
type envelope struct {
	Type json.RawMessage `json:"type"`
	ID   json.RawMessage `json:"id"`
	Data json.RawMessage `json:"data"`
}

// gameData is the data of every game command; which fields matter depends on the type.
type gameData struct {
	GameID   json.RawMessage `json:"game_id"`
	Decision json.RawMessage `json:"decision"`
	Dice     diceField       `json:"dice"`
}

// decode turns one text message into a command, or into the protoError the
// client must be told about. It is a pure function so it can be fuzzed and
// run in the reader goroutine, keeping JSON work out of the hub.
func decode(msg []byte) (command, *protoError) {
	if cmd, perr, ok := decodeFast(msg); ok {
		return cmd, perr
	}
	return decodeStrict(msg)
}

// fastFrame is the shape of a well-formed game frame, typed throughout so a
// valid frame is decoded in one pass.
type fastFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		GameID   string          `json:"game_id"`
		Decision json.RawMessage `json:"decision"`
		Dice     diceField       `json:"dice"`
	} `json:"data"`
}

// decodeFast decodes a frame in one pass when it is entirely valid, and
// reports false at the first doubt, leaving the precise diagnosis to
// decodeStrict. Valid frames are the hot path; errors can afford two passes,
// except bad dice (the one list a frame may make huge), which it diagnoses
// itself once everything before them checks out.
func decodeFast(msg []byte) (command, *protoError, bool) {
	if !utf8.Valid(msg) {
		return command{}, nil, false
	}
	var f fastFrame
	if json.Unmarshal(msg, &f) != nil || !isObjectText(msg) || utf8.RuneCountInString(f.ID) > maxIDLen {
		return command{}, nil, false
	}
	kind, ok := clientTypes[f.Type]
	if !ok {
		return command{}, nil, false
	}
	cmd := command{kind: kind, id: f.ID}
	if kind == cmdHeartbeat {
		return cmd, nil, true
	}
	game, err := parseGameID(f.Data.GameID)
	if err != nil {
		return command{}, nil, false
	}
	cmd.game = game
	switch kind {
	case cmdDefensive, cmdOffensive:
		if !isObject(f.Data.Decision) {
			return command{}, nil, false
		}
		cmd.decision = f.Data.Decision
	case cmdRoll:
		switch dice := f.Data.Dice; {
		case dice.err != nil:
			return command{}, &protoError{code: codeInvalidMessage, message: diceProblem(dice.err), id: f.ID}, true
		case dice.dice == nil:
			cmd.dice = defaultDice
		case checkDice(dice.dice) != "":
			return command{}, nil, false
		default:
			cmd.dice = dice.dice
		}
	}
	return cmd, nil, true
}

// isObjectText reports whether a JSON text's first token opens an object.
func isObjectText(msg []byte) bool {
	trimmed := bytes.TrimLeft(msg, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0] == '{'
}

// decodeStrict decodes a frame field by field so that every mistake gets its
// own error code and message.
func decodeStrict(msg []byte) (command, *protoError) {
	if !utf8.Valid(msg) {
		return command{}, &protoError{code: codeInvalidJSON, message: "frame is not valid UTF-8"}
	}
	if !isObjectText(msg) {
		return command{}, &protoError{code: codeInvalidJSON, message: "frame must be one JSON object"}
	}
	var env envelope
	if err := json.Unmarshal(msg, &env); err != nil {
		return command{}, &protoError{code: codeInvalidJSON, message: "frame must be one JSON object: " + jsonProblem(err)}
	}
	var cmd command
	if !isNull(env.ID) {
		if err := json.Unmarshal(env.ID, &cmd.id); err != nil {
			return command{}, &protoError{code: codeInvalidMessage, message: "id must be a string"}
		}
		if utf8.RuneCountInString(cmd.id) > maxIDLen {
			return command{}, &protoError{code: codeInvalidMessage, message: fmt.Sprintf("id must be at most %d characters", maxIDLen)}
		}
	}
	fail := func(code, message string) (command, *protoError) {
		return command{}, &protoError{code: code, message: message, id: cmd.id}
	}
	var typ string
	if isNull(env.Type) {
		return fail(codeInvalidMessage, "type is missing")
	}
	if err := json.Unmarshal(env.Type, &typ); err != nil {
		return fail(codeInvalidMessage, "type must be a string")
	}
	kind, ok := clientTypes[typ]
	if !ok {
		return fail(codeUnknownType, "unknown message type "+quoteShort(typ))
	}
	cmd.kind = kind
	if kind == cmdHeartbeat {
		return cmd, nil // heartbeat takes anything or nothing as data
	}
	if isNull(env.Data) || !isObject(env.Data) {
		return fail(codeInvalidMessage, "data must be an object")
	}
	if kind == cmdResume {
		req, perr := decodeResume(env.Data)
		if perr != nil {
			perr.id = cmd.id
			return command{}, perr
		}
		cmd.resume = req
		return cmd, nil
	}
	if kind == cmdRefresh {
		token, perr := decodeRefresh(env.Data)
		if perr != nil {
			perr.id = cmd.id
			return command{}, perr
		}
		cmd.token = token
		return cmd, nil
	}
	var d gameData
	if err := json.Unmarshal(env.Data, &d); err != nil {
		return fail(codeInvalidMessage, "data must be an object")
	}
	var gameID string
	if isNull(d.GameID) {
		return fail(codeInvalidMessage, "data.game_id is missing")
	}
	if err := json.Unmarshal(d.GameID, &gameID); err != nil {
		return fail(codeInvalidMessage, "data.game_id must be a string")
	}
	game, err := parseGameID(gameID)
	if err != nil {
		return fail(codeInvalidGameID, "data.game_id is not a UUID")
	}
	cmd.game = game
	switch kind {
	case cmdDefensive, cmdOffensive:
		if isNull(d.Decision) || !isObject(d.Decision) {
			return fail(codeInvalidMessage, "data.decision must be an object")
		}
		cmd.decision = d.Decision
	case cmdRoll:
		switch {
		case d.Dice.err != nil:
			return fail(codeInvalidMessage, diceProblem(d.Dice.err))
		case d.Dice.dice == nil:
			cmd.dice = defaultDice
		default:
			if msg := checkDice(d.Dice.dice); msg != "" {
				return fail(codeInvalidMessage, msg)
			}
			cmd.dice = d.Dice.dice
		}
	}
	return cmd, nil
}

// decodeResume reads a resume's data, which decodeStrict has checked is an object.
func decodeResume(data json.RawMessage) (*resumeRequest, *protoError) {
	var d struct {
		Token json.RawMessage `json:"resume_token"`
		Games json.RawMessage `json:"games"`
	}
	invalid := func(message string) (*resumeRequest, *protoError) {
		return nil, &protoError{code: codeInvalidMessage, message: message}
	}
	if json.Unmarshal(data, &d) != nil {
		return invalid("data must be an object")
	}
	req := &resumeRequest{}
	if isNull(d.Token) || json.Unmarshal(d.Token, &req.token) != nil || req.token == "" || len(req.token) > maxTokenLen {
		return invalid(fmt.Sprintf("data.resume_token must be a string of 1 to %d characters", maxTokenLen))
	}
	if isNull(d.Games) {
		return req, nil
	}
	var games map[string]struct {
		Epoch  *string `json:"epoch"`
		Offset *uint64 `json:"offset"`
	}
	if !isObject(d.Games) || json.Unmarshal(d.Games, &games) != nil {
		return invalid("data.games must map game ids to {epoch: string, offset: integer >= 0}")
	}
	req.games = make(map[uuid.UUID]gamePosition, len(games))
	for id, pos := range games {
		game, err := parseGameID(id)
		if err != nil {
			return nil, &protoError{code: codeInvalidGameID, message: "a key of data.games is not a UUID"}
		}
		if pos.Epoch == nil || pos.Offset == nil {
			return invalid("each entry of data.games needs an epoch (string) and an offset (integer >= 0)")
		}
		req.games[game] = gamePosition{epoch: *pos.Epoch, offset: *pos.Offset}
	}
	return req, nil
}

// parseGameID parses a UUID in any of its spellings. uuid.Parse takes any
// 38-character string as the braced form without looking at the braces, so
// they are checked here.
func parseGameID(s string) (uuid.UUID, error) {
	if len(s) == 38 && (s[0] != '{' || s[37] != '}') {
		return uuid.UUID{}, errors.New("not a UUID")
	}
	return uuid.Parse(s)
}

// checkDice returns what is wrong with a set of dice, or "" when it is fine.
func checkDice(dice []int) string {
	if len(dice) < minDice || len(dice) > maxDice {
		return fmt.Sprintf("data.dice must hold %d to %d dice", minDice, maxDice)
	}
	for _, sides := range dice {
		if sides < minSides || sides > maxSides {
			return fmt.Sprintf("each die must have %d to %d sides", minSides, maxSides)
		}
	}
	return ""
}

// isNull reports whether a raw field was absent or JSON null.
func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// isObject reports whether a raw JSON value is an object. The value has already
// been validated by the decoder, so its first byte decides.
func isObject(raw json.RawMessage) bool {
	return len(raw) > 0 && raw[0] == '{'
}

// jsonProblem describes a JSON syntax error without echoing the client's bytes.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return "syntax error at byte " + strconv.FormatInt(syn.Offset, 10)
	}
	return "not an object"
}

// quoteShort quotes a client string for an error message, cut so that a huge
// type name cannot make a huge reply.
func quoteShort(s string) string {
	const max = 32
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strconv.Quote(s)
}

// Outbound frames. Each encoder returns the whole frame so that one
// serialisation can be shared by every member of a game.

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

// errorData is the body of an error frame.
type errorData struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Reason  string `json:"reason,omitempty"`
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

// goodbyeData tells a client, before the server closes its connection, why
// and what to do next.
type goodbyeData struct {
	Code         int    `json:"code"`
	Reason       string `json:"reason"`
	RetryAfterMS *int64 `json:"retry_after_ms"`
	Resumable    bool   `json:"resumable"`
}

// encodeGoodbye builds the goodbye for r.
func encodeGoodbye(r closeReason) []byte {
	d := goodbyeData{Code: int(r.code), Reason: r.word, Resumable: r.resumable}
	if r.retryAfterMS >= 0 {
		d.RetryAfterMS = &r.retryAfterMS
	}
	return encode("goodbye", "", d)
}

// encodeError builds an error frame echoing id.
func encodeError(e *protoError) []byte {
	return encode("error", e.id, errorData{Code: e.code, Message: e.message, Reason: e.reason})
}

// encodeHeartbeatAck builds heartbeat_ack for the time now.
func encodeHeartbeatAck(id string, now time.Time) []byte {
	return encode("heartbeat_ack", id, heartbeatData{Timestamp: now.UTC().Format(time.RFC3339Nano)})
}

// encodePresence builds a presence frame; reason is empty for "joined".
func encodePresence(game uuid.UUID, sid string, userID *int64, status, reason string) []byte {
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
func encodeEvent(cmd command, sid string, userID *int64, results []int) []byte {
	game := cmd.game.String()
	var data any
	if cmd.kind == cmdRoll {
		data = diceData{GameID: game, SID: sid, UserID: userID, Dice: cmd.dice, Results: results}
	} else {
		data = decisionData{GameID: game, SID: sid, UserID: userID, Decision: cmd.decision}
	}
	return encode(eventTypes[cmd.kind], "", data)
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

// idScanLimit bounds the bytes scanID reads. A refused message must cost the
// server next to nothing, yet its reply should still carry its id; a client
// that writes its frames as type, id, data (as JSON.stringify of an object
// literal in that order does) has its id within the first few dozen bytes.
const idScanLimit = 4096

// scanID finds a frame's top-level "id" without decoding the frame, reading at
// most idScanLimit bytes, and returns it when it is a string the contract
// allows as an id; otherwise "". It serves the rate limiter, which must echo a
// refused message's id at a cost that does not grow with the message.
func scanID(msg []byte) string {
	sc := idScanner{b: msg[:min(len(msg), idScanLimit)]}
	if !sc.expect('{') {
		return ""
	}
	for {
		key, ok := sc.str()
		if !ok || !sc.expect(':') {
			return ""
		}
		if bytes.EqualFold(key, []byte(`"id"`)) { // encoding/json matches names case-insensitively too
			raw, ok := sc.str()
			if !ok {
				return ""
			}
			var id string
			if json.Unmarshal(raw, &id) != nil || utf8.RuneCountInString(id) > maxIDLen {
				return ""
			}
			return id
		}
		if !sc.skipValue() || !sc.expect(',') {
			return ""
		}
	}
}

// idScanner walks the start of a JSON object token by token. Every method
// reports false when the input ends or is not what it expects, and the scan
// is abandoned: the frame is refused either way, so any doubt means no id.
type idScanner struct {
	b []byte
	i int
}

// space skips JSON white space.
func (s *idScanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\r' || s.b[s.i] == '\n') {
		s.i++
	}
}

// expect consumes the byte c after white space.
func (s *idScanner) expect(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str consumes a JSON string and returns it with its quotes.
func (s *idScanner) str() ([]byte, bool) {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return s.b[start:s.i], true
		}
	}
	return nil, false
}

// skipValue consumes one JSON value of any kind.
func (s *idScanner) skipValue() bool {
	s.space()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default: // a number, true, false or null
		start := s.i
		for s.i < len(s.b) && strings.IndexByte(",}] \t\r\n", s.b[s.i]) < 0 {
			s.i++
		}
		return s.i > start && s.i < len(s.b)
	}
}
