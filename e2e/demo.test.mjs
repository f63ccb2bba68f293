// Browser end-to-end test of the demo page (demo/index.html, served by dugout at /demo/): two Chromium
// pages open the same game from the URL hash, join it, roll, submit decisions, and one cuts its
// connection; the other sees it away, then back. Run with `node --test demo.test.mjs`.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { browserSuite, launchBrowser, startDugout, waitFor } from './harness.mjs';

const { skip } = await browserSuite('the demo browser test');

const SCREENSHOT = '/tmp/demo.png';


// openDemo opens the demo page of game on a new page and collects its console and page errors
// (a Content-Security-Policy violation is reported on the console as an error).
async function openDemo(context, dugout, game, name) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.location().url.endsWith('/favicon.ico')) return; // the browser asks for one; the page has none
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.goto(dugout.url(`/demo/#${game}`));
  const logEntries = () =>
    page.$$eval('#log li', (lis) => lis.map((li) => ({ ...li.dataset, offset: li.querySelector('.off').textContent, text: li.textContent })));
  const p = {
    name,
    page,
    problems,
    logEntries,
    members: () => page.$$eval('#members li[data-sid]', (lis) => lis.map((li) => `${li.dataset.sid}:${li.dataset.status}`).sort()),
    sid: () => page.textContent('#sid'),
    describe: async () => `${name} log: ${JSON.stringify(await logEntries().catch((e) => e.message))}\n${name} problems: ${problems.join(' | ')}`,
    // waitLog waits for the first log entry pred accepts and returns it.
    waitLog(pred, what, timeout = 10_000) {
      return waitFor(async () => (await logEntries()).find(pred), { timeout, what: `${name}: ${what}`, describe: p.describe });
    },
  };
  return p;
}

