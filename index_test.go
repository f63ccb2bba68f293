package main

import (
	"slices"
	"testing"

	"github.com/google/uuid"
)

// The index's operations under test, one table each: add, remove, join, leave,
// touch, and anonymous sessions. checkIndex and the fixtures are in
// sessions_test.go.

// TestIndexAdd checks add records a session everywhere it belongs and refuses
// a taken sid without changing anything.
func TestIndexAdd(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, x *index)
	}{
		{"first session is the whole idle list", func(t *testing.T, x *index) {
			s := indexSession("a", indexUser(1))
			if !x.add(s, indexAt(5)) {
				t.Fatal("add returned false")
			}
			if x.sessions["a"] != s || x.base.oldest != s || x.base.newest != s {
				t.Error("session not recorded or not linked")
			}
			if !s.lastActivity.Equal(indexAt(5)) {
				t.Errorf("lastActivity = %v, want %v", s.lastActivity, indexAt(5))
			}
		}},
		{"user session is indexed by its user", func(t *testing.T, x *index) {
			s := indexSession("a", indexUser(7))
			x.add(s, indexAt(0))
			if _, ok := x.byUser[7][s]; !ok || len(x.byUser) != 1 {
				t.Errorf("byUser = %v, want user 7 holding a", x.byUser)
			}
		}},
		{"two sessions of one user share its set", func(t *testing.T, x *index) {
			a, b := indexSession("a", indexUser(7)), indexSession("b", indexUser(7))
			x.add(a, indexAt(0))
			x.add(b, indexAt(1))
			if len(x.byUser) != 1 || len(x.byUser[7]) != 2 {
				t.Errorf("byUser = %v, want user 7 holding two sessions", x.byUser)
			}
		}},
		{"later session is newest", func(t *testing.T, x *index) {
			x.add(indexSession("a", nil), indexAt(0))
			x.add(indexSession("b", nil), indexAt(1))
			x.add(indexSession("c", nil), indexAt(2))
			if got := indexIdleSIDs(x); !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Errorf("idle list = %v, want [a b c]", got)
			}
		}},
		{"duplicate sid is refused", func(t *testing.T, x *index) {
			first := indexSession("a", indexUser(1))
			x.add(first, indexAt(0))
			dup := indexSession("a", indexUser(2))
			if x.add(dup, indexAt(9)) {
				t.Fatal("add of a taken sid returned true")
			}
			if x.sessions["a"] != first {
				t.Error("the duplicate replaced the first session")
			}
			if _, ok := x.byUser[2]; ok {
				t.Error("the duplicate's user was indexed")
			}
			if x.base.newest != first || dup.older != nil || dup.newer != nil {
				t.Error("the duplicate was linked into the idle list")
			}
			if !dup.lastActivity.IsZero() || !first.lastActivity.Equal(indexAt(0)) {
				t.Error("a refused add changed lastActivity")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newIndex()
			tc.run(t, x)
			checkIndex(t, x)
		})
	}
}

