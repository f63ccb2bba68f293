package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Cluster mode (contract v2 §12): with REDIS_URL set, Redis is every game's
// sequencer, history and member list, and each node's mailbox. This file
// holds the keys and the scripts; bridge.go the goroutines that run them, and
// hubcluster.go what the hub does with what they bring.
//
// Every change to a game is one script run, atomic in Redis: it checks that
// the node is still alive (a node declared dead sequences nothing more, so it
// can leave no ghost), gives the event the game's next offset, appends it to
// the game's stream within the history's bounds, updates the member list, and
// publishes the event to the mailbox of every node that holds a member of the
// game. A node subscribes to its own mailbox once, at start, so no per-game
// subscription can race a publish: a node that seats its first member of a
// game is added to the game's nodes by the very script that sequences the
// join, before anything later is published.

// keyPrefix starts every key dugout writes, so one Redis can be shared.
const keyPrefix = "dugout:"

// Keys of one game: meta (epoch, seq, bytes), its stream of events, its
// members (sid -> node|status|user) and its nodes (node -> members held).
func gameKeys(game string) []string {
	base := keyPrefix + "g:" + game + ":"
	return []string{base + "meta", base + "log", base + "mem", base + "nodes"}
}

func nodeKey(node string) string      { return keyPrefix + "node:" + node }     // alive while set; value: its counts
func deadKey(node string) string      { return keyPrefix + "dead:" + node }     // the incarnation a reaper fenced
func mailbox(node string) string      { return keyPrefix + "mbox:" + node }     // the node's one channel
func nodeSessions(node string) string { return keyPrefix + "n:" + node + ":s" } // sid -> session record
func nodeUsers(node string) string    { return keyPrefix + "n:" + node + ":u" } // the users it holds, a set
const nodesKey = keyPrefix + "nodes"  // node -> last heartbeat (ms), a sorted set
const seatsKey = keyPrefix + "seats"  // game id -> seats, for health
const incKey = keyPrefix + "inc"      // node -> its running incarnation

func tokenKey(hash string) string { return keyPrefix + "t:" + hash } // resume token hash -> sid
func ownerKey(sid string) string  { return keyPrefix + "s:" + sid }  // sid -> the node that holds it

