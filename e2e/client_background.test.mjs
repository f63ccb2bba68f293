// Browser end-to-end tests of the client library (client/dugout.js) in a page the user is not looking at,
// each against a real dugout process and the module as dugout serves it: a frozen page, and one whose
// scripts are stopped, stay connected and catch up; a hidden page expires, because the client never
// heartbeats by itself. Run with `node --test client_background.test.mjs`.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { moduleURL, offsets, openPage, startPages } from './clientpage.mjs';
import { browserSuite, launchPlainBrowser, waitFor, withDugout } from './harness.mjs';
import { BASE_ENV, INIT, instrument, tapSockets, waitLog, kinds, membersOf, sidOf, srcFor, parseLine } from './lifecycle.mjs';

const { skip, pages } = await browserSuite('the client background browser tests', startPages);


// ---------------------------------------------------------------- 3. a frozen page, and one whose scripts are stopped

const STALL_ENV = {
  ...BASE_ENV, PING_INTERVAL: '300ms', PING_TIMEOUT: '1s',
  SESSION_TIMEOUT: '30s', EXPIRY_WARNING: '10s', EXPIRY_CHECK_INTERVAL: '5s',
};
const STALL_PING_TIMEOUT = 1000;

// playWhileStalled has B roll, a round trip each and a quarter second apart, until its rolls span
// 5 × PING_TIMEOUT, about 16 rounds of PING_INTERVAL; then it checks that the server and B still hold A
// connected. This is the one wait on the clock, because time is what is under test: a connection that
// missed a pong would be dropped within PING_INTERVAL + PING_TIMEOUT (1.3 s), and B would hear A away.
// A's page must run no script meanwhile (it records nothing, not even the rolls it is sent).
async function playWhileStalled({ a, ra, b, rb, dugout, game }) {
  const logAtStall = a.log.length;
  const rolls = [];
  const start = Date.now();
  await waitFor(async () => {
    rolls.push(await b.roll());
    return Date.now() - start >= 5 * STALL_PING_TIMEOUT;
  }, { timeout: 5 * STALL_PING_TIMEOUT + 10_000, interval: 250, what: 'B rolling for 5 × PING_TIMEOUT', describe: b.describe });
  const last = rolls.at(-1);
  await b.waitEvent((e) => e.t === 'dice_rolled' && e.offset === last.offset, 'B\'s last roll');
  assert.equal(a.log.length, logAtStall, 'A\'s scripts did not run');
  const h = await dugout.health();
  assert.deepEqual([h.connected_sessions, h.away_sessions, h.sessions_per_game[game]], [2, 0, 2], 'the server holds A connected');
  assert.deepEqual(await membersOf(b), [`${ra.sid}:connected`, `${rb.sid}:connected`].sort(), 'B sees A connected');
  assert.deepEqual(b.events().filter((e) => e.t === 'presence' && e.sid === ra.sid), [], 'B heard nothing about A');
  return { rolls, last, ms: Date.now() - start };
}

// twoPlayers opens A, then B, in one game, and waits for A to hear B join.
async function twoPlayers(context, src) {
  const a = await openPage(context, 'A', src);
  const ra = await a.ready();
  const b = await openPage(context, 'B', src);
  const rb = await b.ready();
  await a.waitEvent((e) => e.t === 'presence' && e.sid === rb.sid && e.status === 'joined', 'B joined');
  for (const p of [a, b]) await instrument(p);
  return { a, ra, b, rb };
}

