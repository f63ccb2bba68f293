// Shared parts of the client library's browser tests: a page that imports dugout's own
// /client/dugout.js as a game page would, a server for it, and a handle on each open page.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';

import { waitFor } from './harness.mjs';

// The page: imports the module from ?m=, connects to ?ws=, joins ?game=, and reports every state
// change and game event to the test through window.record (a Playwright binding, kept across reloads).
export const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>dugout client e2e</title></head><body>
<script type="module">
const q = new URLSearchParams(location.search);
try {
  await fetch('/gate', { cache: 'no-store' }); // lets the test keep a reloaded page from connecting for a while
  const { connect } = await import(q.get('m'));
  const s = connect(q.get('ws'), { backoffBase: 200, backoffCap: 1000 });
  window.session = s;
  s.on('state', (e) => window.record({ kind: 'state', ...e }));
  s.on('ended', (e) => window.record({ kind: 'ended', ...e }));
  const g = await s.join(q.get('game'));
  window.game = g;
  for (const t of ['presence', 'dice_rolled', 'defensive_decision', 'offensive_decision', 'resync']) {
    g.on(t, (d) => window.record({ kind: 'event', t, offset: d.offset, sid: d.sid, status: d.status, reason: d.reason, results: d.results }));
  }
  window.record({ kind: 'ready', sid: s.sid, offset: g.cursor.offset });
} catch (e) {
  window.record({ kind: 'fail', message: String(e && e.stack || e) });
}
</script></body></html>`;

// startPages serves the page, its /gate (which can be held back, to keep a reloaded page away for a
// while) and, as a fallback, the module itself.
export async function startPages() {
  const ctl = { holdNext: null };
  const server = createServer(async (req, res) => {
    const u = new URL(req.url, 'http://x');
    if (req.method === 'GET' && u.pathname === '/gate') {
      const hold = ctl.holdNext;
      ctl.holdNext = null;
      if (hold) await hold;
      res.writeHead(204, { 'Cache-Control': 'no-store' }).end();
      return;
    }
    if (req.method === 'GET' && u.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(PAGE);
      return;
    }
    res.writeHead(404).end('not found');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    ctl,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}

// moduleURL is dugout's own /client/dugout.js, checked to be importable by a page of another
// origin (a module script is fetched with CORS): the pages import the module as a game page would.
export async function moduleURL(dugout, pages, t) {
  const res = await fetch(dugout.url('/client/dugout.js'), { headers: { Origin: pages.base } });
  const body = await res.text();
  const acao = res.headers.get('access-control-allow-origin');
  assert.equal(res.status, 200, 'dugout serves /client/dugout.js');
  assert.ok(body.includes('export function connect'), 'it is the client module');
  assert.ok(acao === '*' || acao === pages.base, `Access-Control-Allow-Origin ${acao} lets the page import it`);
  assert.match(res.headers.get('content-type') ?? '', /^text\/javascript/);
  t.diagnostic('module imported from dugout at /client/dugout.js');
  return dugout.url('/client/dugout.js');
}

export async function openPage(context, name, src) {
  const page = await context.newPage();
  const log = [];
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  await page.exposeFunction('record', (e) => {
    log.push(e);
  });
  await page.goto(src);
  const p = {
    name,
    page,
    log,
    events: () => log.filter((e) => e.kind === 'event'),
    describe: async () => `${name} log: ${JSON.stringify(log)}\n${name} console: ${consoleLines.join(' | ')}`,
    async ready(n = 1) {
      return waitFor(() => {
        const fail = log.find((e) => e.kind === 'fail');
        if (fail) throw new Error(`${name}: ${fail.message}`);
        return log.filter((e) => e.kind === 'ready')[n - 1];
      }, { timeout: 10_000, what: `${name} ready #${n}`, describe: p.describe });
    },
    waitEvent(pred, what) {
      return waitFor(() => p.events().find(pred), { timeout: 10_000, what: `${name}: ${what}`, describe: p.describe });
    },
    roll: () => page.evaluate(() => window.game.roll().then((r) => ({ id: r.id, dup: r.dup, ...r.data }))),
  };
  return p;
}

export const offsets = (evs) => evs.map((e) => e.offset);
