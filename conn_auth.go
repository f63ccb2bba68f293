package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// The handshake's token: the user id and exp a /ws request's JWT proves.

// authenticate returns the user id a request's token proves, nil for an
// anonymous request, with the token's exp (0 for none), or an error for a
// token that must be refused: an expired token is refused here, so a session
// can only be resumed on a token valid now. With no JWT_SECRET tokens are not
// accepted: they are ignored and the session is anonymous.
func (s *server) authenticate(r *http.Request) (*int64, int64, error) {
	if s.cfg.JWTSecret == "" {
		return nil, 0, nil
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		if ck, err := r.Cookie("access_token"); err == nil {
			token = ck.Value
		}
	}
	if token == "" {
		if s.cfg.RequireAuth {
			return nil, 0, errors.New("authentication required")
		}
		return nil, 0, nil
	}
	claims, err := s.parseJWT(token)
	if err != nil {
		return nil, 0, fmt.Errorf("invalid token: %w", err)
	}
	id, err := subjectID(claims["sub"])
	if err != nil {
		return nil, 0, fmt.Errorf("invalid token: %w", err)
	}
	return &id, expOf(claims), nil
}

// subjectID reads the integer user id from a token's sub claim, which may be
// a decimal string (as RFC 7519 has it) or a JSON number.
func subjectID(sub any) (int64, error) {
	switch v := sub.(type) {
	case string:
		if id, err := strconv.ParseInt(v, 10, 64); err == nil {
			return id, nil
		}
	case json.Number:
		if id, err := v.Int64(); err == nil {
			return id, nil
		}
	}
	return 0, errors.New("sub must hold an integer user id")
}
