// Browser end-to-end tests of the client library (client/dugout.js) when the network, not the page,
// ends a connection: page A talks to dugout through a TCP proxy (tcpproxy.mjs) that can cut its link
// with no close frame, lose the server's replies, and keep A away; page B talks to dugout directly.
// A third test duplicates a tab (its sessionStorage), whose copy takes the session over.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { moduleURL, offsets, openPage, startPages } from './clientpage.mjs';
import { browserSuite, launchBrowser, startDugout, waitFor } from './harness.mjs';
import { startProxy } from './tcpproxy.mjs';

const { skip, pages } = await browserSuite('the client drop browser tests', startPages);


const BASE_ENV = { ALLOWED_ORIGINS: '127.0.0.1:*', RESUME_WINDOW: '10s' };

// scenario runs body against a fresh dugout (env added to BASE_ENV), a browser and a proxy in front of
// dugout; it appends dugout's log to any failure and checks that dugout exits 0 on SIGTERM.
async function scenario(t, env, body) {
  const dugout = await startDugout({ ...BASE_ENV, ...env });
  let browser;
  let proxy;
  try {
    browser = await launchBrowser();
    proxy = await startProxy(dugout.addr);
    const game = randomUUID();
    const m = await moduleURL(dugout, pages, t);
    const src = (ws) => `${pages.base}/?${new URLSearchParams({ m, ws, game })}`;
    await body({ dugout, browser, proxy, game, src });
    await browser.close();
    await proxy.close();
    const exit = await dugout.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, 'dugout should exit 0 after SIGTERM');
  } catch (e) {
    e.message += `\n--- dugout log ---\n${dugout.log()}`;
    throw e;
  } finally {
    await browser?.close();
    await proxy?.close();
    await dugout.stop();
  }
}

// twoPages opens A (through the proxy) and then B (direct), both in the game, and waits for A to hear B.
async function twoPages({ browser, proxy, dugout, src }) {
  const a = await openPage(browser.context, 'A', src(proxy.wsURL));
  const ra = await a.ready();
  const b = await openPage(browser.context, 'B', src(dugout.wsURL));
  const rb = await b.ready();
  await a.waitEvent((e) => e.t === 'presence' && e.sid === rb.sid && e.status === 'joined', 'B joined');
  return { a, ra, b, rb };
}

const states = (p) => p.log.filter((e) => e.kind === 'state');
const presenceOf = (p, sid) => p.events().filter((e) => e.t === 'presence' && e.sid === sid).map((e) => e.status);
const membersOf = (p) => p.page.evaluate(() => [...window.game.members.values()].map((m) => `${m.sid}:${m.status}`).sort());
const decide = (p, decision) =>
  p.page.evaluate((d) => window.game.submitDefensive(d).then((r) => ({ id: r.id, ...r.data })), decision);

// rollSeenBy has p roll and waits until every page in seers has that roll's event; returns the reply.
async function rollSeenBy(p, seers) {
  const r = await p.roll();
  for (const s of seers) await s.waitEvent((e) => e.t === 'dice_rolled' && e.offset === r.offset, `${p.name}'s roll at ${r.offset}`);
  return r;
}

// waitState waits for a change of p's state to state, among those after its first `from` changes.
const waitState = (p, state, from = 0) =>
  waitFor(() => states(p).slice(from).find((e) => e.state === state), { timeout: 10_000, what: `${p.name} ${state}`, describe: p.describe });

// connEnded is dugout's log line saying a connection of session sid ended, if there is one yet.
const connEnded = (dugout, sid) =>
  dugout.log().split('\n').map((l) => { try { return JSON.parse(l); } catch { return {}; } })
    .find((l) => l.message === 'connection ended' && l.sid === sid);

// startRoll starts a roll on p without waiting for it, and records in the page how it settles.
const startRoll = (p) =>
  p.page.evaluate(() => {
    window.pendingRoll = { settled: 0 };
    window.game.roll().then(
      (r) => Object.assign(window.pendingRoll, { settled: window.pendingRoll.settled + 1, id: r.id, dup: r.dup === true, ...r.data }),
      (e) => Object.assign(window.pendingRoll, { settled: window.pendingRoll.settled + 1, error: String(e) }),
    );
  });

