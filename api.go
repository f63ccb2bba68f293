package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The game backend's API (contract v2 §8): /api/games/{id} to set and read a
// game's settings, /api/games/{id}/kick to end seats. Only the backend may
// call it (a bearer token), and with no token configured the API does not
// exist at all. Handlers validate with pure functions and then ask the hub,
// which alone touches games and sessions.

// maxAPIBody bounds a request body: the largest valid one is under 200 bytes.
const maxAPIBody = 16 << 10

// settingsFullRetry is the Retry-After of a PUT refused because the seatless
// settings are all taken: the oldest of them ages out within the hour.
const settingsFullRetry = 60 * time.Second

// API error codes: each bad input has its own, so the backend's logs say
// exactly what it sent wrong.
const (
	apiUnauthorized     = "unauthorized"
	apiNotFound         = "not_found"
	apiGameNotFound     = "game_not_found"
	apiMethodNotAllowed = "method_not_allowed"
	apiInvalidGameID    = "invalid_game_id"
	apiBodyTooLarge     = "body_too_large"
	apiInvalidJSON      = "invalid_json"
	apiUnknownField     = "unknown_field"
	apiEmptySettings    = "empty_settings"
	apiInvalidState     = "invalid_state"
	apiUnknownState     = "unknown_state"
	apiInvalidTimeout   = "invalid_idle_timeout"
	apiTimeoutRange     = "idle_timeout_out_of_range"
	apiInvalidPolicy    = "invalid_seat_policy"
	apiMissingTarget    = "missing_target"
	apiAmbiguousTarget  = "ambiguous_target"
	apiInvalidUserID    = "invalid_user_id"
	apiInvalidSID       = "invalid_sid"
	apiSettingsFull     = "too_many_games"
	apiShuttingDown     = "shutting_down"
)

// apiError is a refused API request: its status, code and message.
type apiError struct {
	status  int
	code    string
	message string
}

// badRequest is a 400 with code.
func badRequest(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

// apiSettings answers a PUT: the game's settings and its seat count.
type apiSettings struct {
	GameID string `json:"game_id"`
	gameView
	Sessions int `json:"sessions"`
}

// apiGame answers a GET: the game's settings and its seats.
type apiGame struct {
	GameID string `json:"game_id"`
	gameView
	Members []apiMember `json:"members"`
}

// apiMember is one seat of a game as GET lists it.
type apiMember struct {
	SID    string `json:"sid"`
	UserID *int64 `json:"user_id"`
	Status string `json:"status"`
	IdleMS int64  `json:"idle_ms"`
}

// serveAPI authenticates every /api/ request, then routes it. The method is
// checked after the token, so that without one nothing about the API shows.
func (s *server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dugout"`)
		writeAPIError(w, &apiError{http.StatusUnauthorized, apiUnauthorized, "a valid Authorization: Bearer <SERVICE_TOKEN> is required"})
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/"), "/")
	switch {
	case len(parts) == 2 && parts[0] == "games" && parts[1] != "":
		switch r.Method {
		case http.MethodGet:
			s.withGame(w, parts[1], func(game uuid.UUID) { s.getGame(w, game) })
		case http.MethodPut:
			s.withGame(w, parts[1], func(game uuid.UUID) { s.putGame(w, r, game) })
		default:
			notAllowed(w, "GET, PUT")
		}
	case len(parts) == 3 && parts[0] == "games" && parts[1] != "" && parts[2] == "kick":
		if r.Method != http.MethodPost {
			notAllowed(w, "POST")
			return
		}
		s.withGame(w, parts[1], func(game uuid.UUID) { s.kickGame(w, r, game) })
	default:
		writeAPIError(w, &apiError{http.StatusNotFound, apiNotFound, "no such endpoint"})
	}
}

// authorized reports whether r carries the service token.
func (s *server) authorized(r *http.Request) bool {
	return bearerMatches(r, s.cfg.ServiceToken)
}

// notAllowed answers 405 with the methods the path takes.
func notAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeAPIError(w, &apiError{http.StatusMethodNotAllowed, apiMethodNotAllowed, "this endpoint takes " + allow})
}

