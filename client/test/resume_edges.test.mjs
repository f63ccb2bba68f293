// Edges of a resume: a seat that ended while the session was away, and a token refresh asked for
// before the new connection has resumed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, memoryStorage } from '../dugout.js';
import { G, tick, fakeServer } from './fakes.mjs';

const sessionFrame = (sid) => ({ type: 'session', data: { sid, user_id: 7, protocol: 2, resume_token: 'T-' + sid, resume_window_ms: 10000, token_exp: 1_900_000_000 } });

async function joined(opts = {}) {
  const srv = fakeServer();
  const s = connect('ws://x/ws', { storage: memoryStorage(), WebSocket: srv.FakeWS, backoffBase: 10, backoffCap: 40, ...opts });
  await tick();
  const ws = srv.sockets[0];
  ws.push(sessionFrame('A'));
  const jp = s.join(G);
  await tick();
  ws.push({ type: 'game_joined', id: ws.last('join_game').id, data: { game_id: G, epoch: 'E1', offset: 1, members: [] } });
  const game = await jp;
  return { srv, s, ws, game };
}

test('a seat ended while away: resumed omits the game, the Game emits left (not_resumed), no re-join', async () => {
  const { srv, s, ws, game } = await joined();
  const left = [];
  game.on('left', (d) => left.push(d));
  await tick();
  ws.drop(1006);
  await tick(30);
  const ws2 = srv.sockets[1];
  ws2.push(sessionFrame('A2'));
  ws2.push({ type: 'resumed', id: ws2.sent[0].id, data: { sid: 'A', games: [] } });
  assert.equal(s.games.has(G), false);
  assert.deepEqual(left, [{ game_id: G, reason: 'not_resumed', by_sid: null }], 'the page is told the seat ended');
  await tick(30);
  assert.equal(ws2.sent.filter((f) => f.type === 'join_game').length, 0, 'the game is not re-joined');
  s.close();
});

test('refreshToken() before the new connection has resumed waits: resume goes first, then refresh_token', async () => {
  const srv = fakeServer();
  let n = 0;
  const s = connect('ws://x/ws', { storage: memoryStorage(), WebSocket: srv.FakeWS, backoffBase: 10, backoffCap: 40, token: async () => 'tok' + n++ });
  await tick();
  srv.sockets[0].push(sessionFrame('A'));
  await tick();
  srv.sockets[0].drop(1006);
  await tick(30);
  const ws2 = srv.sockets[1];
  s.refreshToken(); // the app renewed its login just now, socket open, session frame not read yet
  await tick();
  ws2.push(sessionFrame('A2'));
  await tick();
  assert.deepEqual(ws2.sent.map((f) => f.type), ['resume'], 'the resume is the first frame, alone until answered');
  ws2.push({ type: 'resumed', id: ws2.sent[0].id, data: { sid: 'A', games: [] } });
  await tick();
  assert.deepEqual(ws2.sent.map((f) => f.type), ['resume', 'refresh_token'], 'the refresh follows the resume');
  s.close();
});
