// dugout.js: the browser client of dugout (wire protocol version 2, see PROTOCOL.md).
// An ES module with no dependencies. connect(url, opts) returns a Session at once.

const GAME_EVENTS = new Set(['presence', 'defensive_decision', 'offensive_decision', 'dice_rolled', 'game_updated']);
const NO_RETRY = new Set([4000, 4001]);

// ------------------------------------------------------------------ pure parts

// backoffDelay: exponential backoff with full jitter, a delay in [0, min(cap, base * 2^attempt)).
export function backoffDelay(attempt, { base = 1000, cap = 30000, random = Math.random } = {}) {
  const n = Math.max(0, Math.floor(attempt) || 0);
  const ceiling = Math.min(cap, base * 2 ** Math.min(n, 52));
  return Math.floor(random() * ceiling);
}

// GameCursor keeps one game's place in its events: `offset` is the last event handed to the page
// (what is stored and sent on resume), `seen` the last one received (events at or below it are
// duplicates and dropped). Offsets may jump (our own `back` after a resume is never sent to us).
export class GameCursor {
  constructor(epoch = null, offset = 0) {
    this.reset(epoch, offset);
  }
  reset(epoch, offset) {
    this.epoch = epoch;
    this.offset = offset;
    this.seen = offset;
  }
  // accept says whether an event at offset is new (and marks it seen); false means drop it.
  accept(offset) {
    if (typeof offset !== 'number') return true;
    if (offset <= this.seen) return false;
    this.seen = offset;
    return true;
  }
  // commit records that the page has been given the event at offset.
  commit(offset) {
    if (typeof offset === 'number' && offset > this.offset) this.offset = offset;
  }
  // resumed applies one game of a `resumed` frame; true when the page must resync (the position
  // then becomes the resumed offset). When recovered, the missed events follow and are accepted.
  resumed({ epoch, offset, recovered }) {
    if (!recovered || epoch !== this.epoch) {
      this.reset(epoch, offset);
      return true;
    }
    return false;
  }
  toJSON() {
    return { epoch: this.epoch, offset: this.offset };
  }
}

// PendingActions: actions sent with an id and not yet answered. Each resolves (or rejects) once;
// later replies with the same id (a "dup":true retry answer) are ignored.
export class PendingActions {
  constructor() {
    this.map = new Map();
  }
  add(id, frame) {
    let entry;
    const promise = new Promise((resolve, reject) => {
      entry = { id, frame, resolve, reject };
    });
    this.map.set(id, entry);
    return promise;
  }
  has(id) {
    return this.map.has(id);
  }
  get size() {
    return this.map.size;
  }
  // frames to (re)send, in the order they were added.
  frames() {
    return [...this.map.values()].map((e) => e.frame);
  }
  // settle handles a reply frame: resolves or rejects (type "error") its action; false if none waits.
  settle(reply) {
    const e = reply && typeof reply.id === 'string' ? this.map.get(reply.id) : undefined;
    if (!e) return false;
    this.map.delete(reply.id);
    if (reply.type === 'error') e.reject(actionError(reply));
    else e.resolve(reply);
    return true;
  }
  rejectAll(err) {
    const all = [...this.map.values()];
    this.map.clear();
    for (const e of all) e.reject(err);
  }
}

export function actionError(reply) {
  const d = reply.data || {};
  const err = new Error(d.message || d.code || 'error');
  err.code = d.code;
  err.reply = reply;
  return err;
}

let idCounter = 0;
// newId: ids must never repeat within a session, even across page reloads: random plus a counter.
export function newId(prefix = 'a') {
  let rnd = '';
  const c = globalThis.crypto;
  if (c && c.getRandomValues) {
    const b = c.getRandomValues(new Uint8Array(8));
    for (const x of b) rnd += x.toString(16).padStart(2, '0');
  } else {
    rnd = Math.random().toString(16).slice(2) + Math.random().toString(16).slice(2);
  }
  return `${prefix}${(++idCounter).toString(36)}-${rnd}`;
}