test('client drops: cut the connection under the page; missed events once, the roll in flight resolves once', { skip, timeout: 90_000 }, async (t) => {
  await scenario(t, {}, async (env) => {
    const { proxy, dugout } = env;
    const { a, ra, b, rb } = await twoPages(env);
    assert.equal(proxy.accepted(), 1, 'A connects through the proxy');
    await rollSeenBy(a, [a, b]);
    await rollSeenBy(b, [a, b]);

    // A's link stops bringing anything back; A sends a roll, which reaches the server (B sees it)
    // but whose reply never reaches A. B plays on, unseen by A.
    const seenBeforeCut = a.events().length;
    proxy.blackhole();
    await startRoll(a);
    const rollA = await b.waitEvent((e) => e.t === 'dice_rolled' && e.sid === ra.sid && e.offset > rb.offset + 2, 'A\'s roll in flight');
    const decision = await decide(b, { shift: 'deep' });
    await rollSeenBy(b, [b]);
    assert.equal(a.events().length, seenBeforeCut, 'the blackholed link brought A nothing');
    assert.equal(await a.page.evaluate(() => window.pendingRoll.settled), 0, 'the roll\'s reply did not reach A');

    // Cut: no close frame either way. New links wait, so A stays away while B rolls again.
    const before = states(a).length;
    proxy.hold();
    proxy.cut();
    const lost = await waitState(a, 'reconnecting', before);
    assert.notEqual(lost.reason, 'taken_over');
    const away = await b.waitEvent((e) => e.t === 'presence' && e.sid === ra.sid && e.status === 'away', 'A away');
    const ended = await waitFor(() => connEnded(dugout, ra.sid), { what: 'dugout to log A\'s connection ended', describe: dugout.log });
    assert.equal(ended.code, 1006, 'the server saw the link cut with no close frame');
    const rollWhileAway = await rollSeenBy(b, [b]);
    await waitFor(() => proxy.accepted() === 2, { what: 'A\'s next attempt at the proxy', describe: a.describe });
    proxy.release();

    const opened = await waitState(a, 'open', before);
    assert.equal(opened.reason, 'resumed');
    assert.equal(await a.page.evaluate(() => window.session.sid), ra.sid, 'the same session after the cut');
    const back = await b.waitEvent((e) => e.t === 'presence' && e.sid === ra.sid && e.status === 'back', 'A back');
    assert.ok(back.offset > rollWhileAway.offset);

    // The roll in flight: retried with its id after the resume, answered with the roll that ran.
    const reply = await waitFor(() => a.page.evaluate(() => window.pendingRoll.settled > 0 && window.pendingRoll), {
      timeout: 10_000, what: 'A\'s roll in flight to settle', describe: a.describe,
    });
    assert.equal(reply.error, undefined);
    assert.equal(reply.dup, true, 'the retry got the remembered reply: the roll ran once');
    assert.equal(reply.offset, rollA.offset);
    assert.deepEqual(reply.results, rollA.results);

    // The game goes on both ways; then compare what each page processed.
    const last = await rollSeenBy(b, [a, b]);
    const lastA = await rollSeenBy(a, [a, b]);
    assert.equal(await a.page.evaluate(() => window.pendingRoll.settled), 1, 'the roll in flight settled once');
    const eb = b.events();
    const ea = a.events();
    const expectB = [];
    for (let o = rb.offset + 1; o <= lastA.offset; o++) expectB.push(o);
    assert.deepEqual(offsets(eb), expectB, 'B: every event once, in order');
    assert.deepEqual(offsets(ea), [rb.offset, ...expectB.filter((o) => o !== back.offset)], 'A: every event once, in order, across the cut');
    const bByOffset = new Map(eb.map((e) => [e.offset, e]));
    for (const e of ea.filter((e) => e.offset > rb.offset)) assert.deepEqual(e, bByOffset.get(e.offset), `offset ${e.offset} the same on both pages`);
    assert.equal(ea.filter((e) => e.t === 'resync').length, 0, 'no resync: the history covered the gap');
    assert.ok(ea.some((e) => e.t === 'defensive_decision' && e.offset === decision.offset), 'A got B\'s decision');
    assert.equal(eb.filter((e) => e.t === 'dice_rolled' && e.sid === ra.sid).length, 3, 'B saw each of A\'s three rolls once');
    assert.deepEqual(presenceOf(b, ra.sid), ['away', 'back']);
    assert.deepEqual(await membersOf(a), await membersOf(b));
    t.diagnostic(`A: ${JSON.stringify(offsets(ea))}; roll in flight at ${rollA.offset}; away ${away.offset} (${away.reason}), back ${back.offset}, last ${last.offset}`);
  });
});

