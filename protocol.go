package main

// Client frames: the command each one decodes to, and the pure functions that
// decode and validate them in the reader goroutine, keeping JSON work out of
// the hub. A roll's dice are read in dice.go; the errors a bad frame becomes
// are in errorcodes.go.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits the contract puts on client frames.
const (
	maxIDLen = 64
	minDice  = 1
	maxDice  = 10
	minSides = 2
	maxSides = 100
)

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

// A text message decodes to a command, or to the protoError the client must
// be told about, by decodeFast and, for what it leaves, decodeStrict: pure
// functions, so they can be fuzzed and run by the reader, keeping JSON work
// out of the hub. serveMessage runs the two apart, the strict one aside.

// decodeFast decodes a frame in one pass when it is entirely valid and plain,
// and reports false at the first doubt, leaving the precise diagnosis to
// decodeStrict. Valid frames are the hot path; errors can afford two passes,
// except bad dice (the one list a frame may make huge), which it diagnoses
// itself once everything before them checks out.
//
// It walks the frame json.Valid has accepted instead of unmarshalling it:
// encoding/json's reflection, its strings and its state were half the garbage
// a relayed decision made, and the reader reuses msg's buffer, so only what a
// command keeps (its id and decision) is copied. "Plain" is what makes the
// walk agree with encoding/json: the frame's keys are the contract's, spelt
// exactly and each once, and the strings it reads hold no escapes. Anything
// else (an unknown or repeated key, which encoding/json would match without
// regard to case or let the last of win) goes to decodeStrict.
func decodeFast(msg []byte) (command, *protoError, bool) {
	if !utf8.Valid(msg) || !json.Valid(msg) || !isObjectText(msg) {
		return command{}, nil, false
	}
	var typ, id, data []byte
	if !readMembers(msg, [3]string{`"type"`, `"id"`, `"data"`}, [3]*[]byte{&typ, &id, &data}) {
		return command{}, nil, false
	}
	typName, ok := plainString(typ)
	if !ok {
		return command{}, nil, false
	}
	kind, ok := clientTypes[string(typName)]
	if !ok {
		return command{}, nil, false
	}
	var cmd command
	cmd.kind = kind
	if id != nil {
		text, ok := plainString(id)
		if !ok || utf8.RuneCount(text) > maxIDLen {
			return command{}, nil, false
		}
		cmd.id = string(text)
	}
	switch kind {
	case cmdHeartbeat:
		return cmd, nil, true // heartbeat takes anything or nothing as data
	case cmdJoin, cmdLeave, cmdDefensive, cmdOffensive, cmdRoll:
	default:
		return command{}, nil, false // resume and refresh_token: decodeStrict reads their data
	}
	var gameID, decision, dice []byte
	if !readMembers(data, [3]string{`"game_id"`, `"decision"`, `"dice"`}, [3]*[]byte{&gameID, &decision, &dice}) {
		return command{}, nil, false
	}
	text, ok := plainString(gameID)
	if !ok {
		return command{}, nil, false
	}
	game, err := parseGameIDBytes(text)
	if err != nil {
		return command{}, nil, false
	}
	cmd.game = game
	switch kind {
	case cmdDefensive, cmdOffensive:
		if !isObject(decision) {
			return command{}, nil, false
		}
		cmd.decision = bytes.Clone(decision)
	case cmdRoll:
		if dice == nil {
			cmd.dice = defaultDice
			break
		}
		switch parsed, err := parseDice(dice); {
		case err != nil:
			return command{}, &protoError{code: codeInvalidMessage, message: diceProblem(err), id: cmd.id}, true
		case parsed == nil:
			cmd.dice = defaultDice
		case checkDice(parsed) != "":
			return command{}, nil, false
		default:
			cmd.dice = parsed
		}
	}
	return cmd, nil, true
}

// plainString returns the text of raw, a JSON value, when it is a string
// without escapes: then the text is the string's value.
func plainString(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || bytes.IndexByte(raw, '\\') >= 0 {
		return nil, false
	}
	return raw[1 : len(raw)-1], true
}

// readMembers reads the object raw, a JSON value, into fields: each member's
// raw value goes to the field of its key (keys are given with their quotes).
// It reports false when raw is not an object, or has a key not in keys, or
// one twice.
func readMembers(raw []byte, keys [3]string, fields [3]*[]byte) bool {
	w := jsonWalk{b: raw}
	w.space()
	if w.i == len(w.b) || w.b[w.i] != '{' {
		return false
	}
	w.i++
	for {
		key, val, ok := w.member()
		if !ok {
			return true
		}
		k := 0
		for k < len(keys) && string(key) != keys[k] {
			k++
		}
		if k == len(keys) || *fields[k] != nil {
			return false
		}
		*fields[k] = val
	}
}

// jsonWalk reads the members of a JSON object in a text json.Valid has
// accepted, which is why it checks no syntax: every bracket it looks for is
// there.
type jsonWalk struct {
	b []byte
	i int
}

// member returns the next member's key (with its quotes) and raw value, or
// false at the object's end.
func (w *jsonWalk) member() (key, val []byte, ok bool) {
	w.space()
	if w.b[w.i] == ',' {
		w.i++
		w.space()
	}
	if w.b[w.i] == '}' {
		return nil, nil, false
	}
	key = w.value()
	w.space()
	w.i++ // the colon
	w.space()
	return key, w.value(), true
}

// value consumes one value and returns its text.
func (w *jsonWalk) value() []byte {
	start, depth := w.i, 0
	for ; w.i < len(w.b); w.i++ {
		switch w.b[w.i] {
		case '"':
			for w.i++; w.b[w.i] != '"'; w.i++ {
				if w.b[w.i] == '\\' {
					w.i++
				}
			}
			if depth == 0 {
				w.i++
				return w.b[start:w.i]
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 { // the end of a number or literal that closes the object
				return w.b[start:w.i]
			}
			if depth--; depth == 0 {
				w.i++
				return w.b[start:w.i]
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return w.b[start:w.i]
			}
		}
	}
	return w.b[start:w.i]
}

// space skips JSON whitespace.
func (w *jsonWalk) space() {
	for w.i < len(w.b) && (w.b[w.i] == ' ' || w.b[w.i] == '\t' || w.b[w.i] == '\n' || w.b[w.i] == '\r') {
		w.i++
	}
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
	return parseGameIDBytes([]byte(s))
}

// parseGameIDBytes is parseGameID on the bytes of a frame, which the hot path
// need not copy into a string first (uuid.ParseBytes is uuid.Parse on bytes).
func parseGameIDBytes(b []byte) (uuid.UUID, error) {
	if len(b) == 38 && (b[0] != '{' || b[37] != '}') {
		return uuid.UUID{}, errNotUUID
	}
	return uuid.ParseBytes(b)
}

var errNotUUID = errors.New("not a UUID")

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
