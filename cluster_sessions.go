package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sessions in a cluster: each node keeps in Redis a record of every session
// it holds (its games, whether it is away, its remembered actions), so that
// any node can resume it and a reaper can adopt it when its node dies. A
// resume on another node moves the record: the claimant asks, the holder
// releases (ending its conn, if any, as taken over), and the record and the
// session's seats move to the claimant in one script, before anything later
// is published, so the claimant's mailbox carries every event after it.

// sessionRecord is what Redis keeps of a session.
type sessionRecord struct {
	SID     string      `json:"sid"`
	User    *int64      `json:"user"`
	Token   string      `json:"tok"` // hex SHA-256 of its resume token
	Games   []string    `json:"games"`
	Away    bool        `json:"away"`
	Since   int64       `json:"since,omitempty"` // away since (Unix ms)
	Reason  string      `json:"reason,omitempty"`
	Actions []actionRec `json:"actions,omitempty"`
}

// actionRec is one remembered action in a record (actions.go).
type actionRec struct {
	ID      string `json:"id"`
	Digest  []byte `json:"d"`
	At      int64  `json:"at"`
	Reply   []byte `json:"r,omitempty"`
	Offset  uint64 `json:"o,omitempty"`
	Results []int  `json:"x,omitempty"`
	Pending bool   `json:"p,omitempty"` // sent to Redis, its offset not yet heard back
}

// parseRecord reads a record written by encodeRecord.
func parseRecord(b []byte) (sessionRecord, error) {
	var r sessionRecord
	err := json.Unmarshal(b, &r)
	return r, err
}

// moveMembers is the part of the claim and move scripts that moves sid's
// seats in the games of its record (ARGV[5], JSON) to node ARGV[2], and its
// record from node ARGV[1]'s sessions to ARGV[2]'s.
const moveMembers = `
local rec = cjson.decode(ARGV[5])
for _, g in ipairs(rec.games or {}) do
  local mem, nodes = 'dugout:g:' .. g .. ':mem', 'dugout:g:' .. g .. ':nodes'
  local old = redis.call('HGET', mem, ARGV[3])
  if old then
    local was, rest = string.match(old, '^([^|]*)(.*)$')
    if was ~= ARGV[2] then
      if redis.call('HINCRBY', nodes, was, -1) <= 0 then redis.call('HDEL', nodes, was) end
      redis.call('HINCRBY', nodes, ARGV[2], 1)
      redis.call('HSET', mem, ARGV[3], ARGV[2] .. rest)
    end
  end
end
redis.call('HDEL', 'dugout:n:' .. ARGV[1] .. ':s', ARGV[3])
redis.call('HSET', 'dugout:n:' .. ARGV[2] .. ':s', ARGV[3], ARGV[5])
redis.call('SET', 'dugout:s:' .. ARGV[3], ARGV[2])
redis.call('PUBLISH', 'dugout:mbox:' .. ARGV[2], 'Cmoved\31' .. ARGV[3] .. '\31' .. ARGV[4] .. '\n' .. ARGV[5])
`

// claimScript finds the session a token names for node ARGV[1]'s conn
// (fresh session ARGV[2]). KEYS: the token's key. A live holder is asked to
// release it ({"asked"}); a dead one's record is taken at once ({"moved"});
// {"unknown"} when no node holds it.
var claimScript = redis.NewScript(`
local sid = redis.call('GET', KEYS[1])
if not sid then return {'unknown'} end
local owner = redis.call('GET', 'dugout:s:' .. sid)
if not owner then return {'unknown'} end
local held = redis.call('HGET', 'dugout:n:' .. owner .. ':s', sid)
if held then
  -- the user is checked before anything moves: a resume refused as
  -- user_mismatch leaves the session where it is, its conn untouched
  local u = cjson.decode(held).user
  if u == cjson.null then u = '' else u = string.format('%d', u) end
  if u ~= ARGV[3] then return {'mismatch'} end
end
if owner ~= ARGV[1] and redis.call('EXISTS', 'dugout:node:' .. owner) == 1 then
  local heard = redis.call('PUBLISH', 'dugout:mbox:' .. owner, 'Crelease\31' .. sid .. '\31' .. ARGV[1] .. '\31' .. ARGV[2] .. '\n')
  if heard > 0 then return {'asked'} end
  -- Nobody reads the holder's mailbox: its process is gone (a killed
  -- node's connections close at once, long before its key expires). The
  -- record is taken now, and the incarnation fenced, so that if it was only
  -- its connection to Redis, it closes its conns rather than keep this one.
  local inc = redis.call('HGET', 'dugout:inc', owner)
  if inc then redis.call('SET', 'dugout:dead:' .. owner, inc, 'PX', ARGV[4]) end
end
local rec = redis.call('HGET', 'dugout:n:' .. owner .. ':s', sid)
if not rec then return {'unknown'} end
ARGV[5] = rec
ARGV[3] = sid
ARGV[4] = ARGV[2]
ARGV[2] = ARGV[1]
ARGV[1] = owner
` + moveMembers + `
return {'moved'}
`)

