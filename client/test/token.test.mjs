// The Session's token refresh against a scripted fake WebSocket (PROTOCOL.md, "Token expiry"): the
// warning answered with refresh_token from the token function, retries with backoff, and close 4002
// followed by a reconnect with a fresh token and a resume.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, memoryStorage } from '../dugout.js';
import { tick, fakeServer } from './fakes.mjs';

const EXP = 1_900_000_000;
const sessionFrame = (sid, tokenExp = EXP) => ({
  type: 'session',
  data: { sid, user_id: 7, protocol: 2, resume_token: 'T-' + sid, resume_window_ms: 10000, token_exp: tokenExp },
});

// open connects with token (a string or a function), answers the session frame and collects 'token' events.
async function open(token, opts = {}) {
  const srv = fakeServer();
  const s = connect('ws://x/ws', { storage: memoryStorage(), WebSocket: srv.FakeWS, backoffBase: 10, backoffCap: 40, token, ...opts });
  await tick();
  const ws = srv.sockets[0];
  ws.push(sessionFrame('A'));
  assert.equal(s.state, 'open');
  const events = [];
  s.on('token', (e) => events.push(e));
  return { srv, s, ws, events };
}

// tokens is a token function that returns each of list in turn (a thrown Error for an Error), counting calls.
function tokens(...list) {
  const fn = async () => {
    const t = list[Math.min(fn.calls++, list.length - 1)];
    if (t instanceof Error) throw t;
    return t;
  };
  fn.calls = 0;
  return fn;
}

test('token_exp from the session frame; a warning is answered with refresh_token, token_refreshed moves it on', async () => {
  const fn = tokens('tok0', 'tok1');
  const { s, ws, events } = await open(fn);
  assert.equal(s.tokenExp, EXP);
  assert.equal(fn.calls, 1, 'called once for the handshake');
  ws.push({ type: 'token_expiring', data: { token_exp: EXP, expires_in_ms: 60000 } });
  await tick();
  assert.equal(fn.calls, 2);
  const r = ws.last('refresh_token');
  assert.deepEqual(r.data, { token: 'tok1' });
  assert.ok(typeof r.id === 'string' && r.id.length > 0);
  ws.push({ type: 'token_refreshed', id: r.id, data: { token_exp: EXP + 3600 } });
  assert.equal(s.tokenExp, EXP + 3600);
  assert.deepEqual(events, [
    { state: 'expiring', tokenExp: EXP, expiresInMs: 60000 },
    { state: 'refreshed', tokenExp: EXP + 3600 },
  ]);
  ws.push({ type: 'token_expiring', data: { token_exp: EXP + 3600, expires_in_ms: 100 } });
  await tick();
  assert.equal(ws.all('refresh_token').length, 2, 'each warning starts a refresh');
  s.close();
});

test('invalid_token, a thrown token function and a token no fresher are retried with backoff until one works', async () => {
  const fn = tokens('tok0', 'stale', new Error('offline'), 'same', 'good');
  const { s, ws, events } = await open(fn);
  ws.push({ type: 'token_expiring', data: { token_exp: EXP, expires_in_ms: 60000 } });
  await tick();
  const first = ws.last('refresh_token');
  assert.equal(first.data.token, 'stale');
  ws.push({ type: 'error', id: first.id, data: { code: 'invalid_token', reason: 'expired', message: 'x' } });
  assert.equal(events.at(-1).state, 'failed');
  assert.equal(events.at(-1).reason, 'expired');
  assert.ok(events.at(-1).retryInMs >= 0 && events.at(-1).retryInMs < 10);
  ws.push({ type: 'token_expiring', data: { token_exp: EXP, expires_in_ms: 50000 } });
  await tick(20); // the retry: the function throws
  assert.equal(events.at(-1).reason, 'token_function');
  assert.ok(events.at(-1).retryInMs < 20, 'within the second attempt\'s ceiling');
  await tick(30); // the next retry: the same token again
  const same = ws.last('refresh_token');
  assert.equal(same.data.token, 'same');
  assert.notEqual(same.id, first.id, 'each attempt has its own id');
  ws.push({ type: 'token_refreshed', id: same.id, data: { token_exp: EXP } });
  assert.equal(events.at(-1).reason, 'not_fresher');
  await tick(50);
  const good = ws.last('refresh_token');
  assert.equal(good.data.token, 'good');
  ws.push({ type: 'token_refreshed', id: good.id, data: { token_exp: null } });
  assert.equal(s.tokenExp, null);
  assert.deepEqual(events.map((e) => e.state), ['expiring', 'failed', 'expiring', 'failed', 'failed', 'refreshed']);
  assert.equal(ws.all('refresh_token').length, 3, 'the warning during a retry started no second refresh');
  await tick(60);
  assert.equal(ws.all('refresh_token').length, 3, 'nothing more once refreshed');
  assert.equal(s.state, 'open');
  s.close();
});