export function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
  };
}

// ------------------------------------------------------------------ emitter

class Emitter {
  constructor() {
    this._l = new Map();
  }
  on(ev, fn) {
    if (!this._l.has(ev)) this._l.set(ev, new Set());
    this._l.get(ev).add(fn);
    return this;
  }
  off(ev, fn) {
    this._l.get(ev)?.delete(fn);
    return this;
  }
  _emit(ev, arg) {
    for (const fn of [...(this._l.get(ev) || [])]) {
      try {
        fn(arg);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

// ------------------------------------------------------------------ Game

export class Game extends Emitter {
  constructor(session, id) {
    super();
    this.id = id;
    this.members = new Map();
    this.users = new Map();
    this._s = session;
    this.cursor = new GameCursor();
    this._snapshotAt = 0; // presence at or below this offset is already in `members`
    this._held = true; // events wait here until the page calls on() for the first time
    this._queue = [];
    this._flushTimer = null;
    this.joined = false;
  }
  on(type, fn) {
    super.on(type, fn);
    if (this._held && this._flushTimer === null) {
      this._flushTimer = setTimeout(() => {
        this._flushTimer = null;
        this._held = false;
        this._flush();
      }, 0);
    }
    return this;
  }
  roll(dice) {
    const data = { game_id: this.id };
    if (dice !== undefined) data.dice = dice;
    return this._s._action('roll_dice', data);
  }
  submitDefensive(decision) {
    return this._s._action('submit_defensive_decision', { game_id: this.id, decision });
  }
  submitOffensive(decision) {
    return this._s._action('submit_offensive_decision', { game_id: this.id, decision });
  }
  leave() {
    return this._s._action('leave_game', { game_id: this.id });
  }

  _setMembers(list, at) {
    this.members = new Map();
    for (const m of list || []) this.members.set(m.sid, { sid: m.sid, userId: m.user_id ?? null, status: m.status });
    this._snapshotAt = at;
    this._indexUsers();
  }
  _indexUsers() {
    const users = new Map();
    for (const m of this.members.values()) {
      if (!users.has(m.userId)) users.set(m.userId, []);
      users.get(m.userId).push(m);
    }
    this.users = users;
  }
  _applyPresence(d) {
    if (typeof d.offset === 'number' && d.offset <= this._snapshotAt) return;
    if (d.status === 'left') this.members.delete(d.sid);
    else {
      const status = d.status === 'away' ? 'away' : 'connected';
      this.members.set(d.sid, { sid: d.sid, userId: d.user_id ?? null, status });
    }
    this._indexUsers();
  }
  // _event handles a game frame: dedupe by offset, update members, hand over (or queue) for the page.
  _event(frame) {
    const d = frame.data;
    if (!this.cursor.accept(d.offset)) return;
    if (frame.type === 'presence') this._applyPresence(d);
    this._queue.push({ type: frame.type, data: d });
    if (!this._held) this._flush();
  }
  _flush() {
    while (this._queue.length) {
      const ev = this._queue.shift();
      this.cursor.commit(ev.data.offset);
      this._s._save();
      this._emit(ev.type, ev.data);
    }
  }
  _resync(reason) {
    this._queue = []; // what was queued is older than the new position
    const detail = { reason, epoch: this.cursor.epoch, offset: this.cursor.offset, members: this.members };
    this._s._save();
    if (this._held) this._queue.push({ type: 'resync', data: detail });
    else this._emit('resync', detail);
  }
}

// ------------------------------------------------------------------ Session

export class Session extends Emitter {
  constructor(url, opts = {}) {
    super();
    this.url = url;
    this.sid = null;
    this.userId = null;
    this.state = 'connecting';
    this.games = new Map();
    this._token = opts.token;
    this._storage =
      opts.storage !== undefined ? opts.storage || memoryStorage() : typeof sessionStorage !== 'undefined' ? sessionStorage : memoryStorage();
    this._key = 'dugout:' + url;
    this._base = opts.backoffBase ?? 1000;
    this._cap = opts.backoffCap ?? 30000;
    this._WS = opts.WebSocket || globalThis.WebSocket;
    this._pending = new PendingActions();
    this._attempt = 0;
    this._ws = null;
    this._timer = null;
    this._dialing = false;
    this._ready = false; // open and resumed (or fresh): actions may be sent
    this._waiters = [];
    this._goodbye = null;
    this._joins = new Map(); // gameId -> promise of Game (joins in flight)
    this.tokenExp = null; // the exp (Unix s) of the token the server holds for this connection; null for none
    this._tok = null; // the token refresh in progress on this connection, if any
    const st = this._load();
    this._resumeToken = st.resumeToken || null;
    this._stored = st.games || {}; // games from a previous page, until the resume says what holds
    this._wake = () => this._wakeUp();
    this._onVis = () => {
      if (typeof document === 'undefined' || document.visibilityState === 'visible') this._wakeUp();
    };
    if (typeof addEventListener === 'function') {
      for (const ev of ['online', 'pageshow']) addEventListener(ev, this._wake);
    }
    if (typeof document !== 'undefined' && document.addEventListener) {
      document.addEventListener('visibilitychange', this._onVis);
      document.addEventListener('resume', this._wake);
    }
    this._dial();
  }

  // -------------------------------------------------------------- public
  join(gameId) {
    const id = String(gameId).toLowerCase();
    return this._whenReady().then(() => {
      const g = this.games.get(id);
      if (g && g.joined) return g;
      if (this._joins.has(id)) return this._joins.get(id);
      const p = this._action('join_game', { game_id: gameId }).then((reply) => this.games.get(reply.data.game_id));
      this._joins.set(id, p);
      const done = () => this._joins.delete(id);
      p.then(done, done);
      return p;
    });
  }
  stillHere() {
    this._send({ type: 'heartbeat' });
  }
  close() {
    this._setState('ended', 'closed');
    this._clearTimer();
    this._removeListeners();
    for (const g of this.games.values()) clearTimeout(g._flushTimer); // no held event after "ended"
    const ws = this._ws;
    this._ws = null;
    this._ready = false;
    if (ws) {
      try {
        ws.close(1000, 'bye');
      } catch {}
    }
    try {
      this._storage.removeItem(this._key);
    } catch {}
    this._resumeToken = null;
    this._stopRefresh();
    this._pending.rejectAll(Object.assign(new Error('session closed'), { code: 'closed' }));
    this._emit('ended', { code: 1000, reason: 'closed' });
  }
  // drop cuts the connection as a network failure would (close code 4999, which the server treats as
  // lost, not as a goodbye): the session goes away on the server and this client resumes it. For demos
  // and tests of a page's own handling of drops.
  drop() {
    const ws = this._ws;
    if (!ws) return;
    try {
      ws.close(4999, 'dropped');
    } catch {}
  }
  reconnect() {
    if (this._ws || this._dialing) return;
    this._clearTimer();
    this._attempt = 0;
    this._setState('connecting', 'reconnect');
    this._dial();
  }

  // -------------------------------------------------------------- storage
  _load() {
    try {
      return JSON.parse(this._storage.getItem(this._key) || '{}') || {};
    } catch {
      return {};
    }
  }
  _save() {
    const games = {};
    for (const g of this.games.values()) if (g.joined && g.cursor.epoch) games[g.id] = g.cursor.toJSON();
    if (!this._ready) for (const [id, c] of Object.entries(this._stored)) if (!games[id]) games[id] = c;
    try {
      this._storage.setItem(this._key, JSON.stringify({ resumeToken: this._resumeToken, games }));
    } catch {}
  }

  // -------------------------------------------------------------- connection
  _setState(state, reason, retryInMs, resumeFailed) {
    this.state = state;
    const e = { state, reason, retryInMs };
    if (resumeFailed !== undefined) e.resumeFailed = resumeFailed; // why the stored session could not be resumed
    this._emit('state', e);
  }
  _whenReady() {
    if (this._ready) return Promise.resolve();
    return new Promise((resolve) => this._waiters.push(resolve));
  }
  async _dial() {
    if (this._ws || this._dialing || this.state === 'ended') return;
    this._dialing = true;
    let url = this.url;
    try {
      let tok = this._token;
      if (typeof tok === 'function') tok = await tok();
      if (tok) url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(tok);
    } catch (e) {
      this._dialing = false;
      this._retry('token');
      return;
    }
    this._dialing = false;
    if (this.state === 'ended' || this._ws) return;
    let ws;
    try {
      ws = new this._WS(url);
    } catch {
      this._retry('error');
      return;
    }
    this._ws = ws;
    this._goodbye = null;
    ws.onmessage = (e) => {
      if (this._ws !== ws) return;
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      if (f && typeof f === 'object') this._frame(f);
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._ready = false;
      this._closed(e.code, e.reason);
    };
  }
  _closed(code, reason) {
    this._stopRefresh();
    const gb = this._goodbye;
    if (gb) {
      code = gb.code ?? code;
      reason = gb.reason ?? reason;
    }
    if (code === 4002) this._emit('token', { state: 'expired', tokenExp: this.tokenExp }); // then reconnects with a fresh one
    if (NO_RETRY.has(code)) {
      this._clearTimer();
      this._setState('ended', reason || (code === 4000 ? 'expired' : 'taken_over'));
      this._emit('ended', { code, reason });
      return;
    }
    if (gb && typeof gb.retry_after_ms === 'number') this._retry(reason, gb.retry_after_ms);
    else this._retry(reason || 'lost');
  }
  _retry(reason, delay) {
    if (this.state === 'ended') return;
    const ms = delay ?? backoffDelay(this._attempt, { base: this._base, cap: this._cap });
    this._attempt++;
    this._setState('reconnecting', reason, ms);
    this._clearTimer();
    this._timer = setTimeout(() => {
      this._timer = null;
      this._dial();
    }, ms);
  }
  _wakeUp() {
    if (this.state !== 'reconnecting' || this._ws || this._dialing) return;
    this._clearTimer();
    this._dial();
  }
  _clearTimer() {
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
  }
  _removeListeners() {
    if (typeof removeEventListener === 'function') {
      for (const ev of ['online', 'pageshow']) removeEventListener(ev, this._wake);
    }
    if (typeof document !== 'undefined' && document.removeEventListener) {
      document.removeEventListener('visibilitychange', this._onVis);
      document.removeEventListener('resume', this._wake);
    }
  }
  _send(frame) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    try {
      this._ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // -------------------------------------------------------------- frames
  _frame(f) {
    switch (f.type) {
      case 'session':
        return this._onSession(f.data || {});
      case 'resumed':
        return this._onResumed(f.data || {});
      case 'goodbye':
        this._goodbye = f.data || {};
        return;
      case 'session_expiring':
        return this._emit('expiring', f.data);
      case 'token_expiring':
        return this._onTokenExpiring(f.data || {});
      case 'token_refreshed':
        return this._onTokenRefreshed(f);
      case 'error':
        if (f.id && f.id === this._resumeId) return this._onResumeFailed(f.data || {});
        if (f.id && f.id === this._tok?.id) return this._onTokenRefused(f.data || {});
        this._pending.settle(f);
        return;
      case 'game_joined':
        this._onJoined(f);
        this._pending.settle(f);
        return;
      case 'game_left': {
        // Our own leave's reply, or the server ended the seat (reason "kicked" or "superseded"): either
        // way the game is forgotten here, so no resume or fresh session ever joins it again by itself.
        const id = f.data?.game_id;
        const g = this.games.get(id);
        if (g) {
          g.joined = false;
          this.games.delete(id);
          this._save();
          const d = f.data || {};
          g._emit('left', { game_id: id, reason: d.reason || 'left', by_sid: d.by_sid ?? null });
        }
        this._pending.settle(f);
        return;
      }
    }
    if (GAME_EVENTS.has(f.type)) {
      const g = this.games.get(f.data?.game_id);
      if (g) g._event(f);
      this._pending.settle(f);
      return;
    }
    this._pending.settle(f); // heartbeat_ack and the like
  }
  _onSession(d) {
    this._fresh = d;
    this.tokenExp = d.token_exp ?? null; // this connection's token governs, after a resume too
    if (this._resumeToken) {
      const games = {};
      for (const g of this.games.values()) if (g.joined && g.cursor.epoch) games[g.id] = g.cursor.toJSON();
      for (const [id, c] of Object.entries(this._stored)) if (!games[id]) games[id] = c;
      this._resumeId = newId('resume-');
      this._send({ type: 'resume', id: this._resumeId, data: { resume_token: this._resumeToken, games } });
      return;
    }
    this._startFresh(d, 'new_session');
  }
  _onResumeFailed(d) {
    this._resumeId = null;
    if (d.code !== 'resume_failed') {
      // e.g. rate_limited: the resume was not looked at. This connection's own fresh session is of no
      // use; end it and try again later, the stored session may still be resumable.
      const ws = this._ws;
      this._goodbye = { code: 1000, reason: 'resume_' + (d.code || 'error') };
      try {
        ws.close(1000, 'resume refused');
      } catch {}
      return;
    }
    this._startFresh(this._fresh, 'new_session', d.reason ?? null);
  }
  // _startFresh: this connection is a new session; re-join every game the old one had.
  _startFresh(d, why, resumeFailed) {
    this._resumeId = null;
    this.sid = d.sid;
    this.userId = d.user_id ?? null;
    this._resumeToken = d.resume_token || null;
    const rejoin = new Set([...this.games.keys(), ...Object.keys(this._stored)]);
    this._stored = {};
    for (const id of rejoin) {
      let g = this.games.get(id);
      if (!g) {
        g = new Game(this, id);
        this.games.set(id, g);
      }
      g.joined = false;
      g._rejoin = true;
    }
    this._save();
    // Re-joins first, so any retried action for these games runs after them.
    const older = this._pending.map;
    this._pending.map = new Map();
    for (const id of rejoin) {
      const p = this._action('join_game', { game_id: id }).then(
        (r) => this.games.get(r.data.game_id),
        () => {
          this.games.delete(id);
          this._save();
        },
      );
      this._joins.set(id, p);
      const done = () => this._joins.delete(id);
      p.then(done, done);
    }
    for (const [k, e] of older) this._pending.map.set(k, e);
    this._opened(why, resumeFailed);
  }
  _onResumed(d) {
    this._resumeId = null;
    this.sid = d.sid;
    this.userId = d.user_id ?? null;
    const held = new Set();
    for (const rg of d.games || []) {
      held.add(rg.game_id);
      let g = this.games.get(rg.game_id);
      if (!g) {
        g = new Game(this, rg.game_id);
        const st = this._stored[rg.game_id];
        if (st) g.cursor.reset(st.epoch, st.offset);
        this.games.set(rg.game_id, g);
      }
      g.joined = true;
      g._setMembers(rg.members, rg.offset);
      if (g.cursor.resumed(rg)) g._resync('not_recovered');
    }
    for (const [id, g] of [...this.games]) {
      if (!held.has(id)) {
        // The seat ended while the session was away (kicked, superseded): its game_left went to no
        // connection, so the page hears it here, and the game is not re-joined.
        const wasJoined = g.joined;
        g.joined = false;
        this.games.delete(id);
        if (wasJoined) g._emit('left', { game_id: id, reason: 'not_resumed', by_sid: null });
      }
    }
    this._stored = {};
    this._opened('resumed');
  }
  _opened(why, resumeFailed) {
    this._attempt = 0;
    this._ready = true;
    this._save();
    this._setState('open', why, undefined, resumeFailed);
    for (const frame of this._pending.frames()) this._send(frame);
    if (this._refreshWanted) {
      this._refreshWanted = false;
      this._refresh();
    }
    const w = this._waiters;
    this._waiters = [];
    for (const fn of w) fn();
  }
  _onJoined(f) {
    const d = f.data || {};
    let g = this.games.get(d.game_id);
    if (g && g.joined) return; // a dup reply, or joining twice: our place is already further on
    if (!g) {
      g = new Game(this, d.game_id);
      this.games.set(d.game_id, g);
    }
    g.joined = true;
    g.cursor.reset(d.epoch, d.offset);
    g._setMembers(d.members, d.offset);
    this._save();
    if (g._rejoin) {
      g._rejoin = false;
      g._resync('new_session');
    }
  }
  // _action sends a frame with a fresh id now (when ready) and again after each resume until answered.
  _action(type, data) {
    const id = newId(type[0]);
    const frame = { type, id, data };
    const p = this._pending.add(id, frame);
    if (this._ready) this._send(frame);
    return p;
  }
}

// ------------------------------------------------------------------ token refresh
// The server warns (token_expiring) before this connection's token runs out, and closes it with 4002
// TOKEN_EXPIRY_GRACE after exp. With a token function the client refreshes in-band on the warning,
// retrying with backoff (a thrown function, invalid_token, a token no fresher) until it succeeds or the
// connection ends; after 4002 it reconnects like after any drop, with a fresh token, and resumes.
Session.prototype.refreshToken = function refreshToken() {
  this._refresh();
};
Object.assign(Session.prototype, {
  _onTokenExpiring(d) {
    this._emit('token', { state: 'expiring', tokenExp: d.token_exp ?? null, expiresInMs: d.expires_in_ms });
    this._refresh();
  },
  // _refresh starts a refresh on this connection, unless one is in progress or there is no token function.
  _refresh() {
    const ws = this._ws;
    if (typeof this._token !== 'function' || !ws || this._tok?.ws === ws) return;
    if (!this._ready) {
      // A new connection's first frame must be its resume: sent before it, refresh_token would make
      // the server refuse the resume (not_first). The refresh waits for the connection to open.
      this._refreshWanted = true;
      return;
    }
    this._tok = { ws, attempt: 0, id: null, timer: null };
    this._tokenAttempt(this._tok);
  },
  async _tokenAttempt(st) {
    st.timer = null;
    let tok;
    try {
      tok = await this._token();
      if (!tok) throw new Error('the token function gave no token');
    } catch {
      return this._tokenFailed(st, 'token_function');
    }
    if (this._tok !== st || this._ws !== st.ws) return; // the connection changed meanwhile
    st.id = newId('t');
    if (!this._send({ type: 'refresh_token', id: st.id, data: { token: String(tok) } })) this._tokenFailed(st, 'not_sent');
  },
  _onTokenRefreshed(f) {
    const st = this._tok;
    if (!st || f.id !== st.id) return;
    const before = this.tokenExp;
    this.tokenExp = f.data?.token_exp ?? null;
    if (before !== null && this.tokenExp !== null && this.tokenExp <= before) {
      st.id = null;
      return this._tokenFailed(st, 'not_fresher'); // the server took it, but the close still comes
    }
    this._tok = null;
    this._emit('token', { state: 'refreshed', tokenExp: this.tokenExp });
  },
  _onTokenRefused(d) {
    this._tok.id = null;
    this._tokenFailed(this._tok, d.reason || d.code || 'error');
  },
  _tokenFailed(st, reason) {
    if (this._tok !== st || this._ws !== st.ws) return;
    const ms = backoffDelay(st.attempt++, { base: this._base, cap: this._cap });
    this._emit('token', { state: 'failed', tokenExp: this.tokenExp, reason, retryInMs: ms });
    st.timer = setTimeout(() => this._tokenAttempt(st), ms);
  },
  _stopRefresh() {
    if (this._tok?.timer) clearTimeout(this._tok.timer);
    this._tok = null;
  },
});

export function connect(url, opts = {}) {
  return new Session(url, opts);
}