test('client drops: a history too short for the gap; the resume is not recovered, the page resyncs, the game goes on', { skip, timeout: 90_000 }, async (t) => {
  const HISTORY = 4;
  await scenario(t, { GAME_HISTORY_FRAMES: String(HISTORY) }, async (env) => {
    const { proxy, dugout, game } = env;
    const { a, ra, b, rb } = await twoPages(env);

    // A is cut off and kept away while B makes more events than the game's history holds.
    const before = states(a).length;
    proxy.hold();
    proxy.cut();
    await waitState(a, 'reconnecting', before);
    const away = await b.waitEvent((e) => e.t === 'presence' && e.sid === ra.sid && e.status === 'away', 'A away');
    const missed = [];
    for (let i = 0; i < HISTORY + 1; i++) missed.push(await rollSeenBy(b, [b]));
    assert.ok(missed.at(-1).offset - rb.offset > HISTORY, 'more events since A\'s position than the history holds');
    await waitFor(() => proxy.accepted() === 2, { what: 'A\'s next attempt at the proxy', describe: a.describe });
    proxy.release();

    // The resume takes the session up again, but cannot replay the gap: the page is told to resync.
    const opened = await waitState(a, 'open', before);
    assert.equal(opened.reason, 'resumed');
    assert.equal(await a.page.evaluate(() => window.session.sid), ra.sid, 'the same session, resumed');
    const back = await b.waitEvent((e) => e.t === 'presence' && e.sid === ra.sid && e.status === 'back', 'A back');
    const resync = await a.waitEvent((e) => e.t === 'resync', 'resync');
    assert.equal(resync.reason, 'not_recovered');
    assert.equal(resync.offset, back.offset, 'the page\'s new position is the game\'s latest, its own back included');
    const both = [`${ra.sid}:connected`, `${rb.sid}:connected`].sort();
    assert.deepEqual(await membersOf(a), both, 'the resync\'s members');

    // The game goes on: B's next roll reaches A, A's roll reaches B.
    const next = await rollSeenBy(b, [a, b]);
    const fromA = await rollSeenBy(a, [a, b]);
    assert.equal(next.offset, back.offset + 1);
    const ea = a.events();
    assert.deepEqual(ea.map((e) => [e.t, e.offset]), [['presence', rb.offset], ['resync', back.offset], ['dice_rolled', next.offset], ['dice_rolled', fromA.offset]],
      'A: nothing of the gap replayed, nothing twice');
    assert.deepEqual(offsets(b.events()).slice(-2), [next.offset, fromA.offset]);
    const h = await dugout.health();
    assert.equal(h.connected_sessions, 2);
    assert.equal(h.sessions_per_game[game], 2);
    t.diagnostic(`history ${HISTORY}; A away at ${away.offset}, missed ${missed.length} rolls, back at ${back.offset}, resync at ${resync.offset}`);
  });
});

test('client drops: a duplicated tab takes the session over; the old page ends (4001) and stays ended', { skip, timeout: 90_000 }, async (t) => {
  await scenario(t, {}, async (env) => {
    const { browser, dugout, game, src } = env;
    const a = await openPage(browser.context, 'A', src(dugout.wsURL));
    const ra = await a.ready();
    const b = await openPage(browser.context, 'B', src(dugout.wsURL));
    const rb = await b.ready();
    await rollSeenBy(a, [a, b]);
    let socketsOfA = 0;
    a.page.on('websocket', () => socketsOfA++);

    // Duplicate A: a new tab that starts with a copy of A's sessionStorage, as Chromium's "Duplicate" does.
    const stored = await a.page.evaluate(() =>
      Object.fromEntries(Object.keys(sessionStorage).filter((k) => k.startsWith('dugout:')).map((k) => [k, sessionStorage.getItem(k)])));
    assert.equal(Object.keys(stored).length, 1, 'A keeps its session under one dugout: key');
    assert.ok(JSON.parse(Object.values(stored)[0]).resumeToken, 'with its resume token');
    const duplicating = {
      async newPage() {
        const page = await browser.context.newPage();
        await page.addInitScript((entries) => {
          for (const [k, v] of Object.entries(entries)) sessionStorage.setItem(k, v);
        }, stored);
        return page;
      },
    };
    const c = await openPage(duplicating, 'C', src(dugout.wsURL));
    const rc = await c.ready();
    assert.equal(rc.sid, ra.sid, 'the duplicate resumed A\'s session');

    const ended = await waitFor(() => a.log.find((e) => e.kind === 'ended'), { timeout: 10_000, what: 'A ended', describe: a.describe });
    assert.deepEqual({ code: ended.code, reason: ended.reason }, { code: 4001, reason: 'taken_over' });
    assert.equal(states(a).at(-1).state, 'ended');
    assert.equal(await a.page.evaluate(() => window.session.state), 'ended');

    // A stays ended: no new socket, no state change, the server's counts unchanged, for longer than
    // A's backoff cap (1000 ms), after which any retry of A's would have been made.
    const statesAtEnd = states(a).length;
    const socketsAtEnd = socketsOfA;
    const until = Date.now() + 1500;
    await waitFor(async () => {
      const h = await dugout.health();
      const seen = { total: h.total_sessions, connected: h.connected_sessions, seats: h.sessions_per_game[game], sockets: socketsOfA, states: states(a).length };
      assert.deepEqual(seen, { total: 2, connected: 2, seats: 2, sockets: socketsAtEnd, states: statesAtEnd }, 'A reconnected by itself, or the counts moved');
      return Date.now() >= until;
    }, { timeout: 5000, what: 'A to stay ended past its backoff cap', describe: a.describe });

    // Then a roll from the duplicate, seen by B and C: whatever the takeover told B came before it.
    const roll = await rollSeenBy(c, [b, c]);
    assert.deepEqual(presenceOf(b, ra.sid), [], 'B heard nothing of the takeover: no left, no away');
    assert.equal(a.events().filter((e) => e.offset >= roll.offset).length, 0, 'the ended page gets nothing more');
    assert.deepEqual(await membersOf(b), [`${ra.sid}:connected`, `${rb.sid}:connected`].sort());
    assert.equal(await c.page.evaluate(() => window.session.state), 'open');
    assert.equal(c.log.filter((e) => e.kind === 'ended').length, 0);
    t.diagnostic(`A ${ra.sid} taken over by its duplicate; A opened ${socketsOfA} sockets after its end; C rolled at ${roll.offset}`);
  });
});
