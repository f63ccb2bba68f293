// Browser end-to-end test of the operator's dashboard (dashboard/, served by dugout at /dashboard): Chromium
// opens it, a second page plays a load (WebSockets that join games, roll, close and resume), and the charts
// follow; the operator token reveals the largest games and a wrong one shows an error. Screenshots at a
// laptop's and a phone's size go to e2e/screenshots/ (ignored by git). Run with `node --test dashboard.test.mjs`.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';

import { REPO_ROOT, browserSuite, launchBrowser, startDugout, startPageServer, waitFor } from './harness.mjs';

const { skip } = await browserSuite('the dashboard browser test');

const SCREENSHOTS = path.join(REPO_ROOT, 'e2e', 'screenshots');
const TOKEN = 'operator-token-for-the-dashboard-e2e-0123456789';


// The load, run in a page of another origin: n WebSockets, each joins its game and rolls every 250 ms.
// window.load keeps what the test needs (sessions, resume tokens, errors).
function playLoad({ wsURL, games }) {
  window.load = { open: 0, sessions: [], errors: [], sockets: [], resumed: 0 };
  const L = window.load;
  games.forEach((game, i) => {
    const ws = new WebSocket(wsURL);
    L.sockets.push(ws);
    let roll = 0;
    ws.onmessage = (e) => {
      const f = JSON.parse(e.data);
      if (f.type === 'session') {
        L.sessions[i] = f.data;
        ws.send(JSON.stringify({ type: 'join_game', id: 'j' + i, data: { game_id: game } }));
      } else if (f.type === 'game_joined') {
        L.open++;
        ws.timer = setInterval(() => {
          ws.send(JSON.stringify({ type: 'roll_dice', id: `r${i}-${++roll}`, data: { game_id: game, dice: [6, 6] } }));
        }, 250);
      } else if (f.type === 'error') {
        L.errors.push(f);
      }
    };
    ws.onclose = () => clearInterval(ws.timer);
  });
}

