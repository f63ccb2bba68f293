package main

// The backend's API over the real mux (contract v2 §8): the token, every
// status and error code, the settings a PUT writes and a GET reads back, and
// the game_updated every member has been queued before the 200.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// apiToken is the SERVICE_TOKEN of the API tests: 32 characters, the least allowed.
const apiToken = "service-token-of-32-characters!!"

// apiConfig is the test configuration with the API on.
func apiConfig(t *testing.T) config {
	cfg := testConfig(t)
	cfg.ServiceToken = apiToken
	cfg.JWTSecret = testSecret
	return cfg
}

// apiReply is an API response: its status, headers and body.
type apiReply struct {
	status int
	header http.Header
	body   []byte
}

// decode unmarshals the body into v.
func (r apiReply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.body, err)
	}
}

// apiCall sends method path with body ("" for none) and auth as the
// Authorization header ("" for none).
func apiCall(t *testing.T, s *testServer, method, path, body, auth string) apiReply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiReply{status: resp.StatusCode, header: resp.Header, body: b}
}

// api is apiCall with the right token.
func api(t *testing.T, s *testServer, method, path, body string) apiReply {
	t.Helper()
	return apiCall(t, s, method, path, body, "Bearer "+apiToken)
}

// expectAPIError checks r is status with the error code and a message.
func expectAPIError(t *testing.T, r apiReply, status int, code string) {
	t.Helper()
	var e struct{ Error, Message string }
	if r.status != status || json.Unmarshal(r.body, &e) != nil || e.Error != code || e.Message == "" {
		t.Fatalf("got %d %s, want %d with error %q and a message", r.status, r.body, status, code)
	}
}

// apiSettingsBody is a PUT's or a GET's body as a client reads it.
type apiSettingsBody struct {
	GameID        string      `json:"game_id"`
	State         *string     `json:"state"`
	IdleTimeoutMS *int64      `json:"idle_timeout_ms"`
	SeatPolicy    string      `json:"seat_policy"`
	Sessions      *int        `json:"sessions"`
	Members       []apiMember `json:"members"`
}

func TestAPIIsNotFoundWithoutAToken(t *testing.T) {
	s := startServer(t, testConfig(t)) // SERVICE_TOKEN empty
	game := "/api/games/" + uuid.NewString()
	for _, c := range []struct{ method, path string }{
		{"GET", game}, {"PUT", game}, {"POST", game + "/kick"}, {"DELETE", game}, {"GET", "/api/"}, {"GET", "/api/anything"},
	} {
		if r := apiCall(t, s, c.method, c.path, `{"state":"lobby"}`, "Bearer "+apiToken); r.status != http.StatusNotFound {
			t.Errorf("%s %s without SERVICE_TOKEN: %d %s, want 404", c.method, c.path, r.status, r.body)
		}
	}
}