test('close 4002: a token event, then a reconnect with a fresh token that resumes the session', async () => {
  const fn = tokens('tok0', new Error('offline'), 'fresh');
  const { srv, s, ws, events } = await open(fn);
  const states = [];
  s.on('state', (e) => states.push(e));
  ws.push({ type: 'token_expiring', data: { token_exp: EXP, expires_in_ms: 1000 } });
  await tick();
  assert.equal(events.at(-1).reason, 'token_function');
  ws.push({ type: 'goodbye', data: { code: 4002, reason: 'token_expired', retry_after_ms: null, resumable: true } });
  ws.drop(4002, 'token_expired');
  assert.deepEqual(events.at(-1), { state: 'expired', tokenExp: EXP });
  assert.equal(s.state, 'reconnecting');
  assert.equal(states[0].reason, 'token_expired');
  await tick(60);
  assert.equal(fn.calls, 3, 'the pending retry was dropped with its connection; the reconnect asked for a token');
  assert.equal(srv.sockets.length, 2);
  const ws2 = srv.sockets[1];
  assert.match(ws2.url, /\?token=fresh$/);
  assert.equal(ws.all('refresh_token').length, 0);
  ws2.push(sessionFrame('A2', EXP + 3600));
  assert.equal(s.tokenExp, EXP + 3600, 'the new connection\'s token governs');
  assert.equal(ws2.sent[0].type, 'resume', 'resume first');
  assert.equal(ws2.sent[0].data.resume_token, 'T-A');
  assert.equal(ws2.all('refresh_token').length, 0);
  ws2.push({ type: 'resumed', id: ws2.sent[0].id, data: { sid: 'A', user_id: 7, away_ms: 40, games: [] } });
  assert.equal(s.sid, 'A');
  assert.equal(s.state, 'open');
  s.close();
});

test('a string token cannot be refreshed: the warning is only told to the page', async () => {
  const { s, ws, events } = await open('fixed');
  ws.push({ type: 'token_expiring', data: { token_exp: EXP, expires_in_ms: 60000 } });
  s.refreshToken();
  await tick(20);
  assert.equal(ws.all('refresh_token').length, 0);
  assert.deepEqual(events, [{ state: 'expiring', tokenExp: EXP, expiresInMs: 60000 }]);
  s.close();
});

test('refreshToken() refreshes at any time; close() stops a retry', async () => {
  const fn = tokens('tok0', 'next', 'again');
  const { s, ws, events } = await open(fn);
  s.refreshToken();
  s.refreshToken(); // one refresh at a time
  await tick();
  const r = ws.last('refresh_token');
  assert.equal(ws.all('refresh_token').length, 1);
  ws.push({ type: 'error', id: r.id, data: { code: 'invalid_token', reason: 'user_mismatch', message: 'x' } });
  assert.equal(events.at(-1).reason, 'user_mismatch');
  s.close();
  await tick(30);
  assert.equal(ws.all('refresh_token').length, 1, 'no retry after close()');
  assert.equal(fn.calls, 2);
});
