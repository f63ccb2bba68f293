// Browser end-to-end test of the client library (client/dugout.js): two Chromium pages import the
// module, join one game, roll, and one page reloads and resumes its session. Run with `npm test`.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { moduleURL, offsets, openPage, startPages } from './clientpage.mjs';
import { browserSuite, withDugout } from './harness.mjs';

const { skip, pages } = await browserSuite('the client browser tests', startPages);




test('client: two pages join, roll, one reloads and resumes; every event once, in order', { skip, timeout: 60_000 }, async (t) => {
  await withDugout({ ALLOWED_ORIGINS: '127.0.0.1:*', RESUME_WINDOW: '10s' }, async ({ dugout, browser }) => {
    const game = randomUUID();
    const m = await moduleURL(dugout, pages, t);
    const src = `${pages.base}/?${new URLSearchParams({ m, ws: dugout.wsURL, game })}`;

    const a = await openPage(browser.context, 'A', src);
    const ra = await a.ready();
    const b = await openPage(browser.context, 'B', src);
    const rb = await b.ready();
    assert.notEqual(ra.sid, rb.sid);
    assert.equal(ra.offset, 1, 'A joined first');
    assert.equal(rb.offset, 2);

    // Presence: A hears B join; both see both as members.
    await a.waitEvent((e) => e.t === 'presence' && e.sid === rb.sid && e.status === 'joined', 'B joined');
    const membersOf = (p) => p.page.evaluate(() => [...window.game.members.values()].map((m) => `${m.sid}:${m.status}`).sort());
    const both = [`${ra.sid}:connected`, `${rb.sid}:connected`].sort();
    assert.deepEqual(await membersOf(a), both);
    assert.deepEqual(await membersOf(b), both);

    // A rolls: its reply and both pages' events show the same dice.
    const rollA = await a.roll();
    assert.equal(rollA.dup, undefined);
    for (const p of [a, b]) {
      const e = await p.waitEvent((e) => e.t === 'dice_rolled' && e.offset === rollA.offset, 'A\'s roll');
      assert.deepEqual(e.results, rollA.results);
    }
    const rollB = await b.roll([2, 100]);
    await a.waitEvent((e) => e.t === 'dice_rolled' && e.offset === rollB.offset, 'B\'s roll');

    // A reloads; the new page is held at its gate, so A stays away while B rolls.
    let release;
    pages.ctl.holdNext = new Promise((r) => (release = r));
    const reloading = a.page.reload();
    const away = await b.waitEvent((e) => e.t === 'presence' && e.sid === ra.sid && e.status === 'away', 'A away');
    const rollWhileAway = await b.roll();
    release();
    await reloading;
    const ra2 = await a.ready(2);
    assert.equal(ra2.sid, ra.sid, 'the reloaded page resumed the same session');
    const back = await b.waitEvent((e) => e.t === 'presence' && e.sid === ra.sid && e.status === 'back', 'A back');
    assert.ok(back.offset > away.offset);
    await a.waitEvent((e) => e.t === 'dice_rolled' && e.offset === rollWhileAway.offset, 'the roll A missed');

    // One more roll after the resume, seen by both.
    const last = await b.roll();
    for (const p of [a, b]) await p.waitEvent((e) => e.t === 'dice_rolled' && e.offset === last.offset, 'the last roll');
    assert.deepEqual(await membersOf(b), both);
    assert.deepEqual(await membersOf(a), both);

    // Nothing lost or repeated: B saw every offset after its join; A saw the same plus B's join, but
    // not its own "back" (the server never sends it), across the reload.
    const eb = b.events();
    const ea = a.events();
    const expectB = [];
    for (let o = rb.offset + 1; o <= last.offset; o++) expectB.push(o);
    assert.deepEqual(offsets(eb), expectB, 'B: every event once, in order');
    const expectA = [rb.offset, ...expectB.filter((o) => o !== back.offset)];
    assert.deepEqual(offsets(ea), expectA, 'A: every event once, in order, across the reload');
    assert.equal(ea.filter((e) => e.t === 'resync').length, 0, 'no resync: the resume recovered everything');
    const bByOffset = new Map(eb.map((e) => [e.offset, e]));
    for (const e of ea) {
      if (e.offset === rb.offset) continue;
      assert.deepEqual(e, bByOffset.get(e.offset), `offset ${e.offset} the same on both pages`);
    }
    assert.deepEqual(eb.filter((e) => e.sid === ra.sid && e.t === 'presence').map((e) => e.status), ['away', 'back']);
    t.diagnostic(`A: ${JSON.stringify(offsets(ea))}, B: ${JSON.stringify(offsets(eb))}, away ${away.offset} (${away.reason}), back ${back.offset}`);

  });
});

test('client: a roll in flight when the connection drops is retried with its id and resolves once', { skip, timeout: 60_000 }, async (t) => {
  await withDugout({ ALLOWED_ORIGINS: '127.0.0.1:*', RESUME_WINDOW: '10s' }, async ({ dugout, browser }) => {
    const game = randomUUID();
    const m = await moduleURL(dugout, pages, t);
    const src = `${pages.base}/?${new URLSearchParams({ m, ws: dugout.wsURL, game })}`;
    const a = await openPage(browser.context, 'A', src);
    const ra = await a.ready();
    const b = await openPage(browser.context, 'B', src);
    await b.ready();
    await a.waitEvent((e) => e.t === 'presence' && e.status === 'joined', 'B joined');

    // The roll goes out, then the socket is dropped (close code 4999: a lost connection, not a goodbye) in
    // the same tick, so the reply can never reach this socket: the client must resume and retry.
    const reply = await a.page.evaluate(async () => {
      const s = window.session;
      let settled = 0;
      const p = window.game.roll([20]).then((r) => (settled++, r));
      s.drop();
      const r = await p;
      await new Promise((res) => setTimeout(res, 300));
      return { settled, id: r.id, dup: r.dup === true, state: s.state, sid: s.sid, ...r.data };
    });
    assert.equal(reply.settled, 1);
    assert.equal(reply.dup, true, 'the roll ran before the drop: the retry gets the remembered reply');
    assert.equal(reply.sid, ra.sid, 'the same session after the resume');
    assert.equal(reply.state, 'open');
    t.diagnostic(`retried roll ${reply.id}: dup=${reply.dup}, offset ${reply.offset}`);
    const onB = await b.waitEvent((e) => e.t === 'dice_rolled' && e.offset === reply.offset, 'the roll');
    assert.deepEqual(onB.results, reply.results, 'the retry answers with the roll that ran');
    const states = a.log.filter((e) => e.kind === 'state').map((e) => e.state);
    assert.deepEqual(states.slice(-2), ['reconnecting', 'open']);

    // Settle, then: one dice_rolled on each page, and no offset twice.
    const after = await b.roll();
    for (const p of [a, b]) await p.waitEvent((e) => e.t === 'dice_rolled' && e.offset === after.offset, 'the next roll');
    for (const p of [a, b]) {
      const evs = p.events();
      assert.equal(evs.filter((e) => e.t === 'dice_rolled' && e.offset === reply.offset).length, 1, `${p.name}: the roll once`);
      const os = offsets(evs);
      assert.deepEqual(os, [...new Set(os)].sort((x, y) => x - y), `${p.name}: offsets increasing, none twice`);
    }
  });
});
