// Browser end-to-end tests: real Chromium pages talk to a real dugout process
// over WebSocket. Run with `npm test` (node --test) in this folder.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import {
  browserSuite,
  launchBrowser,
  mintJWT,
  openClient,
  startDugout,
  startPageServer,
  waitFor,
} from './harness.mjs';

const { skip, pages } = await browserSuite('the browser tests', startPageServer);

// Fast liveness settings for cases b and d.
const FAST = {
  PING_INTERVAL: '300ms',
  PING_TIMEOUT: '1s',
  SESSION_TIMEOUT: '3s',
  EXPIRY_WARNING: '1s',
  EXPIRY_CHECK_INTERVAL: '100ms',
};
const ALLOW_PAGE = { ALLOWED_ORIGINS: '127.0.0.1:*' };


// scenario runs fn against a fresh dugout (started with env) and a fresh
// browser context, stops both at the end (browser first, then SIGTERM to
// dugout, awaiting its exit), and adds dugout's log to any failure.
async function scenario(env, fn) {
  const dugout = await startDugout(env);
  let browser;
  try {
    browser = await launchBrowser();
    await fn({ dugout, context: browser.context });
    await browser.close();
    const exit = await dugout.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, 'dugout should exit 0 after SIGTERM');
  } catch (e) {
    e.message += `\n--- dugout log ---\n${dugout.log()}`;
    throw e;
  } finally {
    await browser?.close();
    await dugout.stop();
  }
}

const open = (context, dugout, name) => openClient(context, pages.url, dugout.wsURL, name);

// join makes c join game and returns its game_joined reply.
async function join(c, game) {
  const reply = await c.request('join_game', { game_id: game });
  assert.equal(reply.type, 'game_joined', `${c.name} join: ${JSON.stringify(reply)}`);
  return reply;
}

const leftFrame = (sid, game) => (f) =>
  f.type === 'presence' && f.data?.sid === sid && f.data?.game_id === game && f.data?.status === 'left';

test('a: two pages join one game, see each other, relay a decision, share dice', { skip, timeout: 30_000 }, async () => {
  await scenario(ALLOW_PAGE, async ({ dugout, context }) => {
    const a = await open(context, dugout, 'A');
    const b = await open(context, dugout, 'B');
    const sa = (await a.session()).data;
    const sb = (await b.session()).data;
    for (const s of [sa, sb]) {
      assert.equal(typeof s.sid, 'string');
      assert.ok(s.sid.length >= 16, `sid too short: ${s.sid}`);
      assert.equal(s.user_id, null);
    }
    assert.notEqual(sa.sid, sb.sid);
    assert.equal((await a.frames())[0].type, 'session', 'session must be the first frame');

    const game = randomUUID();
    const ja = await join(a, game);
    assert.deepEqual(ja.data.members.map((m) => m.sid), [sa.sid]);
    // B spells the game id in upper case: the same game, written back in lower case.
    const jb = await join(b, game.toUpperCase());
    assert.equal(jb.data.game_id, game);
    assert.deepEqual(jb.data.members.map((m) => m.sid), [sb.sid, sa.sid], 'B sees itself, then A');

    const joined = await a.waitFrame(
      (f) => f.type === 'presence' && f.data?.status === 'joined' && f.data?.sid === sb.sid,
      'presence joined for B',
    );
    assert.deepEqual(
      { game_id: joined.data.game_id, user_id: joined.data.user_id },
      { game_id: game, user_id: null },
    );

    const health = await dugout.health();
    assert.equal(health.total_sessions, 2);
    assert.equal(health.sessions_per_game[game], 2);

    // A decision from A arrives at B, unchanged, with A's sid; A gets the echo with its id.
    const decision = { shift: 'infield_in', pitch: { type: 'slider', zone: 7 } };
    const echo = await a.request('submit_defensive_decision', { game_id: game, decision });
    assert.equal(echo.type, 'defensive_decision');
    assert.deepEqual(echo.data.decision, decision);
    const relayed = await b.waitFrame(
      (f) => f.type === 'defensive_decision' && f.data?.sid === sa.sid,
      'A\'s defensive_decision',
    );
    assert.equal(relayed.id, undefined, 'a relayed event carries no id');
    assert.deepEqual(relayed.data, { game_id: game, sid: sa.sid, user_id: null, decision, offset: echo.data.offset });
    assert.ok(Number.isInteger(echo.data.offset) && echo.data.offset > 0, 'a game event carries its offset');

    // B's offensive decision reaches A too.
    await b.request('submit_offensive_decision', { game_id: game, decision: { steal: true } });
    const off = await a.waitFrame((f) => f.type === 'offensive_decision' && f.data?.sid === sb.sid, 'B\'s offensive_decision');
    assert.deepEqual(off.data.decision, { steal: true });

    // B rolls; both pages see the very same results.
    const mine = await b.request('roll_dice', { game_id: game });
    assert.equal(mine.type, 'dice_rolled');
    const theirs = await a.waitFrame((f) => f.type === 'dice_rolled' && f.data?.sid === sb.sid, 'B\'s dice_rolled');
    assert.deepEqual(mine.data.dice, [6, 6, 6, 20]);
    assert.deepEqual(theirs.data.dice, mine.data.dice);
    assert.deepEqual(theirs.data.results, mine.data.results, 'both pages see the same results');
    mine.data.results.forEach((r, i) => {
      assert.ok(Number.isInteger(r) && r >= 1 && r <= mine.data.dice[i], `die ${i}: ${r}`);
    });

    // And custom dice from A.
    const rollA = await a.request('roll_dice', { game_id: game, dice: [2, 100] });
    const seenB = await b.waitFrame((f) => f.type === 'dice_rolled' && f.data?.sid === sa.sid, 'A\'s dice_rolled');
    assert.deepEqual(seenB.data.results, rollA.data.results);
    assert.deepEqual(seenB.data.dice, [2, 100]);
  });
});

