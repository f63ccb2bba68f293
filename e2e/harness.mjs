// Test harness for the browser end-to-end suite: builds and runs dugout as a
// real process, serves the test page from a real HTTP server, drives Chromium
// through playwright-core. Everything talks to 127.0.0.1 only.
import { execFile, spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// ---------------------------------------------------------------- prerequisites

// missingPrerequisites names what this suite needs and cannot find, with how
// to install it; empty when everything is there.
export async function missingPrerequisites() {
  const missing = [];
  try {
    await access(CHROMIUM, fsConstants.X_OK);
  } catch {
    missing.push(`${CHROMIUM} not found (install it: apt-get install chromium)`);
  }
  try {
    await import('playwright-core');
  } catch {
    missing.push('playwright-core not installed (install it: cd e2e && npm ci)');
  }
  return missing;
}

// ---------------------------------------------------------------- one test file

// browserSuite sets up a browser test file: the prerequisites check (on CI a missing one fails a test
// of its own; elsewhere the file's tests skip, saying what to install), the dugout build before the
// tests and its removal after them, and, given startPages, one page server for all of them. It returns
// skip, for each test's options, and pages, an object that holds the page server's fields once the
// tests run.
export async function browserSuite(what, startPages) {
  const missing = await missingPrerequisites();
  if (missing.length > 0 && process.env.CI === 'true') {
    test(`prerequisites for ${what}`, () => {
      assert.fail(`browser e2e tests cannot run on CI: ${missing.join('; ')}`);
    });
  }
  const skip = missing.length > 0 ? `browser e2e tests skipped: ${missing.join('; ')}` : false;
  const pages = {};
  before(async () => {
    if (skip) return;
    if (startPages) Object.assign(pages, await startPages());
    await buildDugout();
  });
  after(async () => {
    await pages.close?.();
    await removeBuild();
  });
  return { skip, pages };
}

// ---------------------------------------------------------------- waiting

// waitFor polls fn until it returns a truthy value and returns that value, or
// throws after timeout ms. describe() is called for the error message, so it
// can report what was seen so far. fn may throw to fail at once.
export async function waitFor(fn, { timeout = 5000, interval = 50, what = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= deadline) {
      let extra = '';
      if (describe) {
        try {
          extra = '\n' + (await describe());
        } catch (e) {
          extra = `\n(describe failed: ${e.message})`;
        }
      }
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${extra}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---------------------------------------------------------------- dugout

let built; // promise of { bin, dir }

// buildDugout builds the binary once per test process, from the repository root.
export function buildDugout() {
  built ??= (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'dugout-e2e-bin-'));
    const bin = path.join(dir, 'dugout');
    try {
      await promisify(execFile)(process.env.GO || 'go', ['build', '-o', bin, '.'], {
        cwd: REPO_ROOT,
        timeout: 300_000,
        maxBuffer: 16 << 20,
      });
    } catch (e) {
      throw new Error(`go build failed: ${e.message}\n${e.stderr ?? ''}`);
    }
    return { bin, dir };
  })();
  return built;
}

export async function removeBuild() {
  if (!built) return;
  const { dir } = await built.catch(() => ({}));
  if (dir) await rm(dir, { recursive: true, force: true });
}

// startDugout runs the binary with env (LISTEN_ADDR=127.0.0.1:0 by default) and
// waits for its start-up line, whose addr field says where it listens. These
// scenarios check protocol 1's rules, so RESUME_WINDOW defaults to 0 here: a
// closed page ends its session at once (a page's close sends 1001, which
// protocol 2 treats as a lost connection).
export async function startDugout(env = {}) {
  const { bin } = await buildDugout();
  const child = spawn(bin, [], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      LISTEN_ADDR: '127.0.0.1:0',
      LOG_LEVEL: 'info',
      RESUME_WINDOW: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let gotAddr;
  const addr = new Promise((resolve) => (gotAddr = resolve));
  for (const stream of [child.stderr, child.stdout]) {
    readline.createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      try {
        const l = JSON.parse(line);
        if (typeof l.addr === 'string' && l.addr) gotAddr(l.addr);
      } catch {
        /* not JSON: kept in the log anyway */
      }
    });
  }
  const log = () => lines.join('\n');
  let timer;
  const started = await Promise.race([
    addr,
    exited.then((r) => {
      throw new Error(`dugout exited at start (${JSON.stringify(r)}):\n${log()}`);
    }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`dugout printed no addr in 15 s:\n${log()}`)), 15_000);
    }),
  ]).finally(() => clearTimeout(timer)).catch(async (e) => {
    child.kill('SIGKILL');
    await exited;
    throw e;
  });

  let stopped;
  return {
    addr: started,
    wsURL: `ws://${started}/ws`,
    url: (p) => `http://${started}${p}`,
    log,
    async health() {
      const res = await fetch(`http://${started}/health/connections`);
      if (res.status !== 200) throw new Error(`/health/connections: HTTP ${res.status}`);
      return res.json();
    },
    // stop sends SIGTERM and awaits the exit (SIGKILL after 10 s); idempotent.
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        let t;
        const r = await Promise.race([
          exited,
          new Promise((resolve) => {
            t = setTimeout(() => resolve(null), 10_000);
          }),
        ]);
        clearTimeout(t);
        if (r) return r;
        child.kill('SIGKILL');
        return { ...(await exited), killed: true };
      })();
      return stopped;
    },
  };
}