func TestAPIRefusesABadToken(t *testing.T) {
	s := startServer(t, apiConfig(t))
	game := "/api/games/" + uuid.NewString()
	for name, auth := range map[string]string{
		"no header":            "",
		"wrong token":          "Bearer " + strings.Repeat("x", 32),
		"the token's prefix":   "Bearer " + apiToken[:31],
		"the token and more":   "Bearer " + apiToken + "x",
		"another scheme":       "Basic " + apiToken,
		"the bare token":       apiToken,
		"bearer without token": "Bearer ",
	} {
		t.Run(name, func(t *testing.T) {
			for _, m := range []string{"GET", "PUT", "DELETE"} { // the method is checked after the token
				r := apiCall(t, s, m, game, `{"state":"lobby"}`, auth)
				expectAPIError(t, r, http.StatusUnauthorized, apiUnauthorized)
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate: Bearer (%q)", r.header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	t.Run("the scheme in lower case is accepted", func(t *testing.T) {
		if r := apiCall(t, s, "PUT", game, `{"state":"lobby"}`, "bearer "+apiToken); r.status != http.StatusOK {
			t.Fatalf("got %d %s, want 200", r.status, r.body)
		}
	})
}

func TestAPIMethodsAndPaths(t *testing.T) {
	s := startServer(t, apiConfig(t))
	game := "/api/games/" + uuid.NewString()
	for _, c := range []struct{ method, path, allow string }{
		{"DELETE", game, "GET, PUT"}, {"POST", game, "GET, PUT"}, {"PATCH", game, "GET, PUT"},
		{"GET", game + "/kick", "POST"}, {"PUT", game + "/kick", "POST"},
	} {
		r := api(t, s, c.method, c.path, "")
		expectAPIError(t, r, http.StatusMethodNotAllowed, apiMethodNotAllowed)
		if r.header.Get("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, r.header.Get("Allow"), c.allow)
		}
	}
	for _, p := range []string{"/api/", "/api/games", "/api/games/", game + "/kick/x", game + "/ban", "/api/sessions/x"} {
		expectAPIError(t, api(t, s, "GET", p, ""), http.StatusNotFound, apiNotFound)
	}
	expectAPIError(t, api(t, s, "GET", game, ""), http.StatusNotFound, apiGameNotFound)
}

func TestAPIBadRequests(t *testing.T) {
	cfg := apiConfig(t)
	cfg.ExpiryWarning = 10 * time.Second // idle_timeout_ms must be over 10000
	s := startServer(t, cfg)
	game := "/api/games/" + uuid.NewString()
	for _, c := range []struct {
		name, method, path, body, code string
	}{
		{"a game id that is no UUID", "PUT", "/api/games/not-a-uuid", `{"state":"lobby"}`, apiInvalidGameID},
		{"a game id in braces left open", "GET", "/api/games/{6f9619ff-8b86-d011-b42d-00c04fd430c8x", "", apiInvalidGameID},
		{"a kick of a game id that is no UUID", "POST", "/api/games/x/kick", `{"sid":"a"}`, apiInvalidGameID},
		{"no body", "PUT", game, "", apiInvalidJSON},
		{"a body that is no JSON", "PUT", game, `state=lobby`, apiInvalidJSON},
		{"a JSON array", "PUT", game, `[{"state":"lobby"}]`, apiInvalidJSON},
		{"JSON and more", "PUT", game, `{"state":"lobby"} {}`, apiInvalidJSON},
		{"an unknown field", "PUT", game, `{"state":"lobby","colour":"red"}`, apiUnknownField},
		{"a field in another case", "PUT", game, `{"State":"lobby"}`, apiUnknownField},
		{"no field", "PUT", game, `{}`, apiEmptySettings},
		{"a state that is no string", "PUT", game, `{"state":5}`, apiInvalidState},
		{"a null state", "PUT", game, `{"state":null}`, apiInvalidState},
		{"a state in upper case", "PUT", game, `{"state":"LOBBY"}`, apiInvalidState},
		{"a state of 33 characters", "PUT", game, `{"state":"` + strings.Repeat("a", 33) + `","idle_timeout_ms":60000}`, apiInvalidState},
		{"an unknown state", "PUT", game, `{"state":"seventh_inning"}`, apiUnknownState},
		{"a timeout that is no number", "PUT", game, `{"idle_timeout_ms":"60000"}`, apiInvalidTimeout},
		{"a fractional timeout", "PUT", game, `{"idle_timeout_ms":60000.5}`, apiInvalidTimeout},
		{"a timeout in exponent form", "PUT", game, `{"idle_timeout_ms":6e4}`, apiInvalidTimeout},
		{"a timeout equal to EXPIRY_WARNING", "PUT", game, `{"idle_timeout_ms":10000}`, apiTimeoutRange},
		{"a negative timeout", "PUT", game, `{"idle_timeout_ms":-1}`, apiTimeoutRange},
		{"a timeout over a day", "PUT", game, `{"idle_timeout_ms":86400001}`, apiTimeoutRange},
		{"an unknown seat policy", "PUT", game, `{"seat_policy":"one_seat"}`, apiInvalidPolicy},
		{"a seat policy that is no string", "PUT", game, `{"seat_policy":true}`, apiInvalidPolicy},
		{"a kick of nobody", "POST", game + "/kick", `{}`, apiMissingTarget},
		{"a kick of a user and a sid", "POST", game + "/kick", `{"user_id":1,"sid":"S"}`, apiAmbiguousTarget},
		{"a kick of a user that is no integer", "POST", game + "/kick", `{"user_id":"1"}`, apiInvalidUserID},
		{"a kick of a fractional user", "POST", game + "/kick", `{"user_id":1.5}`, apiInvalidUserID},
		{"a kick of an empty sid", "POST", game + "/kick", `{"sid":""}`, apiInvalidSID},
		{"a kick of a sid that is no string", "POST", game + "/kick", `{"sid":7}`, apiInvalidSID},
		{"a kick with an unknown field", "POST", game + "/kick", `{"sid":"S","why":"rude"}`, apiUnknownField},
		{"a kick without a body", "POST", game + "/kick", ``, apiInvalidJSON},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectAPIError(t, api(t, s, c.method, c.path, c.body), http.StatusBadRequest, c.code)
		})
	}
	t.Run("a body over the bound", func(t *testing.T) {
		body := `{"state":"lobby","x":"` + strings.Repeat("x", maxAPIBody) + `"}`
		expectAPIError(t, api(t, s, "PUT", game, body), http.StatusRequestEntityTooLarge, apiBodyTooLarge)
	})
	// Nothing was kept of any of it.
	expectAPIError(t, api(t, s, "GET", game, ""), http.StatusNotFound, apiGameNotFound)
}