// TestIndexRemove checks remove forgets a session everywhere, returns its
// games, drops sets it empties, and ignores unknown sids.
func TestIndexRemove(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, x *index, a, b, c *session)
	}{
		{"unknown sid is a no-op", func(t *testing.T, x *index, a, b, c *session) {
			indexJoin(t, x, a, indexGameA)
			s, games := x.remove("nobody")
			if s != nil || games != nil {
				t.Errorf("remove(unknown) = %v, %v, want nil, nil", s, games)
			}
			if len(x.sessions) != 3 || !slices.Equal(indexIdleSIDs(x), []string{"a", "b", "c"}) {
				t.Errorf("index changed: %d sessions, idle %v", len(x.sessions), indexIdleSIDs(x))
			}
			if !slices.Equal(indexMembers(x, indexGameA), []string{"a"}) {
				t.Errorf("game A members = %v, want [a]", indexMembers(x, indexGameA))
			}
		}},
		{"returns the session and every game it was in", func(t *testing.T, x *index, a, b, c *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, a, indexGameB)
			indexJoin(t, x, b, indexGameC)
			s, games := x.remove("a")
			if s != a {
				t.Errorf("remove returned session %v, want a", s)
			}
			slices.SortFunc(games, func(p, q uuid.UUID) int { return slices.Compare(p[:], q[:]) })
			if !slices.Equal(games, []uuid.UUID{indexGameA, indexGameB}) {
				t.Errorf("games = %v, want [A B]", games)
			}
		}},
		{"session in no game returns no games", func(t *testing.T, x *index, a, b, c *session) {
			s, games := x.remove("b")
			if s != b || len(games) != 0 {
				t.Errorf("remove = %v, %v, want b and no games", s, games)
			}
		}},
		{"user set survives while the user has another session", func(t *testing.T, x *index, a, b, c *session) {
			x.remove("a")
			if _, ok := x.byUser[1][b]; !ok || len(x.byUser[1]) != 1 {
				t.Errorf("user 1's set = %v, want b alone", x.byUser[1])
			}
		}},
		{"user set dropped with the user's last session", func(t *testing.T, x *index, a, b, c *session) {
			x.remove("a")
			x.remove("b")
			if _, ok := x.byUser[1]; ok || len(x.byUser) != 0 {
				t.Errorf("byUser = %v, want empty", x.byUser)
			}
		}},
		{"game set survives while it has other members", func(t *testing.T, x *index, a, b, c *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, c, indexGameA)
			x.remove("a")
			if got := indexMembers(x, indexGameA); !slices.Equal(got, []string{"c"}) {
				t.Errorf("game A members = %v, want [c]", got)
			}
		}},
		{"game set dropped with its last member", func(t *testing.T, x *index, a, b, c *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, a, indexGameB)
			indexJoin(t, x, c, indexGameB)
			x.remove("a")
			if _, ok := x.byGame[indexGameA]; ok {
				t.Error("game A's empty set survived")
			}
			if x.members(indexGameA) != nil {
				t.Error("members of an empty game is not nil")
			}
		}},
		{"removing the oldest", func(t *testing.T, x *index, a, b, c *session) {
			x.remove("a")
			if got := indexIdleSIDs(x); !slices.Equal(got, []string{"b", "c"}) {
				t.Errorf("idle list = %v, want [b c]", got)
			}
		}},
		{"removing the middle", func(t *testing.T, x *index, a, b, c *session) {
			x.remove("b")
			if got := indexIdleSIDs(x); !slices.Equal(got, []string{"a", "c"}) {
				t.Errorf("idle list = %v, want [a c]", got)
			}
		}},
		{"removing the newest", func(t *testing.T, x *index, a, b, c *session) {
			x.remove("c")
			if got := indexIdleSIDs(x); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("idle list = %v, want [a b]", got)
			}
		}},
		{"removing everyone empties every map", func(t *testing.T, x *index, a, b, c *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, b, indexGameA)
			indexJoin(t, x, c, indexGameB)
			for _, sid := range []string{"b", "a", "c"} {
				x.remove(sid)
				checkIndex(t, x)
			}
			if len(x.sessions)+len(x.byUser)+len(x.byGame) != 0 || x.base.oldest != nil || x.base.newest != nil {
				t.Errorf("index not empty: %d sessions, %d users, %d games", len(x.sessions), len(x.byUser), len(x.byGame))
			}
		}},
		{"removing twice is a no-op the second time", func(t *testing.T, x *index, a, b, c *session) {
			x.remove("b")
			if s, games := x.remove("b"); s != nil || games != nil {
				t.Errorf("second remove = %v, %v, want nil, nil", s, games)
			}
		}},
		{"removed session keeps no links and no games", func(t *testing.T, x *index, a, b, c *session) {
			indexJoin(t, x, b, indexGameA)
			x.remove("b")
			if b.older != nil || b.newer != nil || b.games != nil {
				t.Error("removed session still links into the index")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := indexSession("a", indexUser(1)), indexSession("b", indexUser(1)), indexSession("c", nil)
			x := indexOf(t, a, b, c)
			tc.run(t, x, a, b, c)
			checkIndex(t, x)
		})
	}
}