test('demo: two pages join one game from the URL hash, roll, decide, and one cuts its connection', { skip, timeout: 90_000 }, async (t) => {
  const dugout = await startDugout({ RESUME_WINDOW: '10s' });
  let browser;
  try {
    const res = await fetch(dugout.url('/demo/'));
    assert.equal(res.status, 200, 'dugout serves the demo page at /demo/');
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const csp = res.headers.get('content-security-policy');
    assert.match(csp ?? '', /default-src 'self'/, 'the page runs under a Content-Security-Policy');
    t.diagnostic(`/demo/ Content-Security-Policy: ${csp}`);

    browser = await launchBrowser();
    const game = randomUUID();
    const a = await openDemo(browser.context, dugout, game, 'A');
    const b = await openDemo(browser.context, dugout, game, 'B');
    for (const p of [a, b]) {
      assert.equal(await p.page.inputValue('#game'), game, `${p.name}: the game id comes from the URL hash`);
      await waitFor(async () => (await p.page.textContent('#state')) === 'open', { what: `${p.name} open`, describe: p.describe });
    }

    // Both join (by clicking, as a newcomer would); each sees both members connected.
    await a.page.getByRole('button', { name: 'Join' }).click();
    await a.waitLog((e) => e.type === 'joined', 'joined');
    await b.page.getByRole('button', { name: 'Join' }).click();
    await b.waitLog((e) => e.type === 'joined', 'joined');
    const sa = await a.sid();
    const sb = await b.sid();
    assert.notEqual(sa, sb);
    const both = [`${sa}:connected`, `${sb}:connected`].sort();
    for (const p of [a, b]) {
      await waitFor(async () => JSON.stringify(await p.members()) === JSON.stringify(both), {
        what: `${p.name}: both members connected`,
        describe: async () => `${p.name} members: ${JSON.stringify(await p.members())}`,
      });
    }
    await a.waitLog((e) => e.type === 'presence' && e.sid === sb && e.status === 'joined', 'B joined');
    assert.equal(new URL(a.page.url()).hash, `#${game}`, 'the game id stays in the URL hash');

    // A rolls: both logs show the same dice_rolled (offset and results), once.
    await a.page.getByRole('button', { name: /Roll dice/ }).click();
    const rollA = await a.waitLog((e) => e.type === 'dice_rolled', 'A\'s roll');
    const rollB = await b.waitLog((e) => e.type === 'dice_rolled', 'A\'s roll');
    assert.equal(rollA.sid, sa);
    assert.equal(rollB.offset, rollA.offset);
    assert.equal(rollB.results, rollA.results);
    assert.match(rollA.results, /^\d+,\d+,\d+,\d+$/, 'four dice');
    t.diagnostic(`roll ${rollA.offset}: [${rollA.results}]`);

    // B submits a defensive and an offensive decision; A sees both, in order.
    await b.page.selectOption('#defense', 'infield_in');
    await b.page.getByRole('button', { name: 'Submit defensive decision' }).click();
    await b.page.selectOption('#offense', 'steal');
    await b.page.getByRole('button', { name: 'Submit offensive decision' }).click();
    const def = await a.waitLog((e) => e.type === 'defensive_decision', 'B\'s defensive decision');
    const off = await a.waitLog((e) => e.type === 'offensive_decision', 'B\'s offensive decision');
    assert.match(def.text, /"shift":"infield_in"/);
    assert.match(off.text, /"play":"steal"/);
    assert.ok(Number(off.offset.slice(1)) > Number(def.offset.slice(1)));

    // A cuts its connection: B sees A away, then back; A resumes the same session.
    await a.page.getByRole('button', { name: 'Cut connection' }).click();
    const away = await b.waitLog((e) => e.type === 'presence' && e.sid === sa && e.status === 'away', 'A away');
    const back = await b.waitLog((e) => e.type === 'presence' && e.sid === sa && e.status === 'back', 'A back');
    assert.ok(Number(back.offset.slice(1)) > Number(away.offset.slice(1)));
    await a.waitLog((e) => e.type === 'state' && e.state === 'open' && e.reason === 'resumed', 'A resumed');
    assert.equal(await a.sid(), sa, 'A resumed the same session');
    // The catch-up: A gets its own away event (sent while it had no connection), once.
    const ownAway = await a.waitLog((e) => e.type === 'presence' && e.sid === sa && e.status === 'away', 'A\'s own away (catch-up)');
    assert.equal(ownAway.offset, away.offset);
    t.diagnostic(`away ${away.offset} (${away.text.trim()}), back ${back.offset}`);

    // One more roll, from B, after the resume; then check nothing was shown twice.
    await b.page.getByRole('button', { name: /Roll dice/ }).click();
    const lastB = await b.waitLog((e) => e.type === 'dice_rolled' && e.sid === sb, 'B\'s roll');
    const lastA = await a.waitLog((e) => e.type === 'dice_rolled' && e.sid === sb, 'B\'s roll');
    assert.equal(lastA.offset, lastB.offset);
    assert.equal(lastA.results, lastB.results);
    for (const p of [a, b]) {
      await waitFor(async () => JSON.stringify(await p.members()) === JSON.stringify(both), {
        what: `${p.name}: both members connected again`,
        describe: async () => `${p.name} members: ${JSON.stringify(await p.members())}`,
      });
      const events = (await p.logEntries()).filter((e) => e.offset !== '');
      const offsets = events.map((e) => Number(e.offset.slice(1)));
      assert.deepEqual(offsets, [...new Set(offsets)].sort((x, y) => x - y), `${p.name}: offsets increasing, none twice`);
      assert.equal(events.filter((e) => e.type === 'dice_rolled' && e.offset === rollA.offset).length, 1, `${p.name}: A's roll once`);
      assert.deepEqual(p.problems, [], `${p.name}: no console errors (CSP violations among them)`);
    }
    assert.deepEqual((await b.logEntries()).filter((e) => e.type === 'presence' && e.sid === sa).map((e) => e.status), ['away', 'back']);

    await a.page.setViewportSize({ width: 1100, height: 900 });
    await a.page.screenshot({ path: SCREENSHOT, fullPage: true });
    t.diagnostic(`screenshot of A: ${SCREENSHOT}`);

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
});