test('dashboard: the charts follow a load; the operator token shows the largest games', { skip, timeout: 120_000 }, async (t) => {
  const dugout = await startDugout({ OPERATOR_TOKEN: TOKEN, ALLOWED_ORIGINS: '127.0.0.1:*', RESUME_WINDOW: '30s', PING_INTERVAL: '500ms' });
  const pages = await startPageServer();
  let browser;
  try {
    const res = await fetch(dugout.url('/dashboard'));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-security-policy') ?? '', /^default-src 'self'/);

    browser = await launchBrowser();
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1280, height: 800 });
    const origin = new URL(dugout.url('/')).origin;
    const requests = [];
    const problems = [];
    page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization }));
    page.on('console', (m) => {
      const url = m.location().url ?? '';
      if (url.endsWith('/favicon.ico')) return; // the browser asks for one; the page has none
      if (url.endsWith('/dashboard/data') && /\b401\b/.test(m.text())) return; // the wrong token's answer, on purpose
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    await page.goto(dugout.url('/dashboard'));

    const last = (id) => page.$eval(`#chart-${id}`, (c) => ({ points: Number(c.dataset.points), last: JSON.parse(c.dataset.last ?? '{}') }));
    const describe = async () => `charts: ${JSON.stringify(await Promise.all(['connections', 'frames', 'ping', 'closes', 'resumes', 'hubstep'].map(last)))}\nproblems: ${problems.join(' | ')}`;
    await waitFor(async () => (await last('connections')).points >= 1, { what: 'a first reading', describe });
    assert.deepEqual((await last('connections')).last, { open: 0 });
    const pathBefore = await page.getAttribute('#chart-connections path', 'd');

    // The load: 12 sessions in 4 games of 5, 3, 2 and 2 seats.
    const games = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const seats = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3].map((g) => games[g]);
    const loader = await browser.context.newPage();
    await loader.goto(pages.url);
    await loader.evaluate(playLoad, { wsURL: dugout.wsURL, games: seats });
    await waitFor(() => loader.evaluate(() => window.load.open === 12), { what: '12 sessions joined', timeout: 10_000 });

    await waitFor(async () => (await last('connections')).last.open === 12, { what: 'the connections chart at 12', timeout: 10_000, describe });
    await waitFor(async () => (await last('frames')).last.in > 0 && (await last('frames')).last.out > 0, { what: 'frames per second', timeout: 10_000, describe });
    await waitFor(async () => (await last('ping')).last.p50 > 0, { what: 'a ping round trip', timeout: 10_000, describe });
    await waitFor(async () => (await last('hubstep')).last.p99 > 0, { what: 'the hub step time', timeout: 10_000, describe });
    assert.notEqual(await page.getAttribute('#chart-connections path', 'd'), pathBefore, 'the connections line moved');
    assert.equal((await last('sessions')).last.connected, 12);
    assert.equal((await last('games')).last['with a seat'], 4);

    // Two sockets close (1000, by the page); one of them resumes on a new socket: a close and a resume.
    const token = await loader.evaluate(() => {
      const L = window.load;
      L.sockets[10].close(1000);
      // The new socket waits for the old one's close: by then the server has let the session go away,
      // so the resume is a resume and not a takeover of a socket it has not seen close yet.
      L.sockets[11].addEventListener('close', () => {
        const ws = new WebSocket(L.sockets[0].url);
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          if (f.type === 'session') ws.send(JSON.stringify({ type: 'resume', data: { resume_token: L.sessions[11].resume_token, games: {} } }));
          if (f.type === 'resumed') L.resumed++;
        };
      });
      L.sockets[11].close(4100, 'going');
      return L.sessions[11].resume_token;
    });
    assert.ok(token, 'the session frame carried a resume token');
    await waitFor(() => loader.evaluate(() => window.load.resumed === 1), { what: 'the resume', timeout: 10_000 });
    await waitFor(async () => Object.keys((await last('closes')).last).length > 0, { what: 'a close on the chart', timeout: 10_000, describe });
    await waitFor(async () => (await last('resumes')).last.resumed > 0, { what: 'a resume on the chart', timeout: 10_000, describe });
    t.diagnostic(`closes: ${JSON.stringify((await last('closes')).last)}; resumes: ${JSON.stringify((await last('resumes')).last)}`);

    // A wrong token: an error, no games.
    assert.equal(await page.isVisible('#topGames'), false, 'no largest games without the token');
    await page.fill('#token', TOKEN + 'x');
    await page.click('#useToken');
    await waitFor(async () => /401/.test((await page.textContent('#error')) ?? '') && (await page.isVisible('#error')), { what: 'the 401 error', describe });
    assert.equal(await page.isVisible('#topGames'), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('dugout.operatorToken')), null, 'a refused token is forgotten');

    // The right one: the largest games, largest first.
    await page.fill('#token', TOKEN);
    await page.click('#useToken');
    await waitFor(() => page.isVisible('#topGames'), { what: 'the largest games', describe });
    await waitFor(async () => (await page.isHidden('#error')), { what: 'the error to go', describe });
    const rows = await page.$$eval('#topGamesBody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    assert.equal(rows.length, 4, JSON.stringify(rows));
    assert.deepEqual(rows[0].slice(0, 3), [games[0], '5', '0']);
    assert.deepEqual(rows[1].slice(0, 2), [games[1], '3']);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('dugout.operatorToken')), TOKEN);

    await mkdir(SCREENSHOTS, { recursive: true });
    const laptop = path.join(SCREENSHOTS, 'dashboard-1280x800.png');
    await page.screenshot({ path: laptop });
    await page.setViewportSize({ width: 390, height: 844 });
    const phone = path.join(SCREENSHOTS, 'dashboard-390x844.png');
    await page.screenshot({ path: phone, fullPage: true });
    t.diagnostic(`screenshots: ${laptop} ${phone}`);
    // Nothing overflows the phone's width.
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll at 390 px');

    for (const r of requests) {
      assert.equal(new URL(r.url).origin, origin, `a request left the server's origin: ${r.url}`);
      assert.ok(!r.url.includes(TOKEN.slice(0, 16)), `the token in a URL: ${r.url}`);
    }
    assert.ok(requests.some((r) => r.url.endsWith('/dashboard/data') && r.auth === `Bearer ${TOKEN}`), 'the token went as a header');
    assert.deepEqual(problems, [], 'no console errors (CSP violations among them)');
    assert.deepEqual(await loader.evaluate(() => window.load.errors), [], 'the load got no error frame');
    await browser.close();
    const h = await dugout.health();
    t.diagnostic(`health at the end: ${h.total_sessions} sessions`);
  } finally {
    await browser?.close();
    await pages.close();
    const r = await dugout.stop();
    if (r.code !== 0) t.diagnostic(`dugout exit ${JSON.stringify(r)}:\n${dugout.log()}`);
  }
});
