package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// The operator's access (contract v2 §11): OPERATOR_TOKEN unlocks the
// dashboard's per-game details and, with HEALTH_GAME_IDS=operator, the game
// ids of /health/connections. Game ids are what a player needs to join a
// game, so an operator may keep them from anyone who can reach health.

// minOperatorToken is the shortest OPERATOR_TOKEN accepted, as for SERVICE_TOKEN.
const minOperatorToken = 32

// Values of HEALTH_GAME_IDS.
const (
	gameIDsPublic   = "public"
	gameIDsOperator = "operator"
)

// validateOperator checks OPERATOR_TOKEN and HEALTH_GAME_IDS. Its errors give
// lengths, never a token.
func (c *config) validateOperator() error {
	switch {
	case c.OperatorToken != "" && len(c.OperatorToken) < minOperatorToken:
		return fmt.Errorf("OPERATOR_TOKEN must be at least %d characters when set (it has %d)", minOperatorToken, len(c.OperatorToken))
	case c.OperatorToken != "" && c.OperatorToken == c.ServiceToken:
		// One leaked token must not open both the backend's API and the operator's view.
		return errors.New("OPERATOR_TOKEN must differ from SERVICE_TOKEN")
	case c.HealthGameIDs != gameIDsPublic && c.HealthGameIDs != gameIDsOperator:
		return fmt.Errorf("HEALTH_GAME_IDS=%q is not public or operator", c.HealthGameIDs)
	case c.HealthGameIDs == gameIDsOperator && c.OperatorToken == "":
		// Hidden from everyone is not what "operator" means; say so at start.
		return errors.New("HEALTH_GAME_IDS=operator needs OPERATOR_TOKEN: without it nobody could see the game ids")
	}
	return nil
}

// bearerMatches reports whether r's Authorization header is "Bearer <secret>".
// Both sides are hashed first, so that the comparison takes the same time
// whatever the length of what the caller sent. An empty secret matches nothing.
func bearerMatches(r *http.Request, secret string) bool {
	got, ok := bearer(r)
	if !ok || secret == "" {
		return false
	}
	g := sha256.Sum256([]byte(got))
	w := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// bearer returns the credentials of r's Authorization header when it has the
// Bearer scheme (any case, as RFC 7235 has it).
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < len("Bearer ") || !strings.EqualFold(h[:len("Bearer ")], "Bearer ") {
		return "", false
	}
	return h[len("Bearer "):], true
}

// operatorAccess is what a request's credentials make of it.
type operatorAccess int

const (
	accessPublic   operatorAccess = iota // no Authorization header
	accessOperator                       // the operator token
	accessWrong                          // an Authorization header that is not the operator token
)

// operatorAccess reads r's credentials against OPERATOR_TOKEN.
func (s *server) operatorAccess(r *http.Request) operatorAccess {
	switch {
	case r.Header.Get("Authorization") == "":
		return accessPublic
	case bearerMatches(r, s.cfg.OperatorToken):
		return accessOperator
	default:
		return accessWrong
	}
}

// gameIDsHidden reports whether /health/connections keeps game ids from r.
// A wrong token counts as none: health is a public probe, and answering it
// 401 would turn a typo in a monitor's header into an outage alert.
func (s *server) gameIDsHidden(r *http.Request) bool {
	return s.cfg.HealthGameIDs == gameIDsOperator && s.operatorAccess(r) != accessOperator
}