// moveScript hands a released session to the node that claimed it. ARGV:
// this node, the claimant, the sid, the claimant's fresh session, the record.
var moveScript = redis.NewScript(moveMembers + `return 1`)

// claim asks Redis for the session op's token names. Whatever the answer,
// the hub hears it through this node's mailbox (moved) or the holder's
// (asked, then moved or gone); only an unknown token is answered here.
func (b *bridge) claim(ctx context.Context, op claimOp) {
	res, err := claimScript.Run(ctx, b.pub, []string{tokenKey(op.token)}, b.cfg.node, op.ref, userField(op.user),
		(100 * b.cfg.ttl).Milliseconds()).StringSlice()
	if err != nil {
		b.failed(err, "a claim")
	}
	switch {
	case err != nil || len(res) == 0 || res[0] == "unknown":
		b.toHub(claimedMsg{ref: op.ref})
	case res[0] == "mismatch":
		b.toHub(claimedMsg{ref: op.ref, mismatch: true})
	}
}

// move hands a released session to its claimant, or tells the claimant it
// is gone (op.rec nil: the session ended before it could be released).
func (b *bridge) move(ctx context.Context, op moveOp) {
	if op.stored {
		if rec, err := b.pub.HGet(ctx, nodeSessions(b.cfg.node), op.sid).Bytes(); err == nil {
			op.rec = rec
		}
	}
	if op.rec == nil {
		b.pub.Publish(ctx, mailbox(op.to), "Cgone\x1f"+op.sid+"\x1f"+op.ref+"\n")
		return
	}
	if err := moveScript.Run(ctx, b.pub, nil, b.cfg.node, op.to, op.sid, op.ref, op.rec).Err(); err != nil {
		b.failed(err, "a session move")
		b.pub.Publish(ctx, mailbox(op.to), "Cgone\x1f"+op.sid+"\x1f"+op.ref+"\n")
	}
}

// control handles a control message from the mailbox: a release asked of
// this node, a session moved to it, or a claim that found it gone.
func (b *bridge) control(raw string) {
	line, body, _ := strings.Cut(raw, "\n")
	f := strings.Split(line, "\x1f")
	switch {
	case f[0] == "release" && len(f) == 4:
		if !b.toHub(releaseMsg{sid: f[1], to: f[2], ref: f[3]}) {
			// The hub has stopped (a shutdown hands over): the record it
			// wrote last is the session.
			b.push(moveOp{sid: f[1], to: f[2], ref: f[3], stored: true})
		}
	case f[0] == "recheck" && len(f) == 2:
		b.recheck(f[1])
	case f[0] == "gone" && len(f) == 3:
		b.toHub(claimedMsg{ref: f[2]})
	case f[0] == "moved" && len(f) == 3:
		rec, err := parseRecord([]byte(body))
		if err != nil {
			b.log.Error().Err(err).Msg("unreadable session record")
			b.toHub(claimedMsg{ref: f[2]})
			return
		}
		b.toHub(claimedMsg{ref: f[2], rec: &rec, games: b.fetch(rec.Games)})
	}
}

// recheck repairs, from the stream, what this node has not had of game: a
// resync registered its seats in a game other nodes may have sequenced
// events in meanwhile. Runs on the mailbox reader.
func (b *bridge) recheck(game string) {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	v, err := b.aux.HMGet(ctx, gameKeys(game)[0], "epoch", "seq").Result()
	if err != nil || len(v) < 2 || v[0] == nil || v[1] == nil {
		return
	}
	epoch, _ := v[0].(string)
	seq, _ := strconv.ParseUint(fmt.Sprint(v[1]), 10, 64)
	b.feedMu.Lock()
	pos := b.feed[game]
	if pos == nil {
		pos = &feedPos{epoch: epoch, next: 1}
		b.feed[game] = pos
	} else if pos.epoch != epoch {
		pos.epoch, pos.next = epoch, 1
	}
	b.feedMu.Unlock()
	if seq >= pos.next {
		b.repair(game, pos, seq+1)
		pos.next = seq + 1
	}
}

