// Browser end-to-end tests of the client library's token refresh (client/dugout.js, contract v2 §10): a
// page whose token function fetches a JWT from its own origin, against a real dugout with a JWT_SECRET.
// The tokens live a few seconds, so the server's warning, the in-band refresh and the 4002 close all
// happen within each test. Run with `node --test client_token.test.mjs`.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { test } from 'node:test';

import { moduleURL, openPage } from './clientpage.mjs';
import { browserSuite, mintJWT, waitFor, withDugout } from './harness.mjs';

const { skip, pages } = await browserSuite('the client token browser tests', startTokenPages);

const SECRET = 'e2e-token-secret-0123456789abcdef0123456789';
const GRACE_S = 1;
const ENV = {
  ALLOWED_ORIGINS: '127.0.0.1:*',
  RESUME_WINDOW: '10s',
  JWT_SECRET: SECRET,
  TOKEN_REFRESH_WARNING: '2s',
  TOKEN_EXPIRY_GRACE: `${GRACE_S}s`,
};

// The page: like clientpage.mjs's, with a token function that asks this page's own server for a JWT
// each time the client wants one (before each connection, and on the server's token_expiring).
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>dugout token e2e</title></head><body>
<script type="module">
const q = new URLSearchParams(location.search);
try {
  const { connect } = await import(q.get('m'));
  const token = async () => (await fetch('/token', { cache: 'no-store' })).text();
  const s = connect(q.get('ws'), { token, backoffBase: 200, backoffCap: 1000 });
  window.session = s;
  s.on('state', (e) => window.record({ kind: 'state', ...e }));
  s.on('ended', (e) => window.record({ kind: 'ended', ...e }));
  s.on('token', (e) => window.record({ kind: 'token', at: Date.now(), ...e }));
  const g = await s.join(q.get('game'));
  window.game = g;
  window.record({ kind: 'ready', sid: s.sid, userId: s.userId, tokenExp: s.tokenExp });
} catch (e) {
  window.record({ kind: 'fail', message: String(e && e.stack || e) });
}
</script></body></html>`;

// startTokenPages serves PAGE and /token, which answers whatever ctl.mint() returns at that moment.
async function startTokenPages() {
  const ctl = { mint: () => '', minted: [] };
  const server = createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (req.method === 'GET' && u.pathname === '/token') {
      const tok = ctl.mint();
      ctl.minted.push({ at: Date.now(), tok });
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' }).end(tok);
      return;
    }
    if (req.method === 'GET' && u.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' }).end(PAGE);
      return;
    }
    res.writeHead(404).end('not found');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    ctl,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}


const nowS = () => Math.floor(Date.now() / 1000);
const token = (sub, exp) => mintJWT({ sub, exp }, SECRET);
const of = (p, kind) => p.log.filter((e) => e.kind === kind);
const waitLog = (p, pred, what, timeout = 10_000) =>
  waitFor(() => p.log.find(pred), { timeout, what: `${p.name}: ${what}`, describe: p.describe });

// scenario runs body against a fresh dugout and browser, with a page of the token server in a new game.
function scenario(t, body) {
  return withDugout(ENV, async ({ dugout, browser }) => {
    const m = await moduleURL(dugout, pages, t);
    const src = `${pages.base}/?${new URLSearchParams({ m, ws: dugout.wsURL, game: randomUUID() })}`;
    await body({ dugout, browser, src });
  });
}

test('client token: warned before exp, the client refreshes in-band by itself and the connection outlives the old exp', { skip, timeout: 60_000 }, async (t) => {
  await scenario(t, async ({ dugout, browser, src }) => {
    const firstExp = nowS() + 3; // the warning (2 s before) comes about a second after the page connects
    let calls = 0;
    pages.ctl.mint = () => (++calls === 1 ? token('42', firstExp) : token('42', nowS() + 60));
    const a = await openPage(browser.context, 'A', src);
    const ready = await a.ready();
    assert.equal(ready.userId, 42);
    assert.equal(ready.tokenExp, firstExp, 'the session frame carries the token exp');

    const warned = await waitLog(a, (e) => e.kind === 'token' && e.state === 'expiring', 'token expiring');
    assert.equal(warned.tokenExp, firstExp);
    assert.ok(warned.at >= firstExp * 1000 - 2000 - 20, `warned ${firstExp * 1000 - warned.at} ms before exp, want TOKEN_REFRESH_WARNING (2 s) or less`);
    const refreshed = await waitLog(a, (e) => e.kind === 'token' && e.state === 'refreshed', 'token refreshed');
    assert.ok(refreshed.tokenExp > firstExp + 30, `the new exp ${refreshed.tokenExp} governs`);
    assert.equal(calls, 2, 'the token function ran for the handshake and once for the refresh');

    // The behaviour under test is that nothing happens at the old exp + grace, so this one wait is on
    // the clock: until a second past it, then a roll on the same connection.
    await waitFor(() => Date.now() > (firstExp + GRACE_S + 1) * 1000, { timeout: 10_000, what: 'the old exp + grace to pass' });
    const roll = await a.page.evaluate(() => window.game.roll().then((r) => ({ sid: window.session.sid, offset: r.data.offset })));
    assert.equal(roll.sid, ready.sid);
    assert.deepEqual(of(a, 'state').map((e) => e.state), ['open'], 'one connection, never reconnecting');
    assert.equal(of(a, 'token').filter((e) => e.state === 'failed' || e.state === 'expired').length, 0);
    assert.ok(!dugout.log().includes('"code":4002'), 'no 4002 close in the server log');
    t.diagnostic(`exp ${firstExp} -> ${refreshed.tokenExp}, warned ${JSON.stringify(warned)}`);
  });
});

test('client token: refused refreshes are retried, the 4002 close comes at exp + grace, and the client resumes with a fresh token', { skip, timeout: 60_000 }, async (t) => {
  await scenario(t, async ({ browser, src }) => {
    const firstExp = nowS() + 3;
    const closeAt = (firstExp + GRACE_S) * 1000;
    // Until the server's close (exp + grace, on this machine's clock) the function gives the token of
    // another user, which the server refuses as user_mismatch; from then on a good one, for the handshake
    // that resumes.
    let calls = 0;
    pages.ctl.mint = () => {
      calls++;
      if (calls === 1) return token('42', firstExp);
      return Date.now() < closeAt ? token('43', nowS() + 60) : token('42', nowS() + 60);
    };
    const a = await openPage(browser.context, 'A', src);
    const ready = await a.ready();

    const failed = await waitLog(a, (e) => e.kind === 'token' && e.state === 'failed', 'a refused refresh');
    assert.equal(failed.reason, 'user_mismatch');
    assert.equal(typeof failed.retryInMs, 'number');
    const expired = await waitLog(a, (e) => e.kind === 'token' && e.state === 'expired', 'closed with 4002', 15_000);
    // Date.now() of the page and of this process is one clock; exp is whole seconds.
    assert.ok(expired.at >= closeAt - 20 && expired.at < closeAt + 2000,
      `closed ${expired.at - closeAt} ms after exp + grace, want at it (and not before)`);
    // Each record is its own round trip to this process: wait for the state event, do not just look.
    const reconnecting = await waitLog(a, (e) => e.kind === 'state' && e.state === 'reconnecting', 'reconnecting');
    assert.equal(reconnecting.reason, 'token_expired', 'the goodbye names token_expired');
    const resumed = await waitLog(a, (e) => e.kind === 'state' && e.state === 'open' && e.reason === 'resumed', 'resumed');
    assert.ok(resumed, 'resumed');
    assert.equal(await a.page.evaluate(() => window.session.sid), ready.sid, 'the same session');
    assert.ok((await a.page.evaluate(() => window.session.tokenExp)) > firstExp + 30, 'the fresh token governs');
    assert.equal(of(a, 'ended').length, 0, 'a 4002 does not end the session on the page');
    const states = of(a, 'state').map((e) => `${e.state}:${e.reason}`);
    assert.deepEqual(states, ['open:new_session', 'reconnecting:token_expired', 'open:resumed']);
    const roll = await a.page.evaluate(() => window.game.roll().then((r) => r.data.offset));
    assert.equal(typeof roll, 'number');
    t.diagnostic(`refused ${of(a, 'token').filter((e) => e.state === 'failed').length} refreshes, closed ${expired.at - closeAt} ms after exp + grace, ${calls} token calls`);
  });
});