// emitScript sequences one game event. KEYS: gameKeys, then the seats hash.
// ARGV: node, kind (event, joined, away, back, left), sid, user, frame (the
// event without its offset), a fresh epoch in case the game is new, history
// frames and bytes, the header the mailboxes carry, whether the origin wants
// the member list, the node key prefix, the mailbox prefix, the game id. It returns {epoch, offset}, or {"fenced"} for a
// node declared dead, or {"nogame"} for an event of a game Redis does not hold.
var emitScript = redis.NewScript(`
local node, kind, sid, user, frame = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', ARGV[11] .. node) == ARGV[15] then return {'fenced'} end
local meta, log, mem, nodes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  -- only a join makes a game, and only a first one: a node that delivered
  -- events of it already (ARGV[16]) finds Redis lost it, and registers its
  -- seats again before it joins another
  if kind ~= 'joined' or tonumber(ARGV[16]) > 0 then return {'nogame'} end
  epoch = ARGV[6]
  redis.call('DEL', log, mem, nodes)
  -- offsets go on after the last the joiner's node delivered: a client
  -- drops an offset it has seen, even across a new epoch
  redis.call('HSET', meta, 'epoch', epoch, 'seq', ARGV[16], 'bytes', 0)
end
local old = false
if kind ~= 'event' then old = redis.call('HGET', mem, sid) end
if kind ~= 'event' and kind ~= 'joined' and not old then
  return {'gone'} -- another node ended the seat first: nothing to tell
end
if kind == 'joined' and not old and redis.call('HLEN', mem) >= tonumber(ARGV[17]) then
  return {'full'}
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local framed = frame
local cut = string.find(frame, '"data":{', 1, true)
if cut then
  local at = cut + 8
  local sep = ','
  if string.sub(frame, at, at) == '}' then sep = '' end
  framed = string.sub(frame, 1, at - 1) .. '"offset":' .. seq .. sep .. string.sub(frame, at)
end
local targets = {}
targets[node] = true
local function drop(n)
  if redis.call('HINCRBY', nodes, n, -1) <= 0 then redis.call('HDEL', nodes, n) end
end
if kind ~= 'event' then
  if old then
    local was = string.match(old, '^([^|]*)')
    targets[was] = true
    if kind == 'left' or was ~= node then drop(was) end
    if kind ~= 'left' and was ~= node then redis.call('HINCRBY', nodes, node, 1) end
  elseif kind ~= 'left' then
    redis.call('HINCRBY', nodes, node, 1)
    redis.call('HINCRBY', KEYS[5], ARGV[13], 1)
  end
  if kind == 'left' then
    if old then
      redis.call('HDEL', mem, sid)
      if redis.call('HINCRBY', KEYS[5], ARGV[13], -1) <= 0 then redis.call('HDEL', KEYS[5], ARGV[13]) end
    end
  else
    local status = 'connected'
    if kind == 'away' then status = 'away' end
    redis.call('HSET', mem, sid, node .. '|' .. status .. '|' .. user)
  end
end
local bytes = tonumber(redis.call('HGET', meta, 'bytes'))
local maxF, maxB = tonumber(ARGV[7]), tonumber(ARGV[8])
local n = redis.call('XLEN', log)
while n > 0 and (n >= maxF or bytes + #framed > maxB) do
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  redis.call('XDEL', log, first[1][1])
  bytes = bytes - #first[1][2][2]
  n = n - 1
end
if #framed <= maxB then
  -- the mailbox header rides along, so a repair rebuilds the whole message
  if ARGV[14] ~= '' then
    redis.call('XADD', log, seq .. '-1', 'f', framed, 'h', ARGV[9], 'a', ARGV[14])
  else
    redis.call('XADD', log, seq .. '-1', 'f', framed, 'h', ARGV[9])
  end
  bytes = bytes + #framed
end
redis.call('HSET', meta, 'bytes', bytes)
local list = redis.call('HKEYS', nodes)
for _, t in ipairs(list) do targets[t] = true end
local head = 'E' .. epoch .. '\31' .. seq .. '\31' .. ARGV[9] .. '\n'
local snapshot = ''
if ARGV[10] == '1' then
  local all = redis.call('HGETALL', mem)
  local parts = {}
  local st = redis.call('GET', 'dugout:set:' .. ARGV[13])
  if st then parts[1] = '~settings=' .. st end
  for i = 1, #all, 2 do parts[#parts + 1] = all[i] .. '=' .. all[i + 1] end
  snapshot = table.concat(parts, '\30')
end
for t, _ in pairs(targets) do
  local body = ''
  if t == node then body = snapshot end
  redis.call('PUBLISH', ARGV[12] .. t, head .. body .. '\n' .. framed)
end
if redis.call('HLEN', mem) == 0 then
  redis.call('DEL', meta, log, mem, nodes)
end
return {epoch, tostring(seq)}
`)

// heartbeatScript keeps a node alive. KEYS: its node key, the nodes set, its
// tombstone, the incarnations hash. ARGV: the incarnation, counts (the key's value), now (ms), the
// TTL (ms). It returns "fenced" when a reaper has declared this incarnation
// dead, "new" when Redis did not know the node (a first start, or Redis came
// back empty: the node must register what it holds again), and "ok".
var heartbeatScript = redis.NewScript(`
if redis.call('GET', KEYS[3]) == ARGV[1] then return 'fenced' end
local known = redis.call('ZSCORE', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[4], ARGV[5], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
if known then return 'ok' end
return 'new'
`)