// TestIndexJoin checks join adds a membership once and reports whether it was new.
func TestIndexJoin(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, x *index, a, b *session)
	}{
		{"first join is new", func(t *testing.T, x *index, a, b *session) {
			if !x.join(a, indexGameA) {
				t.Fatal("join returned false")
			}
			if !x.inGame(a, indexGameA) || !slices.Equal(indexMembers(x, indexGameA), []string{"a"}) {
				t.Error("a is not a member of game A")
			}
		}},
		{"second join is idempotent", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			if x.join(a, indexGameA) {
				t.Error("second join returned true")
			}
			if len(a.games) != 1 || len(x.members(indexGameA)) != 1 {
				t.Errorf("after two joins: %d games, %d members; want 1 and 1", len(a.games), len(x.members(indexGameA)))
			}
		}},
		{"one session in two games", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, a, indexGameB)
			if !x.inGame(a, indexGameA) || !x.inGame(a, indexGameB) || len(x.byGame) != 2 {
				t.Error("a is not in both games")
			}
		}},
		{"two sessions in one game", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, b, indexGameA)
			if got := indexMembers(x, indexGameA); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("members = %v, want [a b]", got)
			}
		}},
		{"join does not count as activity", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			if got := indexIdleSIDs(x); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("idle list = %v, want [a b]", got)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := indexSession("a", indexUser(1)), indexSession("b", nil)
			x := indexOf(t, a, b)
			tc.run(t, x, a, b)
			checkIndex(t, x)
		})
	}
}

// TestIndexLeave checks leave ends a membership, reports whether there was
// one, and drops sets it empties.
func TestIndexLeave(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, x *index, a, b *session)
	}{
		{"unknown game returns false", func(t *testing.T, x *index, a, b *session) {
			if x.leave(a, indexGameC) {
				t.Error("leave of an unknown game returned true")
			}
			if a.games != nil || len(x.byGame) != 0 {
				t.Error("leave of an unknown game changed the index")
			}
		}},
		{"game only others joined returns false", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, b, indexGameA)
			if x.leave(a, indexGameA) {
				t.Error("leave of a game a never joined returned true")
			}
			if got := indexMembers(x, indexGameA); !slices.Equal(got, []string{"b"}) {
				t.Errorf("members = %v, want [b]", got)
			}
		}},
		{"leaving the only game", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			if !x.leave(a, indexGameA) {
				t.Fatal("leave returned false")
			}
			if x.inGame(a, indexGameA) || a.games != nil {
				t.Errorf("a.games = %v, want nil", a.games)
			}
			if _, ok := x.byGame[indexGameA]; ok {
				t.Error("game A's empty set survived")
			}
		}},
		{"leaving one of two games", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, a, indexGameB)
			x.leave(a, indexGameA)
			if x.inGame(a, indexGameA) || !x.inGame(a, indexGameB) {
				t.Error("wrong game left")
			}
		}},
		{"game set survives for other members", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, b, indexGameA)
			x.leave(a, indexGameA)
			if got := indexMembers(x, indexGameA); !slices.Equal(got, []string{"b"}) {
				t.Errorf("members = %v, want [b]", got)
			}
		}},
		{"second leave returns false", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			x.leave(a, indexGameA)
			if x.leave(a, indexGameA) {
				t.Error("second leave returned true")
			}
		}},
		{"rejoin after leave is new", func(t *testing.T, x *index, a, b *session) {
			indexJoin(t, x, a, indexGameA)
			x.leave(a, indexGameA)
			if !x.join(a, indexGameA) {
				t.Error("rejoin returned false")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := indexSession("a", indexUser(1)), indexSession("b", indexUser(2))
			x := indexOf(t, a, b)
			tc.run(t, x, a, b)
			checkIndex(t, x)
		})
	}
}

