// Shared parts of the client's lifecycle browser tests (client_lifecycle.test.mjs and
// client_background.test.mjs): what each page records of its connection attempts and visibility,
// what goes on the wire, and small readers of the pages' logs and of dugout's.
import { waitFor } from './harness.mjs';

export const BASE_ENV = { ALLOWED_ORIGINS: '127.0.0.1:*', RESUME_WINDOW: '10s' };

// ---------------------------------------------------------------- what the pages do, and what goes on the wire

// INIT runs in every page before its scripts. The module takes globalThis.WebSocket in connect(), so
// wrapping the constructor sees each connection attempt the client makes, with the page's own clock, even
// one that never opens; window.__dials counts them synchronously. Each visibility change is reported too.
// Nothing else of the page or the module is changed.
export const INIT = () => {
  window.__dials = 0;
  const W = window.WebSocket;
  window.WebSocket = new Proxy(W, {
    construct(target, args) {
      const ws = Reflect.construct(target, args);
      window.__dials++;
      window.record?.({ kind: 'dial', at: performance.now(), n: window.__dials, vis: document.visibilityState });
      return ws;
    },
  });
  document.addEventListener('visibilitychange', () =>
    window.record?.({ kind: 'visibility', at: performance.now(), state: document.visibilityState }),
  );
};

// instrument adds, once the page is ready, the page's clock to what the session reports (clientpage's
// own 'state' records carry none) and its 'expiring' warnings, which clientpage does not record. Its
// visibilitychange listener comes after the module's, so it says how many dials the module's had made.
export function instrument(p) {
  return p.page.evaluate(() => {
    const s = window.session;
    const at = () => ({ at: performance.now(), vis: document.visibilityState });
    s.on('state', (e) => window.record({ kind: 'state@', ...at(), ...e }));
    s.on('ended', (e) => window.record({ kind: 'ended@', ...at(), ...e }));
    s.on('expiring', (e) => window.record({ kind: 'expiring', ...at(), ...e }));
    document.addEventListener('visibilitychange', () =>
      window.record({ kind: 'visibility@', ...at(), dials: window.__dials, sessionState: s.state }),
    );
  });
}

// tapSockets keeps, per page, each WebSocket it opened and every frame it sent and received, as Chromium
// reports them over DevTools: what went on the wire, whatever the page's scripts believe. Attach it
// before opening the pages.
export function tapSockets(context) {
  const byPage = new Map();
  const parse = (payload) => {
    try {
      return JSON.parse(payload);
    } catch {
      return { raw: String(payload) };
    }
  };
  const watch = (page) => {
    const list = [];
    byPage.set(page, list);
    page.on('websocket', (ws) => {
      const s = { url: ws.url(), sent: [], received: [] };
      list.push(s);
      ws.on('framesent', (f) => s.sent.push(parse(f.payload)));
      ws.on('framereceived', (f) => s.received.push(parse(f.payload)));
    });
  };
  for (const p of context.pages()) watch(p);
  context.on('page', watch);
  return { of: (page) => byPage.get(page) ?? [] };
}

export const waitLog = (p, pred, what, timeout = 10_000) =>
  waitFor(() => p.log.find(pred), { timeout, what: `${p.name}: ${what}`, describe: p.describe });
export const kinds = (p, kind) => p.log.filter((e) => e.kind === kind);
export const membersOf = (p) => p.page.evaluate(() => [...window.game.members.values()].map((m) => `${m.sid}:${m.status}`).sort());
export const sidOf = (p) => p.page.evaluate(() => window.session.sid);
export const srcFor = (pages, m, dugout, game) => `${pages.base}/?${new URLSearchParams({ m, ws: dugout.wsURL, game })}`;

// parseLine reads one line of dugout's JSON log ({} for any other line).
export const parseLine = (l) => {
  try {
    return JSON.parse(l);
  } catch {
    return {};
  }
};

// logs joins the logs of the dugouts a test ran, for its failure message.
export const logs = (...ds) => ds.filter(Boolean).map((d, i) => `\n--- dugout log #${i + 1} ---\n${d.log()}`).join('');