// Frozen the way Chromium freezes a background tab (Page.setWebLifecycleState, the page's 'freeze' and
// 'resume' events), in launchPlainBrowser()'s browser: in launchBrowser()'s, focus emulation keeps every page
// visible, and Blink does not freeze a visible page (the freeze is accepted and the page runs on).
// Chromium 156, on thawing a frozen page, closes each of its WebSockets itself: the server gets close 1001
// and the page 1006, with or without this client (a bare WebSocket in a page driven over raw CDP, without
// Playwright, goes the same way). So the test takes both outcomes a browser may give: the socket
// survives and the client never leaves "open"; or the browser closed it with 1001 at the thaw (the server's
// log says so; this client never closes with 1001) and the client resumes the same session. Either way:
// connected throughout the freeze, then every event once, in order, in the same session, no resync.
test('client background: a frozen page stays connected while frozen (the browser answers pings) and, thawed, gets every missed event once, in order, in the same session', { skip, timeout: 60_000 }, async (t) => {
  await withDugout(STALL_ENV, async ({ dugout, browser }) => {
    const tap = tapSockets(browser.context);
    await browser.context.addInitScript(INIT);
    const game = randomUUID();
    const src = srcFor(pages, await moduleURL(dugout, pages, t), dugout, game);
    const { a, ra, b, rb } = await twoPlayers(browser.context, src);

    const cdp = await a.page.context().newCDPSession(a.page);
    await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
    const { rolls, last, ms } = await playWhileStalled({ a, ra, b, rb, dugout, game });
    assert.equal(tap.of(a.page).length, 1);
    await cdp.send('Page.setWebLifecycleState', { state: 'active' });
    await a.waitEvent((e) => e.t === 'dice_rolled' && e.offset === last.offset, 'the last roll, after the thaw');
    await waitFor(() => a.page.evaluate(() => window.session.state === 'open'), { what: 'A open', describe: a.describe });

    const ended = dugout.log().split('\n').map(parseLine).filter((l) => l.message === 'connection ended');
    const closedByBrowser = tap.of(a.page).length > 1;
    let backOffset;
    if (closedByBrowser) {
      // The browser's close, not the client's: 1001, the code of a page going away, after the thaw.
      assert.deepEqual(ended.map((l) => [l.sid, l.code, l.reason]), [[ra.sid, 1001, 'disconnected']], 'the first socket ended by the browser');
      assert.ok(ended[0].duration >= ms, `it lived through the freeze (${ended[0].duration} ms)`);
      assert.deepEqual(kinds(a, 'state@').map((e) => [e.state, e.reason]), [['reconnecting', 'lost'], ['open', 'resumed']]);
      const back = await b.waitEvent((e) => e.t === 'presence' && e.sid === ra.sid && e.status === 'back', 'A back');
      backOffset = back.offset;
      assert.deepEqual(b.events().filter((e) => e.t === 'presence' && e.sid === ra.sid).map((e) => e.status), ['away', 'back']);
    } else {
      assert.deepEqual(ended, [], 'no connection ended');
      assert.deepEqual(kinds(a, 'state@'), [], 'A: no state change');
      assert.deepEqual(kinds(a, 'state').map((e) => [e.state, e.reason]), [['open', 'new_session']], 'A: open once, never left it');
      assert.equal(kinds(a, 'dial').length, 1, 'A: one connection attempt');
    }
    assert.equal(await sidOf(a), ra.sid, 'the same session');
    assert.deepEqual(a.events().filter((e) => e.t === 'resync'), [], 'no resync: nothing was lost');

    // Every missed event once, in order: all of B's, but A's own back, which the server never sends A.
    const expectA = [rb.offset, ...offsets(b.events()).filter((o) => o !== backOffset)];
    await waitFor(() => offsets(a.events()).length >= expectA.length, { what: 'A caught up', describe: a.describe });
    assert.deepEqual(offsets(a.events()), expectA, 'A: every event once, in order');
    const byOffset = new Map(a.events().map((e) => [e.offset, e]));
    for (const r of rolls) assert.deepEqual(byOffset.get(r.offset).results, r.results, `the roll at ${r.offset}`);
    const next = await b.roll();
    await a.waitEvent((e) => e.t === 'dice_rolled' && e.offset === next.offset, 'a roll after the thaw');
    t.diagnostic(`${rolls.length} rolls in ${ms} ms while A was frozen; at the thaw ` +
      (closedByBrowser ? 'the browser closed A\'s socket (1001) and the client resumed its session' : 'A\'s socket lived on'));

  }, { launch: launchPlainBrowser });
});

// A page whose scripts are stopped while the browser's network stack runs on: paused in the debugger
// (Debugger.pause stops at the next script statement, A's first message handler), as a hung main thread
// would be. Nothing closes its socket; the frames wait for the page in the browser, and when it runs again
// it reads them all, in order, without ever reconnecting.
test('client background: a page whose scripts are stopped stays connected and then gets every missed event once, in order, without reconnecting', { skip, timeout: 60_000 }, async (t) => {
  await withDugout(STALL_ENV, async ({ dugout, browser }) => {
    const tap = tapSockets(browser.context);
    await browser.context.addInitScript(INIT);
    const game = randomUUID();
    const src = srcFor(pages, await moduleURL(dugout, pages, t), dugout, game);
    const { a, ra, b, rb } = await twoPlayers(browser.context, src);

    const cdp = await a.page.context().newCDPSession(a.page);
    let paused = 0;
    cdp.on('Debugger.paused', () => paused++);
    await cdp.send('Debugger.enable');
    await cdp.send('Debugger.pause');
    const { rolls, last, ms } = await playWhileStalled({ a, ra, b, rb, dugout, game });
    assert.equal(paused, 1, 'A stopped in its first message handler');
    await cdp.send('Debugger.resume');
    await a.waitEvent((e) => e.t === 'dice_rolled' && e.offset === last.offset, 'the last roll, after the pause');
    await cdp.send('Debugger.disable');

    assert.deepEqual(offsets(b.events()), rolls.map((r) => r.offset), 'B: its own rolls, in order');
    assert.deepEqual(offsets(a.events()), [rb.offset, ...rolls.map((r) => r.offset)], 'A: B\'s join, then every roll once, in order');
    const byOffset = new Map(a.events().map((e) => [e.offset, e]));
    for (const r of rolls) assert.deepEqual(byOffset.get(r.offset).results, r.results, `the roll at ${r.offset}`);
    assert.deepEqual(kinds(a, 'state').map((e) => [e.state, e.reason]), [['open', 'new_session']], 'A: open once, never left it');
    assert.deepEqual(kinds(a, 'state@'), [], 'A: no state change');
    assert.equal(await a.page.evaluate(() => window.session.state), 'open');
    assert.equal(kinds(a, 'dial').length, 1, 'A: one connection attempt');
    assert.equal(tap.of(a.page).length, 1, 'A: one socket on the wire');
    assert.deepEqual(a.events().filter((e) => e.t === 'resync'), [], 'no resync');
    assert.ok(!dugout.log().includes('connection ended'), 'no connection ended');
    const next = await b.roll();
    await a.waitEvent((e) => e.t === 'dice_rolled' && e.offset === next.offset, 'a roll after the pause');
    t.diagnostic(`${rolls.length} rolls in ${ms} ms while A's scripts were stopped`);

  });
});