func TestAPISettingsWrittenAndRead(t *testing.T) {
	s := startServer(t, apiConfig(t))
	id := uuid.New()
	path := "/api/games/" + strings.ToUpper(id.String()) // any spelling; written back canonical
	var got apiSettingsBody
	check := func(r apiReply, state string, timeoutMS int64, policy string) {
		t.Helper()
		got = apiSettingsBody{}
		r.decode(t, &got)
		if r.status != http.StatusOK || got.GameID != id.String() || got.State == nil || *got.State != state ||
			got.IdleTimeoutMS == nil || *got.IdleTimeoutMS != timeoutMS || got.SeatPolicy != policy {
			t.Fatalf("got %d %s, want game %s state %s timeout %d policy %s", r.status, r.body, id, state, timeoutMS, policy)
		}
	}
	r := api(t, s, "PUT", path, `{"state":"lobby"}`) // settings before the first join
	check(r, "lobby", 30*60*1000, seatMulti)
	if got.Sessions == nil || *got.Sessions != 0 {
		t.Fatalf("PUT %s: want sessions 0", r.body)
	}
	check(api(t, s, "GET", path, ""), "lobby", 30*60*1000, seatMulti)
	if got.Members == nil || len(got.Members) != 0 || got.Sessions != nil {
		t.Fatalf("GET %s: want members [] and no sessions", api(t, s, "GET", path, "").body)
	}
	check(api(t, s, "PUT", path, `{"seat_policy":"single_seat"}`), "lobby", 30*60*1000, seatSingle) // the rest is kept
	check(api(t, s, "PUT", path, `{"state":"in_progress","idle_timeout_ms":90000}`), "in_progress", 90000, seatSingle)
	check(api(t, s, "PUT", path, `{"idle_timeout_ms":120000}`), "in_progress", 120000, seatSingle)
	check(api(t, s, "PUT", path, `{"state":"final"}`), "final", 2*60*1000, seatSingle) // a state brings its timeout
	check(api(t, s, "PUT", path, `{"state":"extra_innings","idle_timeout_ms":600000}`), "extra_innings", 600000, seatSingle)

	// A joiner sees them, and so does GET with its seat.
	c := rsJWTDial(t, s, "5")
	c.send(e2eGameMsg("join_game", "j", id.String(), nil))
	f := c.expect("game_joined")
	var j apiSettingsBody
	e2eWire(t, f.frame, &j, "game_id", "state", "idle_timeout_ms", "seat_policy", "epoch", "offset", "members")
	if *j.State != "extra_innings" || *j.IdleTimeoutMS != 600000 || j.SeatPolicy != seatSingle {
		t.Fatalf("game_joined %s lacks the settings", f.raw)
	}
	check(api(t, s, "GET", path, ""), "extra_innings", 600000, seatSingle)
	if len(got.Members) != 1 || got.Members[0].SID != c.session.SID || *got.Members[0].UserID != 5 ||
		got.Members[0].Status != statusConnected || got.Members[0].IdleMS < 0 {
		t.Fatalf("GET members %+v, want the joiner, connected", got.Members)
	}

	// A game the backend never set shows null, null, multi_seat.
	other := uuid.NewString()
	c.send(e2eGameMsg("join_game", "j2", other, nil))
	f = c.expect("game_joined")
	if !strings.Contains(string(f.Data), `"state":null,"idle_timeout_ms":null,"seat_policy":"multi_seat"`) {
		t.Fatalf("game_joined of an unset game: %s", f.Data)
	}
	r = api(t, s, "GET", "/api/games/"+other, "")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"state":null,"idle_timeout_ms":null,"seat_policy":"multi_seat"`) {
		t.Fatalf("GET of an unset game with a seat: %d %s", r.status, r.body)
	}
}

func TestAPIGameUpdatedBeforeTheReply(t *testing.T) {
	s := startServer(t, apiConfig(t))
	game := uuid.NewString()
	a, b := rsJWTDial(t, s, "1"), rsJWTDial(t, s, "2")
	_, offset := rsJoinAll(t, game, a, b)
	r := api(t, s, "PUT", "/api/games/"+game, `{"state":"paused","seat_policy":"single_seat"}`)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"sessions":2`) {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	answered := time.Now()
	for _, c := range []*rsClient{a, b} {
		f := c.expect("game_updated")
		var u struct {
			apiSettingsBody
			Offset uint64 `json:"offset"`
		}
		e2eWire(t, f.frame, &u, "game_id", "state", "idle_timeout_ms", "seat_policy", "offset")
		if f.ID != "" || u.GameID != game || *u.State != "paused" || *u.IdleTimeoutMS != 30*60*1000 ||
			u.SeatPolicy != seatSingle || u.Offset != offset+1 {
			t.Fatalf("game_updated %s, want paused, 30 min, single_seat at offset %d", f.raw, offset+1)
		}
		// The frame was written before the reply: with loopback's ordering a
		// client that got the 200 has its frame within a moment, not later.
		if f.at.After(answered.Add(time.Second)) {
			t.Errorf("game_updated reached %s %s after the 200", c.session.SID, f.at.Sub(answered))
		}
	}
	rsEnd(t, s, a, b)
}