// TestIndexTouch checks touch makes a session the newest, records the time
// and clears its warning, wherever it was in the idle list.
func TestIndexTouch(t *testing.T) {
	cases := []struct {
		name    string
		touched string
		want    []string
	}{
		{"oldest becomes newest", "a", []string{"b", "c", "a"}},
		{"middle becomes newest", "b", []string{"a", "c", "b"}},
		{"newest stays newest", "c", []string{"a", "b", "c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := indexOf(t, indexSession("a", indexUser(1)), indexSession("b", nil), indexSession("c", indexUser(2)))
			s := x.sessions[tc.touched]
			s.warned = true
			x.touch(s, indexAt(10))
			if got := indexIdleSIDs(x); !slices.Equal(got, tc.want) {
				t.Errorf("idle list = %v, want %v", got, tc.want)
			}
			if x.base.newest != s {
				t.Errorf("newest = %q, want %q", x.base.newest.sid, s.sid)
			}
			if !s.lastActivity.Equal(indexAt(10)) {
				t.Errorf("lastActivity = %v, want %v", s.lastActivity, indexAt(10))
			}
			if s.warned {
				t.Error("warned survived the touch")
			}
			checkIndex(t, x)
		})
	}
	t.Run("only session", func(t *testing.T) {
		s := indexSession("a", nil)
		x := indexOf(t, s)
		s.warned = true
		x.touch(s, indexAt(3))
		if x.base.oldest != s || x.base.newest != s || s.warned || !s.lastActivity.Equal(indexAt(3)) {
			t.Error("touch of the only session broke the list or kept the warning")
		}
		checkIndex(t, x)
	})
	t.Run("others keep their warning", func(t *testing.T) {
		a, b := indexSession("a", nil), indexSession("b", nil)
		x := indexOf(t, a, b)
		a.warned, b.warned = true, true
		x.touch(a, indexAt(5))
		if !b.warned {
			t.Error("touching a cleared b's warning")
		}
		checkIndex(t, x)
	})
}

// TestIndexAnonymous checks anonymous sessions never enter byUser, whatever
// happens to them, while they take part in games like any other.
func TestIndexAnonymous(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, x *index, anon1, anon2, user *session)
	}{
		{"after add", func(t *testing.T, x *index, anon1, anon2, user *session) {}},
		{"after join and touch", func(t *testing.T, x *index, anon1, anon2, user *session) {
			indexJoin(t, x, anon1, indexGameA)
			indexJoin(t, x, anon2, indexGameA)
			x.touch(anon1, indexAt(10))
			if got := indexMembers(x, indexGameA); !slices.Equal(got, []string{"anon1", "anon2"}) {
				t.Errorf("members = %v, want both anonymous sessions", got)
			}
		}},
		{"after leave", func(t *testing.T, x *index, anon1, anon2, user *session) {
			indexJoin(t, x, anon1, indexGameA)
			x.leave(anon1, indexGameA)
		}},
		{"after removing the user session", func(t *testing.T, x *index, anon1, anon2, user *session) {
			x.remove("user")
		}},
		{"after removing an anonymous session", func(t *testing.T, x *index, anon1, anon2, user *session) {
			indexJoin(t, x, anon2, indexGameA)
			if s, games := x.remove("anon2"); s != anon2 || len(games) != 1 {
				t.Errorf("remove = %v, %v, want anon2 and one game", s, games)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			anon1, anon2, user := indexSession("anon1", nil), indexSession("anon2", nil), indexSession("user", indexUser(9))
			x := indexOf(t, anon1, anon2, user)
			tc.run(t, x, anon1, anon2, user)
			for id, set := range x.byUser {
				for s := range set {
					if s.userID == nil {
						t.Errorf("anonymous session %q is in user %d's set", s.sid, id)
					}
				}
			}
			wantUsers := 0
			if _, live := x.sessions["user"]; live {
				wantUsers = 1
			}
			if len(x.byUser) != wantUsers {
				t.Errorf("byUser holds %d users, want %d (only user 9, while its session lives)", len(x.byUser), wantUsers)
			}
			checkIndex(t, x)
		})
	}
}