// ---------------------------------------------------------------- 4. a hidden page

test('client background: a page hidden for longer than SESSION_TIMEOUT expires with 4000; the client sends no heartbeat of its own', { skip, timeout: 60_000 }, async (t) => {
  const TIMEOUT = 3000;
  await withDugout({
    ...BASE_ENV, PING_INTERVAL: '300ms', PING_TIMEOUT: '1s',
    SESSION_TIMEOUT: `${TIMEOUT}ms`, EXPIRY_WARNING: '1s', EXPIRY_CHECK_INTERVAL: '250ms',
  }, async ({ dugout, browser }) => {
    const ctx = browser.context;
    const tap = tapSockets(ctx);
    await ctx.addInitScript(INIT);
    const game = randomUUID();
    const src = srcFor(pages, await moduleURL(dugout, pages, t), dugout, game);

    // A joins its game in the foreground tab; then the user opens another tab in front of it, and A is hidden
    // by the browser from just after its last message (the join) until after its session's end.
    const a = await openPage(ctx, 'A', src);
    const ra = await a.ready();
    await instrument(a);
    assert.equal(await a.page.evaluate(() => document.visibilityState), 'visible');
    assert.deepEqual(kinds(a, 'visibility'), []);
    await ctx.newPage();
    const hidden = await waitLog(a, (e) => e.kind === 'visibility', 'A hidden by the tab in front');
    assert.equal(hidden.state, 'hidden');
    assert.equal(await a.page.evaluate(() => document.visibilityState), 'hidden');

    // Nobody is there: the warning comes, nothing answers it, and the session expires.
    const warn = await waitLog(a, (e) => e.kind === 'expiring', 'session_expiring', TIMEOUT + 2000);
    const ended = await waitLog(a, (e) => e.kind === 'ended@', 'ended', TIMEOUT + 2000);
    assert.equal(warn.vis, 'hidden');
    assert.deepEqual([ended.code, ended.reason, ended.vis], [4000, 'expired', 'hidden']);
    assert.deepEqual(kinds(a, 'visibility').map((e) => e.state), ['hidden'], 'hidden throughout');
    const sock = tap.of(a.page);
    assert.equal(sock.length, 1);
    assert.deepEqual(sock[0].sent.map((f) => f.type), ['join_game'],
      'no heartbeat, neither on a timer nor on hiding: A sent its join and nothing else');
    assert.equal(sock[0].received.find((f) => f.type === 'goodbye')?.data.code, 4000);
    // The server's account: the connection lived (the browser answered its pings, 300 ms apart, for
    // longer than SESSION_TIMEOUT: a silent one would have ended as timeout) and ended for inactivity.
    const end = await waitFor(() => dugout.log().split('\n').map(parseLine).find((l) => l.message === 'connection ended' && l.sid === ra.sid), {
      what: 'the server\'s line for A\'s end', describe: dugout.log,
    });
    assert.deepEqual([end.reason, end.code], ['expired', 4000]);
    assert.ok(end.duration >= TIMEOUT, `connection lasted ${end.duration} ms`);
    assert.equal((await dugout.health()).total_sessions, 0);

    // The user stays away longer than SESSION_TIMEOUT (by A's clock, since it was hidden: part of the
    // scenario, and a fraction of a second more here, the session having ended SESSION_TIMEOUT after the
    // join), then comes back to the tab: visible again, the client stays ended (only the user's next action,
    // through reconnect(), connects again). The listener runs after the module's own, which would have
    // dialled in that same event.
    await waitFor(() => a.page.evaluate(([h, ms]) => performance.now() - h > ms, [hidden.at, TIMEOUT]), {
      timeout: TIMEOUT + 2000, what: 'A hidden for longer than SESSION_TIMEOUT', describe: a.describe,
    });
    await a.page.bringToFront();
    const back = await waitLog(a, (e) => e.kind === 'visibility@' && e.vis === 'visible', 'visible again');
    assert.deepEqual([back.dials, back.sessionState], [1, 'ended'], 'no reconnect on becoming visible after an expiry');
    t.diagnostic(`hidden ${(ended.at - hidden.at).toFixed(0)} ms before its end; expiring ${warn.expires_in_ms} ms before the end; the connection lasted ${end.duration} ms`);

  }, { launch: launchPlainBrowser });
});
