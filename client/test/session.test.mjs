// The Session against a scripted fake WebSocket: the wire flows of PROTOCOL.md, without a server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, memoryStorage } from '../dugout.js';
import { G, tick, fakeServer } from './fakes.mjs';

const sessionFrame = (sid, token = 'T-' + sid) => ({
  type: 'session',
  data: { sid, user_id: null, protocol: 2, resume_token: token, resume_window_ms: 10000 },
});
const member = (sid, status = 'connected') => ({ sid, user_id: null, status });

async function joinedSession(opts = {}) {
  const srv = fakeServer();
  const storage = opts.storage ?? memoryStorage();
  const s = connect('ws://x/ws', { storage, WebSocket: srv.FakeWS, backoffBase: 10, backoffCap: 40, ...opts });
  await tick();
  const ws = srv.sockets[0];
  ws.push(sessionFrame('A'));
  assert.equal(s.state, 'open');
  const jp = s.join(G);
  await tick();
  const j = ws.last('join_game');
  ws.push({ type: 'game_joined', id: j.id, data: { game_id: G, epoch: 'E1', offset: 1, members: [member('A')] } });
  const game = await jp;
  const events = [];
  for (const t of ['presence', 'dice_rolled', 'defensive_decision', 'offensive_decision', 'resync']) {
    game.on(t, (d) => events.push({ t, ...d }));
  }
  await tick();
  return { srv, s, ws, game, events, storage };
}

test('fresh session, join, presence, a roll seen once with its reply', async () => {
  const { s, ws, game, events } = await joinedSession();
  assert.equal(s.sid, 'A');
  assert.equal(game.id, G);
  ws.push({ type: 'presence', data: { offset: 2, game_id: G, sid: 'B', user_id: 7, status: 'joined' } });
  assert.deepEqual(game.members.get('B'), { sid: 'B', userId: 7, status: 'connected' });
  assert.equal(game.users.get(7)[0].sid, 'B');
  const rp = game.roll([6, 20]);
  const r = ws.last('roll_dice');
  assert.deepEqual(r.data, { game_id: G, dice: [6, 20] });
  ws.push({ type: 'dice_rolled', id: r.id, data: { offset: 3, game_id: G, sid: 'A', dice: [6, 20], results: [1, 2] } });
  const reply = await rp;
  assert.deepEqual(reply.data.results, [1, 2]);
  assert.deepEqual(events.map((e) => [e.t, e.offset]), [['presence', 2], ['dice_rolled', 3]]);
  s.close();
  assert.equal(ws.closedWith, 1000);
  assert.equal(s.state, 'ended');
});

test('drop: resume is the first frame, missed events once, pending roll re-sent with the same id, dup resolves once', async () => {
  const { srv, s, ws, game, events, storage } = await joinedSession();
  ws.push({ type: 'presence', data: { offset: 2, game_id: G, sid: 'B', status: 'joined' } });
  const rp = game.roll();
  const rollId = ws.last('roll_dice').id;
  const states = [];
  s.on('state', (e) => states.push(e));
  ws.drop(1006);
  assert.equal(s.state, 'reconnecting');
  assert.ok(states[0].retryInMs >= 0 && states[0].retryInMs < 10);
  assert.deepEqual(JSON.parse(storage.getItem('dugout:ws://x/ws')).games[G], { epoch: 'E1', offset: 2 });
  await tick(30);
  assert.equal(srv.sockets.length, 2);
  const ws2 = srv.sockets[1];
  ws2.push(sessionFrame('A2'));
  assert.equal(ws2.sent.length, 1, 'nothing but the resume before resumed');
  const res = ws2.sent[0];
  assert.equal(res.type, 'resume');
  assert.deepEqual(res.data, { resume_token: 'T-A', games: { [G]: { epoch: 'E1', offset: 2 } } });
  ws2.push({ type: 'resumed', id: res.id, data: { sid: 'A', games: [{ game_id: G, epoch: 'E1', offset: 6, recovered: true, members: [member('A'), member('B')] }] } });
  assert.equal(s.sid, 'A');
  assert.equal(s.state, 'open');
  const retry = ws2.last('roll_dice');
  assert.equal(retry.id, rollId, 'the same id');
  // Catch-up (a replayed offset 2 is skipped), then the dup reply of the roll that did run (offset 4).
  ws2.push({ type: 'presence', data: { offset: 2, game_id: G, sid: 'B', status: 'joined' } });
  ws2.push({ type: 'presence', data: { offset: 3, game_id: G, sid: 'A', status: 'away', reason: 'disconnected' } });
  ws2.push({ type: 'dice_rolled', data: { offset: 4, game_id: G, sid: 'A', dice: [6, 6, 6, 20], results: [1, 2, 3, 4] } });
  ws2.push({ type: 'dice_rolled', data: { offset: 5, game_id: G, sid: 'B', dice: [6], results: [6] } });
  ws2.push({ dup: true, type: 'dice_rolled', id: rollId, data: { offset: 4, game_id: G, sid: 'A', dice: [6, 6, 6, 20], results: [1, 2, 3, 4] } });
  ws2.push({ dup: true, type: 'dice_rolled', id: rollId, data: { offset: 4, game_id: G, sid: 'A', dice: [6, 6, 6, 20], results: [1, 2, 3, 4] } });
  const reply = await rp;
  assert.equal(reply.dup, true);
  assert.deepEqual(reply.data.results, [1, 2, 3, 4]);
  assert.deepEqual(events.map((e) => e.offset), [2, 3, 4, 5], 'each event once, in order');
  assert.equal(game.members.get('A').status, 'connected', 'the resumed snapshot wins over the replayed away');
  // live event after our unsent back (6)
  ws2.push({ type: 'presence', data: { offset: 7, game_id: G, sid: 'B', status: 'left', reason: 'left' } });
  assert.equal(game.members.has('B'), false);
  assert.equal(JSON.parse(storage.getItem('dugout:ws://x/ws')).games[G].offset, 7);
  s.close();
});