func TestAPISettingsBound(t *testing.T) {
	cfg := apiConfig(t)
	cfg.settingsMax = 2
	s := startServer(t, cfg)
	g1, g2, g3 := uuid.NewString(), uuid.NewString(), uuid.NewString()
	for _, g := range []string{g1, g2} {
		if r := api(t, s, "PUT", "/api/games/"+g, `{"state":"lobby"}`); r.status != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", g, r.status, r.body)
		}
	}
	r := api(t, s, "PUT", "/api/games/"+g3, `{"state":"lobby"}`)
	expectAPIError(t, r, http.StatusServiceUnavailable, apiSettingsFull)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if r := api(t, s, "PUT", "/api/games/"+g1, `{"state":"final"}`); r.status != http.StatusOK {
		t.Fatalf("a PUT to a kept game is no new place: %d %s", r.status, r.body)
	}
	// A game with a seat takes no seatless place.
	c := rsJWTDial(t, s, "1")
	c.join(g3, "j")
	if r := api(t, s, "PUT", "/api/games/"+g3, `{"state":"lobby"}`); r.status != http.StatusOK {
		t.Fatalf("PUT to a seated game: %d %s", r.status, r.body)
	}
	expectAPIError(t, api(t, s, "GET", "/api/games/"+uuid.NewString(), ""), http.StatusNotFound, apiGameNotFound)
}