// fetch reads each game as Redis holds it, and follows it from there on:
// the mailbox's later events start after what was read. Runs on the
// mailbox reader.
func (b *bridge) fetch(games []string) map[string]*fetchedGame {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	out := make(map[string]*fetchedGame, len(games))
	for _, g := range games {
		keys := gameKeys(g)
		p := b.aux.Pipeline()
		meta := p.HMGet(ctx, keys[0], "epoch", "seq")
		log := p.XRange(ctx, keys[1], "-", "+")
		mem := p.HGetAll(ctx, keys[2])
		set := p.Get(ctx, settingsKey(g))
		if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
			continue
		}
		v := meta.Val()
		if len(v) < 2 || v[0] == nil {
			continue // the game ended meanwhile
		}
		fg := &fetchedGame{epoch: v[0].(string)}
		fg.last, _ = strconv.ParseUint(v[1].(string), 10, 64)
		for _, e := range log.Val() {
			f, _ := e.Values["f"].(string)
			fg.frames = append(fg.frames, []byte(f))
			if a, ok := e.Values["a"].(string); ok {
				if fg.actions == nil {
					fg.actions = make(map[string]uint64)
				}
				fg.actions[a], _ = strconv.ParseUint(strings.TrimSuffix(e.ID, "-1"), 10, 64)
			}
		}
		if n := len(log.Val()); n > 0 {
			// The stream ends at last unless its last event was too large to keep.
			lastID, _ := strconv.ParseUint(strings.TrimSuffix(log.Val()[n-1].ID, "-1"), 10, 64)
			if lastID != fg.last {
				fg.frames = nil
			}
		}
		for sid, val := range mem.Val() {
			fg.members = append(fg.members, parseMember(sid, val))
		}
		fg.settings = set.Val()
		// The mailbox's position is left alone: what it still brings of the
		// events read here reaches the hub too (other members get them, and
		// this node's own tickets complete), and the mirror keeps each once.
		out[g] = fg
	}
	return out
}

// resync registers again what this node holds of one game, after Redis
// came back empty or after an outage: its seats, with this node as their
// holder, in a game that gets a new epoch if Redis lost it. The game's next
// offset is made to follow the last this node delivered (ARGV[4]): a client
// drops an event whose offset it has seen, so offsets never go back, even
// across a new epoch.
var resyncScript = redis.NewScript(`
local meta, mem, nodes = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', meta, 'epoch') == false then
  redis.call('DEL', KEYS[4], mem, nodes)
  redis.call('HSET', meta, 'epoch', ARGV[2], 'seq', 0, 'bytes', 0)
end
if tonumber(redis.call('HGET', meta, 'seq')) < tonumber(ARGV[4]) then
  redis.call('HSET', meta, 'seq', ARGV[4])
end
for i = 5, #ARGV, 2 do
  if redis.call('HEXISTS', mem, ARGV[i]) == 0 then
    redis.call('HINCRBY', nodes, ARGV[1], 1)
    redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
  end
  redis.call('HSET', mem, ARGV[i], ARGV[i + 1])
end
-- this node's mailbox looks at the stream now: what other nodes sequenced
-- in the game since Redis lost it reaches its members without waiting for
-- the game's next event
redis.call('PUBLISH', 'dugout:mbox:' .. ARGV[1], 'Crecheck\31' .. ARGV[3] .. '\n')
return 1
`)

// resync runs resyncScript for one game.
func (b *bridge) resync(ctx context.Context, op resyncOp) {
	keys := gameKeys(op.game)
	args := []any{b.cfg.node, newEpoch(), op.game, op.last}
	for _, m := range op.seats {
		args = append(args, m.sid, b.cfg.node+"|"+m.status+"|"+userField(m.user))
	}
	if err := resyncScript.Run(ctx, b.pub, []string{keys[0], keys[2], keys[3], keys[1], seatsKey}, args...).Err(); err != nil {
		b.failed(err, "a resync")
	}
}