test('b: a heartbeating page survives many ping rounds, well past SESSION_TIMEOUT', { skip, timeout: 30_000 }, async (t) => {
  await scenario({ ...ALLOW_PAGE, ...FAST }, async ({ dugout, context }) => {
    const a = await open(context, dugout, 'A');
    const s = (await a.session()).data;
    assert.equal(s.ping_interval_ms, 300);
    assert.equal(s.session_timeout_ms, 3000);
    const game = randomUUID();
    await join(a, game);
    const { now: start } = await a.state();
    await a.page.evaluate(() => window.dugout.startHeartbeat(500));

    // 5 s is ~16 ping rounds of 300 ms, each to be answered within 1 s by the
    // browser itself, and 1.7 x SESSION_TIMEOUT. The socket must stay open all along.
    const HOLD = 5000;
    const final = await waitFor(
      async () => {
        const st = await a.state();
        const bad = st.events.find((e) => e.type === 'close' || e.type === 'error') ??
          st.frames.find((f) => f.type === 'session_expiring' || f.type === 'error');
        if (bad) throw new Error(`A lost its session after ${Math.round(st.now - start)} ms: ${JSON.stringify(bad)}`);
        return st.now - start >= HOLD ? st : null;
      },
      { timeout: HOLD + 5000, interval: 100, what: `A to stay open for ${HOLD} ms`, describe: a.describe },
    );
    assert.equal(final.readyState, 1, 'socket still OPEN');
    const acks = final.frames.filter((f) => f.type === 'heartbeat_ack');
    assert.ok(acks.length >= 5, `expected ~10 heartbeat_acks in 5 s, got ${acks.length}`);
    for (const ack of acks) assert.ok(!Number.isNaN(Date.parse(ack.data.timestamp)), ack.data.timestamp);
    const health = await dugout.health();
    assert.equal(health.total_sessions, 1);
    assert.equal(health.sessions_per_game[game], 1);
    t.diagnostic(`open for ${Math.round(final.now - start)} ms, ${acks.length} heartbeat_acks, ~${Math.floor((final.now - start) / 300)} ping rounds`);
  });
});

test('c: a closed page is gone: presence left "disconnected" and health drops it', { skip, timeout: 30_000 }, async () => {
  await scenario(ALLOW_PAGE, async ({ dugout, context }) => {
    const a = await open(context, dugout, 'A');
    const b = await open(context, dugout, 'B');
    const sa = (await a.session()).data;
    const sb = (await b.session()).data;
    const game = randomUUID();
    await join(a, game);
    await join(b, game);
    await waitFor(async () => (await dugout.health()).sessions_per_game[game] === 2, { what: 'two sessions in the game' });

    await b.page.close();

    const left = await a.waitFrame(leftFrame(sb.sid, game), 'presence left for B');
    assert.equal(left.data.reason, 'disconnected');
    assert.equal(left.data.user_id, null);
    const health = await waitFor(
      async () => {
        const h = await dugout.health();
        return h.total_sessions === 1 ? h : null;
      },
      { what: 'total_sessions 1', describe: async () => JSON.stringify(await dugout.health()) },
    );
    assert.equal(health.sessions_per_game[game], 1);
    assert.equal(health.active_games, 1);
    // A is untouched.
    assert.equal((await a.state()).readyState, 1);
    assert.ok(!(await a.frames()).some(leftFrame(sa.sid, game)));
  });
});

