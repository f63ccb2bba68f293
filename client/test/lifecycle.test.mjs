// The Session's report of a failed resume, against a scripted fake WebSocket (as in session.test.mjs):
// the state event that opens a fresh session after a refused resume says why the resume failed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, memoryStorage } from '../dugout.js';
import { G, tick, fakeServer } from './fakes.mjs';

const sessionFrame = (sid) => ({
  type: 'session',
  data: { sid, user_id: null, protocol: 2, resume_token: 'T-' + sid, resume_window_ms: 10000 },
});

// joined opens a session A in game G and returns it with every state event it emits.
async function joined() {
  const srv = fakeServer();
  const s = connect('ws://x/ws', { storage: memoryStorage(), WebSocket: srv.FakeWS, backoffBase: 10, backoffCap: 10 });
  const states = [];
  s.on('state', (e) => states.push(e));
  await tick();
  const ws = srv.sockets[0];
  ws.push(sessionFrame('A'));
  const jp = s.join(G);
  await tick();
  const j = ws.last('join_game');
  ws.push({ type: 'game_joined', id: j.id, data: { game_id: G, epoch: 'E1', offset: 1, members: [{ sid: 'A', user_id: null, status: 'connected' }] } });
  await jp;
  return { srv, s, ws, states };
}

// reconnectWith drops the connection and answers the resume on the next one with reply(resumeFrame).
async function reconnectWith(srv, ws, reply) {
  ws.drop(1006);
  await tick(30);
  const ws2 = srv.sockets.at(-1);
  assert.notEqual(ws2, ws);
  ws2.push(sessionFrame('N'));
  const resume = ws2.sent[0];
  assert.equal(resume.type, 'resume');
  ws2.push(reply(resume));
  return ws2;
}

test('a first connection opens as new_session, with no resumeFailed', async () => {
  const { s, states } = await joined();
  assert.deepEqual(states, [{ state: 'open', reason: 'new_session', retryInMs: undefined }]);
  assert.equal('resumeFailed' in states[0], false);
  s.close();
});

for (const reason of ['unknown', 'user_mismatch', 'disabled']) {
  test(`resume_failed ${reason}: the state event that opens the fresh session says resumeFailed "${reason}"`, async () => {
    const { srv, s, ws, states } = await joined();
    states.length = 0;
    await reconnectWith(srv, ws, (r) => ({ type: 'error', id: r.id, data: { code: 'resume_failed', reason } }));
    assert.equal(s.sid, 'N', 'a fresh session');
    assert.deepEqual(states.map((e) => e.state), ['reconnecting', 'open']);
    assert.deepEqual(states[1], { state: 'open', reason: 'new_session', retryInMs: undefined, resumeFailed: reason });
    s.close();
  });
}

test('resume_failed without a reason: resumeFailed is null, still present', async () => {
  const { srv, s, ws, states } = await joined();
  states.length = 0;
  await reconnectWith(srv, ws, (r) => ({ type: 'error', id: r.id, data: { code: 'resume_failed' } }));
  assert.equal(states.at(-1).state, 'open');
  assert.equal(states.at(-1).resumeFailed, null);
  s.close();
});

test('a resume that succeeds opens as resumed, with no resumeFailed', async () => {
  const { srv, s, ws, states } = await joined();
  states.length = 0;
  await reconnectWith(srv, ws, (r) => ({
    type: 'resumed', id: r.id,
    data: { sid: 'A', games: [{ game_id: G, epoch: 'E1', offset: 1, recovered: true, members: [] }] },
  }));
  assert.equal(s.sid, 'A');
  assert.equal(states.at(-1).state, 'open');
  assert.equal(states.at(-1).reason, 'resumed');
  assert.equal('resumeFailed' in states.at(-1), false);
  s.close();
});

test('a resume refused as rate_limited reports no resumeFailed: the session was not looked at', async () => {
  const { srv, s, ws, states } = await joined();
  states.length = 0;
  await reconnectWith(srv, ws, (r) => ({ type: 'error', id: r.id, data: { code: 'rate_limited' } }));
  await tick();
  assert.equal(s.sid, 'A', 'not a fresh session');
  assert.ok(states.every((e) => !('resumeFailed' in e)), JSON.stringify(states));
  s.close();
});