// ---------------------------------------------------------------- the page

// The page the browser loads. Its script keeps every frame and socket event
// it sees in window.dugout, with the page's clock (performance.now()).
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>dugout e2e</title></head>
<body>
<p>dugout e2e client</p>
<script>
window.dugout = {
  frames: [],   // every message received, parsed, with _at
  events: [],   // open, error, close (with code, reason, wasClean)
  ws: null,
  hb: null,
  lastSent: null,
  connect(url) {
    const ws = new WebSocket(url);
    this.ws = ws;
    this.events.push({ type: 'connect', at: performance.now() });
    ws.onopen = () => this.events.push({ type: 'open', at: performance.now() });
    ws.onerror = () => this.events.push({ type: 'error', at: performance.now() });
    ws.onclose = (e) => {
      this.stopHeartbeat();
      this.events.push({ type: 'close', code: e.code, reason: e.reason, wasClean: e.wasClean, at: performance.now() });
    };
    ws.onmessage = (e) => {
      let f;
      try { f = JSON.parse(e.data); } catch { f = { type: '(unparsable)', raw: String(e.data) }; }
      f._at = performance.now();
      this.frames.push(f);
    };
  },
  send(obj) {
    this.ws.send(JSON.stringify(obj));
    this.lastSent = performance.now();
    return this.lastSent;
  },
  startHeartbeat(ms) {
    let n = 0;
    this.stopHeartbeat();
    this.hb = setInterval(() => {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.send({ type: 'heartbeat', id: 'hb' + (++n) });
    }, ms);
  },
  stopHeartbeat() {
    if (this.hb !== null) clearInterval(this.hb);
    this.hb = null;
  },
  state() {
    return { readyState: this.ws ? this.ws.readyState : -1, frames: this.frames, events: this.events, now: performance.now(), lastSent: this.lastSent };
  },
};
</script>
</body></html>
`;

// startPageServer serves the test page on 127.0.0.1 at a port of its own, so
// the page's Origin is http://127.0.0.1:<that port>.
export async function startPageServer() {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/' || req.url.startsWith('/?'))) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(PAGE);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------- the browser

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// launchBrowser starts Chromium with a fresh profile folder. Playwright never
// downloads a browser here: it runs the system's Chromium.
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const dir = await mkdtemp(path.join(tmpdir(), 'dugout-e2e-profile-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(dir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30_000,
    });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  let closed;
  return {
    context,
    close() {
      closed ??= (async () => {
        await context.close().catch(() => {});
        // Its helper processes may still be writing to the profile for a moment.
        await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
      })();
      return closed;
    },
  };
}

// ---------------------------------------------------------------- a browser without focus emulation

// launchPlainBrowser starts Chromium itself, with DevTools on a loopback port, and attaches Playwright with
// noDefaults. Why not launchBrowser(): Playwright turns focus emulation on for every page it opens, and
// Chromium counts such a page as being captured, so it stays visible even as a background tab (in
// launchBrowser()'s browser every tab says "visible", minimized windows and background tabs included).
// Here nothing emulates anything: a tab behind another is hidden by Chromium itself, as a user's is
// (visibilityState "hidden", a visibilitychange event, background scheduling). That is more honest than
// overriding document.visibilityState in the page, which would only show that the client reads a property.
export async function launchPlainBrowser() {
  const { chromium } = await import('playwright-core');
  const dir = await mkdtemp(path.join(tmpdir(), 'dugout-e2e-profile-'));
  const child = spawn(CHROMIUM, [...CHROMIUM_ARGS, '--remote-debugging-port=0', `--user-data-dir=${dir}`, 'about:blank'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const stderr = [];
  let timer;
  let browser;
  try {
    const endpoint = await Promise.race([
      new Promise((resolve) => {
        readline.createInterface({ input: child.stderr }).on('line', (line) => {
          stderr.push(line);
          const m = /DevTools listening on (ws:\/\/\S+)/.exec(line);
          if (m) resolve(m[1]);
        });
      }),
      exited.then((r) => {
        throw new Error(`chromium exited at start (${JSON.stringify(r)}): ${stderr.join('\n')}`);
      }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`chromium printed no DevTools endpoint in 15 s: ${stderr.join('\n')}`)), 15_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.match(endpoint, /^ws:\/\/127\.0\.0\.1:\d+\//, 'DevTools listens on loopback only');
    browser = await chromium.connectOverCDP(endpoint, { noDefaults: true, timeout: 30_000 });
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    throw e;
  }
  // exitedWithin resolves true once Chromium has exited, false after ms.
  const exitedWithin = async (ms) => {
    let t;
    const r = await Promise.race([exited, new Promise((resolve) => (t = setTimeout(resolve, ms)))]);
    clearTimeout(t);
    return r !== undefined;
  };
  let closed;
  return {
    context: browser.contexts()[0],
    // close asks Chromium to quit (SIGTERM, then SIGKILL, if it does not) and removes its profile; idempotent.
    close() {
      closed ??= (async () => {
        const cdp = await browser.newBrowserCDPSession().catch(() => null);
        await cdp?.send('Browser.close').catch(() => {});
        await browser.close().catch(() => {});
        if (!(await exitedWithin(5000))) child.kill('SIGTERM');
        if (!(await exitedWithin(5000))) {
          child.kill('SIGKILL');
          await exited;
        }
        // Its helper processes may still be writing to the profile for a moment.
        await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
      })();
      return closed;
    },
  };
}

// withDugout runs body({ dugout, browser }) against a fresh dugout started with env and a browser from launch
// (launchBrowser unless given); it checks that dugout exits 0 on SIGTERM, adds dugout's log to any failure,
// and ends both whatever happens.
export async function withDugout(env, body, { launch = launchBrowser } = {}) {
  const dugout = await startDugout(env);
  let browser;
  try {
    browser = await launch();
    await body({ dugout, browser });
    await browser.close();
    assert.deepEqual(await dugout.stop(), { code: 0, signal: null }, 'dugout should exit 0 after SIGTERM');
  } catch (e) {
    e.message += `\n--- dugout log ---\n${dugout.log()}`;
    throw e;
  } finally {
    await browser?.close().catch(() => {}); // dugout is stopped whatever happens here
    await dugout.stop();
  }
}

let ids = 0;

// openClient opens a new page on the test page and connects its WebSocket to wsURL.
export async function openClient(context, pageURL, wsURL, name) {
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  await page.goto(pageURL);
  await page.evaluate((u) => window.dugout.connect(u), wsURL);

  const c = {
    name,
    page,
    consoleLines,
    state: () => page.evaluate(() => window.dugout.state()),
    frames: async () => (await c.state()).frames,
    events: async () => (await c.state()).events,
    async describe() {
      const s = await c.state().catch((e) => ({ error: e.message }));
      return `${name}: ${JSON.stringify(s)}\n${name} console: ${consoleLines.join(' | ')}`;
    },
    // send sends a frame and returns the page's clock at the moment it did.
    send: (frame) => page.evaluate((f) => window.dugout.send(f), frame),
    // waitFrame waits for the first frame pred accepts and returns it.
    waitFrame(pred, what, timeout = 5000) {
      return waitFor(async () => (await c.frames()).find(pred), {
        timeout,
        what: `${name}: ${what}`,
        describe: c.describe,
      });
    },
    // waitEvent waits for a socket event (open, error, close) and returns it.
    waitEvent(type, timeout = 5000) {
      return waitFor(async () => (await c.events()).find((e) => e.type === type), {
        timeout,
        what: `${name}: socket event ${type}`,
        describe: c.describe,
      });
    },
    // request sends a frame with a fresh id and waits for the reply carrying that id.
    async request(type, data, timeout = 5000) {
      const id = `${name}-${type}-${++ids}`;
      await c.send(data === undefined ? { type, id } : { type, id, data });
      return c.waitFrame((f) => f.id === id, `reply to ${type} ${id}`, timeout);
    },
    session: () => c.waitFrame((f) => f.type === 'session', 'session frame'),
  };
  return c;
}

// ---------------------------------------------------------------- tokens

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// mintJWT signs claims with HS256, as dugout expects.
export function mintJWT(claims, secret) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