test('d: an idle page is warned, then closed with 4000; its game hears "expired"', { skip, timeout: 30_000 }, async (t) => {
  await scenario({ ...ALLOW_PAGE, ...FAST }, async ({ dugout, context }) => {
    // The heartbeating page first, so the idle page's idle period starts at its join.
    const live = await open(context, dugout, 'live');
    await live.session();
    const game = randomUUID();
    await join(live, game);
    await live.page.evaluate(() => window.dugout.startHeartbeat(500));
    const idle = await open(context, dugout, 'idle');
    const si = (await idle.session()).data;
    await join(idle, game); // idle's last message
    const { lastSent } = await idle.state();

    const close = await idle.waitEvent('close', 8000);
    // A slow machine may have warned the idle page between its connect and its
    // join already (that was an idle period too): the warning that counts is
    // the last one, for the idle period that began with the join.
    const warnings = (await idle.frames()).filter((f) => f.type === 'session_expiring');
    assert.ok(warnings.length > 0, 'session_expiring before the close');
    const warning = warnings.at(-1);
    assert.ok(warning.data.expires_in_ms > 0 && warning.data.expires_in_ms <= 1000, JSON.stringify(warning));
    assert.equal(close.code, 4000, `close code: ${JSON.stringify(close)}`);
    assert.equal(close.reason, 'expired');
    assert.ok(close.wasClean, 'expiry closes with a close handshake');
    assert.ok(warning._at < close.at, 'warning comes before the close');
    assert.ok(!(await idle.events()).some((e) => e.type === 'error'), 'no error event on a clean close');

    // Timing: never before SESSION_TIMEOUT of inactivity, no later than
    // SESSION_TIMEOUT + EXPIRY_CHECK_INTERVAL (+ slack).
    const idleFor = close.at - lastSent;
    const warnedAt = warning._at - lastSent;
    assert.ok(idleFor >= 2990, `expired after only ${idleFor} ms idle`);
    assert.ok(idleFor <= 3100 + 2000, `expired late: ${idleFor} ms idle`);
    assert.ok(warnedAt >= 1990, `warned after only ${warnedAt} ms idle`);

    const left = await live.waitFrame(leftFrame(si.sid, game), 'presence left for idle');
    assert.equal(left.data.reason, 'expired');
    assert.equal((await live.state()).readyState, 1, 'the heartbeating page stays');
    const health = await waitFor(
      async () => {
        const h = await dugout.health();
        return h.total_sessions === 1 ? h : null;
      },
      { what: 'total_sessions 1', describe: async () => JSON.stringify(await dugout.health()) },
    );
    assert.equal(health.sessions_per_game[game], 1);
    t.diagnostic(`warned at ${Math.round(warnedAt)} ms idle (expires_in_ms ${warning.data.expires_in_ms}), closed 4000 at ${Math.round(idleFor)} ms idle`);
  });
});

test('e: an access_token cookie set in the browser authenticates the handshake', { skip, timeout: 30_000 }, async () => {
  const secret = `e2e-${randomUUID()}`;
  await scenario({ ...ALLOW_PAGE, JWT_SECRET: secret }, async ({ dugout, context }) => {
    const token = mintJWT({ sub: '42', exp: Math.floor(Date.now() / 1000) + 600 }, secret);
    // Cookies belong to a host, not a port: set for 127.0.0.1 it goes to dugout's port too.
    await context.addCookies([
      { name: 'access_token', value: token, domain: '127.0.0.1', path: '/', httpOnly: true, sameSite: 'Lax' },
    ]);
    const a = await open(context, dugout, 'A');
    const s = (await a.session()).data;
    assert.equal(s.user_id, 42);
    const game = randomUUID();
    const joined = await join(a, game);
    assert.deepEqual(joined.data.members, [{ sid: s.sid, user_id: 42, status: 'connected' }]);
    const health = await dugout.health();
    assert.equal(health.total_sessions, 1);
    assert.equal(health.unique_users, 1);
  });
});

test('f: a page from an Origin that is not allowed is refused', { skip, timeout: 30_000 }, async () => {
  await scenario({ ALLOWED_ORIGINS: 'game.example.com' }, async ({ dugout, context }) => {
    const a = await open(context, dugout, 'A');
    const close = await a.waitEvent('close');
    const events = await a.events();
    assert.ok(!events.some((e) => e.type === 'open'), `the socket must never open: ${JSON.stringify(events)}`);
    assert.ok(events.some((e) => e.type === 'error'), 'an error event fires');
    assert.equal(close.code, 1006, 'a refused handshake closes abnormally');
    assert.deepEqual(await a.frames(), []);
    const health = await dugout.health();
    assert.equal(health.total_sessions, 0);
    // Chromium tells the console why; the status must be dugout's 403.
    const why = await waitFor(async () => a.consoleLines.find((l) => l.includes('WebSocket')), {
      timeout: 2000,
      what: 'the console line about the WebSocket',
      describe: () => a.consoleLines.join('\n'),
    });
    assert.match(why, /403/, why);
  });
});