// withGame parses the path's game id and calls fn with it, or answers 400.
func (s *server) withGame(w http.ResponseWriter, raw string, fn func(uuid.UUID)) {
	game, err := parseGameID(raw)
	if err != nil {
		writeAPIError(w, badRequest(apiInvalidGameID, "the game id in the path is not a UUID"))
		return
	}
	fn(game)
}

// putGame applies a PUT: 200 with the settings and the seat count once every
// member's game_updated is queued (the hub queues them before it answers).
func (s *server) putGame(w http.ResponseWriter, r *http.Request, game uuid.UUID) {
	body, aerr := readAPIBody(w, r)
	var patch settingsPatch
	if aerr == nil {
		patch, aerr = decodeSettings(body, s.cfg.stateTimeouts, s.cfg.ExpiryWarning)
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	reply := make(chan gameReply, 1)
	rep, ok := ask(s.hub, gameUpdateMsg{game: game, patch: patch, reply: reply}, reply)
	switch {
	case !ok:
		writeAPIError(w, shuttingDown())
	case rep.full:
		w.Header().Set("Retry-After", strconv.Itoa(int(settingsFullRetry/time.Second)))
		writeAPIError(w, &apiError{http.StatusServiceUnavailable, apiSettingsFull,
			"settings are kept for at most " + strconv.Itoa(s.hub.cfg.seatlessMax()) + " games without seats; try again later"})
	default:
		s.log.Info().Str("game_id", game.String()).Int("sessions", rep.sessions).Msg("game settings")
		writeJSON(w, http.StatusOK, apiSettings{GameID: game.String(), gameView: rep.view, Sessions: rep.sessions})
	}
}

// getGame answers GET: the settings and the members, 404 for a game with
// neither seats nor settings.
func (s *server) getGame(w http.ResponseWriter, game uuid.UUID) {
	reply := make(chan gameReply, 1)
	rep, ok := ask(s.hub, gameQueryMsg{game: game, reply: reply}, reply)
	switch {
	case !ok:
		writeAPIError(w, shuttingDown())
	case !rep.found:
		writeAPIError(w, &apiError{http.StatusNotFound, apiGameNotFound, "game " + game.String() + " has neither seats nor settings"})
	default:
		members := rep.members
		if members == nil {
			members = []apiMember{}
		}
		writeJSON(w, http.StatusOK, apiGame{GameID: game.String(), gameView: rep.view, Members: members})
	}
}

// kickGame ends the seats a kick names: 200 with how many.
func (s *server) kickGame(w http.ResponseWriter, r *http.Request, game uuid.UUID) {
	body, aerr := readAPIBody(w, r)
	var m kickMsg
	if aerr == nil {
		m, aerr = decodeKick(body)
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	m.game, m.reply = game, make(chan int, 1)
	removed, ok := ask(s.hub, m, m.reply)
	if !ok {
		writeAPIError(w, shuttingDown())
		return
	}
	s.log.Info().Str("game_id", game.String()).Int("removed", removed).Msg("kick")
	writeJSON(w, http.StatusOK, map[string]int{"removed": removed})
}

// shuttingDown is the answer once the hub has stopped.
func shuttingDown() *apiError {
	return &apiError{http.StatusServiceUnavailable, apiShuttingDown, "the server is shutting down"}
}

// readAPIBody reads a request body of at most maxAPIBody bytes.
func readAPIBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &apiError{http.StatusRequestEntityTooLarge, apiBodyTooLarge,
			"the body must be at most " + strconv.Itoa(maxAPIBody) + " bytes"}
	case err != nil:
		return nil, badRequest(apiInvalidJSON, "the body could not be read")
	}
	return body, nil
}

