package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The game backend's API in a cluster (contract v2 §8, §12). The backend
// calls any node (no sticky sessions), so a game's settings live in Redis
// beside its members: a PUT writes them there and tells the members, who may
// sit on any node, with one game_updated event; a node that starts holding a
// game reads them with its join. A GET or a kick on a node that holds no
// seat of the game reads the members from Redis.

// settingsKey holds a game's settings, as the API shows them.
func settingsKey(game string) string { return keyPrefix + "set:" + game }

// settingsTTL is how long Redis keeps a game's settings after their last
// change: longer than any idle timeout (24 h), so a seated game never loses
// them, and seatless ones do not outlive the contract's hour by more than a day.
const settingsRedisTTL = 25 * time.Hour

// settingsOp writes a game's settings to Redis.
type settingsOp struct {
	game string
	view []byte // gameView, JSON
}

// lookupOp reads a game this node holds no seat of from Redis, for a GET
// (answered straight to reply) or a kick (handed back to the hub, which
// ends the seats it names).
type lookupOp struct {
	game   uuid.UUID
	query  chan gameReply // a GET: the answer
	kick   *kickMsg       // a kick: what it names
	update *gameUpdateMsg // a PUT: what it changes, applied to what Redis holds
}

// updateLookupMsg gives the hub the settings Redis holds for a PUT's game.
type updateLookupMsg struct {
	update gameUpdateMsg
	view   *gameView // nil: Redis holds none
}

// kickLookupMsg gives the hub the members Redis lists for a kick's game.
type kickLookupMsg struct {
	kick    kickMsg
	members []remoteMember
}

// lookup runs a lookupOp. Runs on the publisher, after every operation
// queued before it.
func (b *bridge) lookup(ctx context.Context, op lookupOp) {
	g := op.game.String()
	p := b.aux.Pipeline()
	mem := p.HGetAll(ctx, gameKeys(g)[2])
	set := p.Get(ctx, settingsKey(g))
	_, _ = p.Exec(ctx)
	var members []remoteMember
	for sid, v := range mem.Val() {
		members = append(members, parseMember(sid, v))
	}
	slices.SortFunc(members, func(a, b remoteMember) int { return strings.Compare(a.sid, b.sid) })
	if op.kick != nil {
		b.toHub(kickLookupMsg{kick: *op.kick, members: members})
		return
	}
	if op.update != nil {
		m := updateLookupMsg{update: *op.update}
		if raw := set.Val(); raw != "" {
			var v gameView
			if json.Unmarshal([]byte(raw), &v) == nil {
				m.view = &v
			}
		}
		b.toHub(m)
		return
	}
	var rep gameReply
	if raw := set.Val(); raw != "" {
		_ = json.Unmarshal([]byte(raw), &rep.view)
		rep.found = true
	}
	if rep.view.SeatPolicy == "" {
		rep.view.SeatPolicy = "multi_seat"
	}
	for _, m := range members {
		rep.members = append(rep.members, apiMember{SID: m.sid, UserID: m.user, Status: m.status})
	}
	rep.sessions = len(members)
	rep.found = rep.found || len(members) > 0
	op.query <- rep
}

// storeSettings writes a settingsOp.
func (b *bridge) storeSettings(ctx context.Context, op settingsOp) {
	if err := b.pub.Set(ctx, settingsKey(op.game), op.view, settingsRedisTTL).Err(); err != nil {
		b.lost(err)
	}
}

// applySettings makes view game's settings here, as another node or Redis
// says they are, and gives the members here their new idle timeouts.
// Runs on the hub goroutine.
func (h *hub) applySettings(game uuid.UUID, view gameView) {
	p := settingsPatch{}
	if view.State != nil {
		p.state = view.State
	} else {
		empty := ""
		p.state = &empty
	}
	t := time.Duration(0)
	if view.IdleTimeoutMS != nil {
		t = time.Duration(*view.IdleTimeoutMS) * time.Millisecond
	}
	p.timeout = &t
	single := view.SeatPolicy == "single_seat"
	p.single = &single
	if _, ok := h.idx.settings.put(game, p, h.idx.seatsIn(game) > 0, time.Now()); !ok {
		return
	}
	for s := range h.idx.members(game) {
		h.retimeSession(s, false)
	}
}

// remoteSettings applies a game_updated event another node emitted.
// Runs on the hub goroutine.
func (h *hub) remoteSettings(game uuid.UUID, frame []byte) {
	var f struct {
		Data gameView `json:"data"`
	}
	if json.Unmarshal(frame, &f) == nil {
		h.applySettings(game, f.Data)
	}
}

// clusterSettingsPut stores the settings a PUT gave game in Redis.
// Runs on the hub goroutine.
func (h *hub) clusterSettingsPut(game uuid.UUID, v gameView) {
	b, _ := json.Marshal(v)
	if !h.cl.b.push(settingsOp{game: game.String(), view: b}) {
		h.cfg.metrics.bridgeFull()
	}
}

// clusterQuery answers a GET about a game this node holds no seat of, from
// Redis; false when the hub answers it itself. Runs on the hub goroutine.
func (h *hub) clusterQuery(m gameQueryMsg) bool {
	if !h.clustered() || h.idx.seatsIn(m.game) > 0 {
		return false
	}
	return h.cl.b.push(lookupOp{game: m.game, query: m.reply})
}

// clusterKick hands a kick of a game this node holds no seat of to Redis'
// member list; false when the hub decides it alone. Runs on the hub goroutine.
func (h *hub) clusterKick(m kickMsg) bool {
	if !h.clustered() || h.idx.seatsIn(m.game) > 0 {
		return false
	}
	return h.cl.b.push(lookupOp{game: m.game, kick: &m})
}

// clusterUpdate hands a PUT of a game this node holds no seat of to Redis
// first, so that the patch applies to the settings another node may have
// set; false when the hub applies it at once (its settings are current: it
// read them with its first join, and heard every change since).
// Runs on the hub goroutine.
func (h *hub) clusterUpdate(m gameUpdateMsg) bool {
	if !h.clustered() || m.fetched || h.idx.seatsIn(m.game) > 0 {
		return false
	}
	return h.cl.b.push(lookupOp{game: m.game, update: &m})
}

// updateLookedUp applies what Redis holds of a PUT's game, then the PUT.
// Runs on the hub goroutine.
func (h *hub) updateLookedUp(m updateLookupMsg) {
	if m.view != nil {
		h.applySettings(m.update.game, *m.view)
	}
	m.update.fetched = true
	h.updateGame(m.update)
}

// kickLookedUp ends the seats a kick names among the members Redis listed.
// Runs on the hub goroutine.
func (h *hub) kickLookedUp(m kickLookupMsg) {
	removed := 0
	for _, rm := range m.members {
		if m.kick.sid != "" && rm.sid == m.kick.sid || m.kick.userID != nil && rm.user != nil && *rm.user == *m.kick.userID {
			h.endRemoteSeat(m.kick.game, rm, presenceKicked, "")
			removed++
		}
	}
	m.kick.reply <- removed
}

// apiMembers adds the other nodes' members of game to a GET's list; their
// idle time is their node's to know, and shows as 0. Runs on the hub goroutine.
func (h *hub) apiMembers(game uuid.UUID, list []apiMember) []apiMember {
	if h.cl == nil {
		return list
	}
	for _, rm := range h.cl.remote[game] {
		list = append(list, apiMember{SID: rm.sid, UserID: rm.user, Status: rm.status})
	}
	slices.SortFunc(list, func(a, b apiMember) int { return strings.Compare(a.SID, b.SID) })
	return list
}
