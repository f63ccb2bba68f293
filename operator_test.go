package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// The operator's access to /health/connections (contract v2 §11).

const (
	testOperatorToken = "operator-token-that-is-long-enough-0123"
	testServiceToken  = "service-token-that-is-long-enough-01234"
)

// anyUUID finds a game id anywhere in a body.
var anyUUID = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// getWith fetches path from s with the Authorization header auth (none when
// empty) and returns the status, the headers and the body.
func getWith(t *testing.T, s *testServer, path, auth string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", path, err)
	}
	return resp.StatusCode, resp.Header, body
}

// healthBody is what the operator tests read of /health/connections.
type healthBody struct {
	TotalSessions   int            `json:"total_sessions"`
	ActiveGames     int            `json:"active_games"`
	GameIDsHidden   *bool          `json:"game_ids_hidden"`
	SessionsPerGame map[string]int `json:"sessions_per_game"`
}

// seatedServer starts a server with cfg and seats four clients in three games.
func seatedServer(t *testing.T, cfg config) (*testServer, []string) {
	t.Helper()
	s := startServer(t, cfg)
	games := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	for i, g := range []string{games[0], games[0], games[1], games[2]} {
		c := dial(t, s.url, nil)
		c.send(`{"type":"join_game","id":"j` + string(rune('0'+i)) + `","data":{"game_id":"` + g + `"}}`)
		c.expect("game_joined")
	}
	return s, games
}

func TestHealthGameIDsForTheOperatorOnly(t *testing.T) {
	cfg := testConfig(t)
	cfg.OperatorToken, cfg.ServiceToken, cfg.HealthGameIDs = testOperatorToken, testServiceToken, gameIDsOperator
	s, games := seatedServer(t, cfg)
	for _, tc := range []struct {
		name, auth string
		hidden     bool
	}{
		{"no token", "", true},
		{"a wrong token counts as none", "Bearer " + testOperatorToken + "x", true},
		{"the service token is not the operator's", "Bearer " + testServiceToken, true},
		{"another scheme", "Basic " + testOperatorToken, true},
		{"the operator token", "Bearer " + testOperatorToken, false},
		{"the scheme in any case", "bearer " + testOperatorToken, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := getWith(t, s, "/health/connections", tc.auth)
			if status != http.StatusOK {
				t.Fatalf("HTTP %d: %s", status, body)
			}
			var h healthBody
			if err := json.Unmarshal(body, &h); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			if h.TotalSessions != 4 || h.ActiveGames != 3 || h.GameIDsHidden == nil || *h.GameIDsHidden != tc.hidden {
				t.Fatalf("counts or game_ids_hidden wrong: %s", body)
			}
			if !strings.Contains(hdr.Get("Vary"), "Authorization") {
				t.Errorf("Vary %q: a cache must not give one caller's answer to another", hdr.Get("Vary"))
			}
			if tc.hidden {
				if id := anyUUID.Find(body); id != nil || string(mustRaw(t, body, "sessions_per_game")) != "{}" {
					t.Fatalf("a game id (%s) without the operator token: %s", id, body)
				}
				return
			}
			want := map[string]int{games[0]: 2, games[1]: 1, games[2]: 1}
			if len(h.SessionsPerGame) != len(want) {
				t.Fatalf("sessions_per_game %v, want %v", h.SessionsPerGame, want)
			}
			for g, n := range want {
				if h.SessionsPerGame[g] != n {
					t.Fatalf("sessions_per_game %v, want %v", h.SessionsPerGame, want)
				}
			}
		})
	}
}

func TestHealthGameIDsPublicByDefault(t *testing.T) {
	cfg := testConfig(t)
	cfg.OperatorToken = testOperatorToken
	s, games := seatedServer(t, cfg)
	_, _, body := getWith(t, s, "/health/connections", "")
	var h healthBody
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatal(err)
	}
	if h.GameIDsHidden == nil || *h.GameIDsHidden || len(h.SessionsPerGame) != 3 || h.SessionsPerGame[games[0]] != 2 {
		t.Fatalf("HEALTH_GAME_IDS=public: %s", body)
	}
}

func TestBearerMatchesNothingWithoutASecret(t *testing.T) {
	for _, h := range []string{"", "Bearer ", "Bearer x", "Bearer"} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", h)
		if bearerMatches(r, "") {
			t.Errorf("%q matched an empty secret", h)
		}
	}
}

// mustRaw returns the raw JSON of key in body.
func mustRaw(t *testing.T, body []byte, key string) json.RawMessage {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return raw[key]
}