// reapScript claims a dead node's sessions for the reaper. KEYS: the dead
// node's key, the nodes set, its tombstone, its sessions, the reaper's
// sessions, the incarnations hash. ARGV: the dead node's id, the reaper's
// id, the tombstone's TTL (ms). Only the first reaper to run it for a node gets its sessions (ZREM
// succeeds once); the rest get an empty list. The tombstone names the
// incarnation that died, so that incarnation fences itself if it wakes.
var reapScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return {} end
redis.call('SET', KEYS[3], redis.call('HGET', KEYS[6], ARGV[1]) or '', 'PX', ARGV[3])
local all = redis.call('HGETALL', KEYS[4])
redis.call('DEL', KEYS[4])
local taken = {}
for i = 1, #all, 2 do
  local sid = all[i]
  -- only what the dead node still owned: a record it wrote of a session
  -- that had moved on is stale
  if redis.call('GET', 'dugout:s:' .. sid) == ARGV[1] then
  taken[#taken + 1] = sid
  taken[#taken + 1] = all[i + 1]
  redis.call('HSET', KEYS[5], sid, all[i + 1])
  redis.call('SET', 'dugout:s:' .. sid, ARGV[2])
  -- its seats are the reaper's now: the games' events go to the reaper, and
  -- a kick from any node reaches the seat there
  local ok, rec = pcall(cjson.decode, all[i + 1])
  if ok then
    for _, g in ipairs(rec.games or {}) do
      local mem, nodes = 'dugout:g:' .. g .. ':mem', 'dugout:g:' .. g .. ':nodes'
      local old = redis.call('HGET', mem, sid)
      if old then
        local was, rest = string.match(old, '^([^|]*)(.*)$')
        if was ~= ARGV[2] then
          if redis.call('HINCRBY', nodes, was, -1) <= 0 then redis.call('HDEL', nodes, was) end
          redis.call('HINCRBY', nodes, ARGV[2], 1)
          redis.call('HSET', mem, sid, ARGV[2] .. rest)
        end
      end
    end
  end
  end
end
return taken
`)

// nodeIDPattern is what NODE_ID may be (contract v2 §1).
var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// validateCluster checks REDIS_URL, NODE_ID and NODE_TTL. Its errors never
// repeat the URL: it may carry a password.
func (c *config) validateCluster() error {
	if c.NodeTTL <= 0 {
		return errors.New("NODE_TTL must be greater than zero")
	}
	if c.NodeID != "" && !nodeIDPattern.MatchString(c.NodeID) {
		return fmt.Errorf("NODE_ID must be 1 to 64 of A-Z a-z 0-9 _ . - (it has %d characters)", len(c.NodeID))
	}
	if c.RedisURL == "" {
		return nil
	}
	opts, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return errors.New("REDIS_URL must be a redis:// or rediss:// URL (redis://[user:password@]host:port/db)")
	}
	c.redisOpts = opts
	return nil
}

// header is what a mailbox message says besides its frame: which node sent
// it, the origin's own ticket (what its hub waits to complete), the kind of
// event and the session it is about, and for a seat ended by another node
// the reason and the superseding sid.
type header struct {
	origin string
	ticket uint64
	kind   string
	game   string
	sid    string
	user   string
	reason string
	by     string
}

// encodeHeader writes h as one line of fields the scripts never read.
func (h header) encode() string {
	return strings.Join([]string{h.origin, strconv.FormatUint(h.ticket, 10), h.kind, h.game, h.sid, h.user, h.reason, h.by}, "\x1f")
}

// mailMsg is one parsed mailbox message: an event, or a control message.
type mailMsg struct {
	epoch    string
	offset   uint64
	head     header
	members  []remoteMember // the origin's snapshot, after a join it asked it for
	settings string         // with the snapshot: the game's settings in Redis (JSON), "" for none
	frame    []byte
}

// remoteMember is a member as Redis lists it.
type remoteMember struct {
	sid    string
	node   string
	status string
	user   *int64
}

// parseMail reads a mailbox message: "E<epoch>\x1f<offset>\x1f<header>\n<members>\n<frame>".
func parseMail(raw string) (mailMsg, error) {
	line, rest, ok := strings.Cut(raw, "\n")
	snap, frame, ok2 := strings.Cut(rest, "\n")
	if !ok || !ok2 || !strings.HasPrefix(line, "E") {
		return mailMsg{}, errors.New("mailbox message without its three parts")
	}
	f := strings.Split(line[1:], "\x1f")
	if len(f) != 10 {
		return mailMsg{}, fmt.Errorf("mailbox header with %d fields", len(f))
	}
	off, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return mailMsg{}, fmt.Errorf("mailbox offset %q: %w", f[1], err)
	}
	head, _ := parseHeader(strings.Join(f[2:], "\x1f"))
	m := mailMsg{epoch: f[0], offset: off, frame: []byte(frame), head: head}
	if snap != "" {
		for _, p := range strings.Split(snap, "\x1e") {
			sid, v, _ := strings.Cut(p, "=")
			if sid == "~settings" {
				m.settings = v
				continue
			}
			m.members = append(m.members, parseMember(sid, v))
		}
	}
	return m, nil
}

// parseHeader reads what header.encode wrote.
func parseHeader(line string) (header, bool) {
	f := strings.Split(line, "\x1f")
	if len(f) != 8 {
		return header{}, false
	}
	ticket, _ := strconv.ParseUint(f[1], 10, 64)
	return header{origin: f[0], ticket: ticket, kind: f[2], game: f[3], sid: f[4], user: f[5], reason: f[6], by: f[7]}, true
}

// parseMember reads a member value, node|status|user.
func parseMember(sid, v string) remoteMember {
	parts := strings.SplitN(v, "|", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	rm := remoteMember{sid: sid, node: parts[0], status: parts[1]}
	if id, err := strconv.ParseInt(parts[2], 10, 64); err == nil {
		rm.user = &id
	}
	return rm
}

// userField is how a user id travels in the scripts' arguments: empty for anonymous.
func userField(u *int64) string {
	if u == nil {
		return ""
	}
	return strconv.FormatInt(*u, 10)
}