// decodeObject reads body as one JSON object whose keys are all in allowed.
// Keys are matched exactly: a backend's typo is an error, not a no-op.
func decodeObject(body []byte, allowed ...string) (map[string]json.RawMessage, *apiError) {
	var fields map[string]json.RawMessage
	if !isObjectText(body) || json.Unmarshal(body, &fields) != nil {
		return nil, badRequest(apiInvalidJSON, "the body must be one JSON object")
	}
	for k := range fields {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		if !known {
			return nil, badRequest(apiUnknownField, "unknown field %s; the fields are %s", quoteShort(k), strings.Join(allowed, ", "))
		}
	}
	return fields, nil
}

// decodeSettings validates a PUT's body against the configured states and
// warning: any of state, idle_timeout_ms and seat_policy, at least one. A
// state must name a GAME_STATE_TIMEOUTS entry, whose timeout it brings,
// unless idle_timeout_ms is given too, which wins.
func decodeSettings(body []byte, states map[string]time.Duration, warning time.Duration) (settingsPatch, *apiError) {
	var p settingsPatch
	fields, aerr := decodeObject(body, "state", "idle_timeout_ms", "seat_policy")
	if aerr != nil {
		return p, aerr
	}
	if len(fields) == 0 {
		return p, badRequest(apiEmptySettings, "give at least one of state, idle_timeout_ms, seat_policy")
	}
	if raw, ok := fields["idle_timeout_ms"]; ok {
		ms, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return p, badRequest(apiInvalidTimeout, "idle_timeout_ms must be an integer number of milliseconds")
		}
		if ms <= warning.Milliseconds() || ms > maxIdleTimeout.Milliseconds() {
			return p, badRequest(apiTimeoutRange, "idle_timeout_ms must be more than EXPIRY_WARNING (%d) and at most %d",
				warning.Milliseconds(), maxIdleTimeout.Milliseconds())
		}
		d := time.Duration(ms) * time.Millisecond
		p.timeout = &d
	}
	if raw, ok := fields["state"]; ok {
		var st string
		if json.Unmarshal(raw, &st) != nil || !stateName.MatchString(st) {
			return p, badRequest(apiInvalidState, "state must be a string of 1 to 32 of a-z and _")
		}
		d, known := states[st]
		if !known && p.timeout == nil {
			return p, badRequest(apiUnknownState, "state %s has no timeout in GAME_STATE_TIMEOUTS; give idle_timeout_ms with it", quoteShort(st))
		}
		if p.timeout == nil {
			p.timeout = &d
		}
		p.state = &st
	}
	if raw, ok := fields["seat_policy"]; ok {
		var policy string
		if json.Unmarshal(raw, &policy) != nil || policy != seatMulti && policy != seatSingle {
			return p, badRequest(apiInvalidPolicy, "seat_policy must be %q or %q", seatMulti, seatSingle)
		}
		single := policy == seatSingle
		p.single = &single
	}
	return p, nil
}

// decodeKick validates a kick's body: exactly one of user_id and sid.
func decodeKick(body []byte) (kickMsg, *apiError) {
	var m kickMsg
	fields, aerr := decodeObject(body, "user_id", "sid")
	if aerr != nil {
		return m, aerr
	}
	rawUser, byUser := fields["user_id"]
	rawSID, bySID := fields["sid"]
	switch {
	case byUser && bySID:
		return m, badRequest(apiAmbiguousTarget, "give user_id or sid, not both")
	case byUser:
		id, err := strconv.ParseInt(string(rawUser), 10, 64)
		if err != nil {
			return m, badRequest(apiInvalidUserID, "user_id must be an integer")
		}
		m.userID = &id
	case bySID:
		if json.Unmarshal(rawSID, &m.sid) != nil || m.sid == "" || utf8.RuneCountInString(m.sid) > maxIDLen {
			return m, badRequest(apiInvalidSID, "sid must be a string of 1 to %d characters", maxIDLen)
		}
	default:
		return m, badRequest(apiMissingTarget, "give user_id or sid")
	}
	return m, nil
}

// writeAPIError writes e as {"error","message"}.
func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, map[string]string{"error": e.code, "message": e.message})
}