test('resumed with recovered:false emits resync and takes the offset', async () => {
  const { srv, s, ws, events } = await joinedSession();
  ws.drop(1006);
  await tick(30);
  const ws2 = srv.sockets[1];
  ws2.push(sessionFrame('A2'));
  ws2.push({ type: 'resumed', id: ws2.sent[0].id, data: { sid: 'A', games: [{ game_id: G, epoch: 'E1', offset: 500, recovered: false, members: [member('A')] }] } });
  ws2.push({ type: 'presence', data: { offset: 500, game_id: G, sid: 'B', status: 'joined' } });
  ws2.push({ type: 'presence', data: { offset: 501, game_id: G, sid: 'C', status: 'joined' } });
  assert.deepEqual(events.map((e) => [e.t, e.offset]), [['resync', 500], ['presence', 501]]);
  s.close();
});

test('resume_failed unknown: fresh session, re-joins its games, resync', async () => {
  const { srv, s, ws, game, events } = await joinedSession();
  ws.drop(1006);
  await tick(30);
  const ws2 = srv.sockets[1];
  ws2.push(sessionFrame('N', 'T-N'));
  ws2.push({ type: 'error', id: ws2.sent[0].id, data: { code: 'resume_failed', reason: 'unknown' } });
  assert.equal(s.sid, 'N');
  const j = ws2.last('join_game');
  assert.equal(j.data.game_id, G);
  ws2.push({ type: 'game_joined', id: j.id, data: { game_id: G, epoch: 'E9', offset: 1, members: [member('N')] } });
  await tick();
  assert.equal(s.games.get(G), game, 'the same Game object');
  assert.deepEqual(events.map((e) => [e.t, e.reason, e.epoch, e.offset]), [['resync', 'new_session', 'E9', 1]]);
  // the next drop resumes with the new token
  ws2.drop(1006);
  await tick(30);
  srv.sockets[2].push(sessionFrame('Z'));
  assert.equal(srv.sockets[2].sent[0].data.resume_token, 'T-N');
  s.close();
});

test('4000 and 4001 end without reconnecting; reconnect() restarts', async () => {
  for (const [code, reason] of [[4000, 'expired'], [4001, 'taken_over']]) {
    const { srv, s, ws } = await joinedSession();
    const ended = [];
    s.on('ended', (e) => ended.push(e));
    ws.push({ type: 'goodbye', data: { code, reason, retry_after_ms: null, resumable: false } });
    ws.drop(code, reason);
    await tick(60);
    assert.equal(s.state, 'ended');
    assert.deepEqual(ended, [{ code, reason }]);
    assert.equal(srv.sockets.length, 1, 'no automatic reconnect');
    s.reconnect();
    await tick();
    assert.equal(srv.sockets.length, 2);
    assert.equal(s.state, 'connecting');
    s.close();
  }
});

