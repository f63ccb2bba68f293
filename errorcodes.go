package main

// The error frame: every code it carries (the one list of them), the reasons
// of a resume_failed, the protoError a client's mistake becomes, and its
// encoder.

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

// protoError is a client mistake that becomes an error frame; the conn stays open.
type protoError struct {
	code    string
	message string
	id      string // echoed when the offending message carried a valid one
	reason  string // resume_failed and invalid_token only: which of their reasons
}

func (e *protoError) Error() string { return e.code + ": " + e.message }

// errorData is the body of an error frame.
type errorData struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Reason  string `json:"reason,omitempty"`
}

// encodeError builds an error frame echoing id.
func encodeError(e *protoError) []byte {
	return encode("error", e.id, errorData{Code: e.code, Message: e.message, Reason: e.reason})
}