test('goodbye retry_after_ms is honoured; at most one connection; token function per attempt', async () => {
  let calls = 0;
  const { srv, s, ws } = await joinedSession({ token: async () => `tok${++calls}`, backoffBase: 5000, backoffCap: 5000 });
  assert.match(ws.url, /\?token=tok1$/);
  const states = [];
  s.on('state', (e) => states.push(e));
  ws.push({ type: 'goodbye', data: { code: 1001, reason: 'shutdown', retry_after_ms: 20, resumable: false } });
  ws.drop(1001, 'shutdown');
  assert.equal(states[0].retryInMs, 20);
  assert.equal(states[0].reason, 'shutdown');
  await tick(60);
  assert.equal(srv.sockets.length, 2);
  assert.match(srv.sockets[1].url, /\?token=tok2$/);
  s._wakeUp();
  s.reconnect();
  await tick();
  assert.equal(srv.open().length, 1, 'one connection at a time');
  s.close();
});

test('a reload: a new Session on the same storage resumes, and its events wait for on()', async () => {
  const storage = memoryStorage();
  const first = await joinedSession({ storage });
  first.ws.push({ type: 'presence', data: { offset: 2, game_id: G, sid: 'B', status: 'joined' } });
  first.ws.drop(1001); // the page goes away
  first.s._clearTimer();
  first.s.state = 'ended';

  const srv = fakeServer();
  const s = connect('ws://x/ws', { storage, WebSocket: srv.FakeWS });
  await tick();
  const ws = srv.sockets[0];
  ws.push(sessionFrame('A3'));
  assert.deepEqual(ws.sent[0].data.games, { [G]: { epoch: 'E1', offset: 2 } });
  const jp = s.join(G);
  ws.push({ type: 'resumed', id: ws.sent[0].id, data: { sid: 'A', games: [{ game_id: G, epoch: 'E1', offset: 5, recovered: true, members: [member('A'), member('B')] }] } });
  ws.push({ type: 'presence', data: { offset: 3, game_id: G, sid: 'A', status: 'away', reason: 'disconnected' } });
  ws.push({ type: 'dice_rolled', data: { offset: 4, game_id: G, sid: 'B', dice: [6], results: [2] } });
  const game = await jp;
  assert.equal(ws.sent.filter((f) => f.type === 'join_game').length, 0, 'no join: the resume holds the game');
  const seen = [];
  game.on('presence', (d) => seen.push(d.offset));
  game.on('dice_rolled', (d) => seen.push(d.offset));
  await tick();
  assert.deepEqual(seen, [3, 4]);
  s.close();
});

test('a resume refused as rate_limited is tried again on a new connection, not given up', async () => {
  const { srv, s, ws } = await joinedSession();
  ws.drop(1006);
  await tick(30);
  const ws2 = srv.sockets[1];
  ws2.push(sessionFrame('A2'));
  ws2.push({ type: 'error', id: ws2.sent[0].id, data: { code: 'rate_limited', message: 'slow down' } });
  assert.equal(s.sid, 'A', 'not a fresh session');
  await tick(60);
  assert.equal(ws2.closedWith, 1000);
  const ws3 = srv.sockets[2];
  ws3.push(sessionFrame('A3'));
  assert.equal(ws3.sent[0].type, 'resume');
  assert.equal(ws3.sent[0].data.resume_token, 'T-A');
  s.close();
});

test('kicked or superseded: the game emits left with the reason, and is never rejoined by itself', async () => {
  const { srv, s, ws, game, events } = await joinedSession();
  const left = [];
  game.on('left', (d) => left.push(d));
  ws.push({ type: 'game_updated', data: { offset: 2, game_id: G, state: 'in_progress', idle_timeout_ms: 300000, seat_policy: 'single_seat' } });
  assert.deepEqual(events.map((e) => e.t), [], 'game_updated is not one of the handlers this test set');
  ws.push({ type: 'game_left', data: { game_id: G, reason: 'superseded', by_sid: 'B' } });
  assert.deepEqual(left, [{ game_id: G, reason: 'superseded', by_sid: 'B' }]);
  assert.equal(s.games.has(G), false);
  assert.equal(game.cursor.offset, 2, 'game_updated went through the cursor like any game event');
  // A lost connection whose resume fails: the fresh session re-joins nothing.
  ws.drop(1006);
  await tick(30);
  const ws2 = srv.sockets[1];
  ws2.push(sessionFrame('A2'));
  ws2.push({ type: 'error', id: ws2.sent[0].id, data: { code: 'resume_failed', reason: 'unknown', message: 'x' } });
  await tick();
  assert.equal(ws2.last('join_game'), undefined, 'no rejoin of a game the server ended');
  s.close();
});
