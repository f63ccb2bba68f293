// The dashboard's script: polls /dashboard/data, keeps the last five minutes
// of readings in memory, and draws each chart as an SVG path. Served as a file
// of its own because the page's Content-Security-Policy (default-src 'self')
// blocks inline scripts. The operator token lives in sessionStorage (gone
// with the tab) and travels only in the Authorization header.
'use strict';

const POLL_MS = 2000;
const KEEP = 150; // readings: five minutes at one every 2 s
const TOKEN_KEY = 'dugout.operatorToken';
const SVG = 'http://www.w3.org/2000/svg'; // a namespace name, never fetched

const history = []; // { t, data }, oldest first

// ms, rate and count format a chart's values; each returns [number, unit].
const count = (v) => [v >= 1e4 ? (v / 1e3).toFixed(1) + 'k' : String(Math.round(v * 10) / 10), ''];
const rate = (v) => [v >= 100 ? v.toFixed(0) : v.toFixed(1), '/s'];
const perMin = (v) => [(v * 60).toFixed(v * 60 >= 10 ? 0 : 1), '/min'];
function seconds(v) {
  if (v >= 1) return [v.toFixed(2), 's'];
  if (v >= 1e-3) return [(v * 1e3).toFixed(v >= 0.1 ? 0 : 1), 'ms'];
  return [(v * 1e6).toFixed(0), 'µs'];
}

// Each chart names its series and how to read each from one reading; a
// series list given as a function is built from the readings themselves
// (the close reasons and resume results seen so far).
const quantileSeries = (key) => ['p50', 'p90', 'p99'].map((q) => ({ name: q, get: (d) => d[key]?.[q] ?? null }));
const labelledSeries = (key) => () => {
  const names = new Set();
  for (const h of history) for (const n of Object.keys(h.data[key] ?? {})) names.add(n);
  return [...names].sort().map((n) => ({ name: n, get: (d) => d[key]?.[n]?.per_second ?? null, total: (d) => d[key]?.[n]?.total ?? 0 }));
};
const CHARTS = [
  { id: 'connections', title: 'Connections', fmt: count, series: [{ name: 'open', get: (d) => d.connections }] },
  { id: 'sessions', title: 'Sessions', fmt: count, series: [
    { name: 'connected', get: (d) => d.sessions_connected }, { name: 'away', get: (d) => d.sessions_away }] },
  { id: 'games', title: 'Games', fmt: count, series: [{ name: 'with a seat', get: (d) => d.games }] },
  { id: 'frames', title: 'Frames per second', fmt: rate, series: [
    { name: 'in', get: (d) => d.frames_in?.per_second ?? null }, { name: 'out', get: (d) => d.frames_out?.per_second ?? null }] },
  { id: 'ping', title: 'Ping round trip', fmt: seconds, series: quantileSeries('ping_rtt_seconds') },
  { id: 'closes', title: 'Closes by reason', fmt: perMin, series: labelledSeries('closes'), breakdown: true, empty: 'no close yet' },
  { id: 'resumes', title: 'Resumes by result', fmt: perMin, series: labelledSeries('resumes'), breakdown: true, empty: 'no resume yet' },
  { id: 'hubstep', title: 'Hub step time', fmt: seconds, series: quantileSeries('hub_step_seconds') },
];

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// buildCharts makes each chart's card once; draw fills them on every reading.
function buildCharts() {
  for (const c of CHARTS) {
    const card = el('section', 'card');
    card.id = 'chart-' + c.id;
    card.dataset.points = '0';
    card.append(el('h2', '', c.title));
    const now = el('div', 'now');
    c.valueEl = el('span', 'value', '–');
    c.unitEl = el('span', 'unit', '');
    const figure = el('span');
    figure.append(c.valueEl, c.unitEl);
    c.maxEl = el('span', 'ymax', '');
    now.append(figure, c.maxEl);
    c.svg = svgEl('svg', { viewBox: '0 0 300 100', preserveAspectRatio: 'none', role: 'img', 'aria-label': c.title });
    for (const y of [0, 50, 100]) c.svg.append(svgEl('line', { class: 'grid', x1: 0, x2: 300, y1: y, y2: y }));
    const axis = el('div', 'axis');
    c.spanEl = el('span', '', '');
    axis.append(c.spanEl, el('span', '', 'now'));
    c.legendEl = el('ul', 'legend');
    card.append(now, c.svg, axis, c.legendEl);
    c.card = card;
    $('charts').append(card);
  }
}

// draw redraws every chart from history.
function draw() {
  // The x axis spans the readings there are, up to five minutes, so that a
  // page opened a minute ago does not squeeze its minute into a corner.
  const tEnd = history.at(-1).t;
  const tStart = Math.max(history[0].t, tEnd - (KEEP - 1) * POLL_MS);
  const span = Math.round((tEnd - tStart) / 1000);
  const spanText = span >= 120 ? '−' + Math.round(span / 60) + ' min' : '−' + span + ' s';
  for (const c of CHARTS) {
    const series = typeof c.series === 'function' ? c.series() : c.series;
    let top = 0;
    for (const h of history) for (const s of series) top = Math.max(top, s.get(h.data) ?? 0);
    top = niceCeil(top);
    for (const p of c.svg.querySelectorAll('path')) p.remove();
    series.forEach((s, i) => {
      let d = '';
      let pen = false; // a null reading breaks the line rather than drawing it at 0
      for (const h of history) {
        const v = s.get(h.data);
        if (v === null || v === undefined) { pen = false; continue; }
        const x = ((h.t - tStart) / (tEnd - tStart || 1)) * 300;
        const y = 100 - (v / top) * 100;
        d += (pen ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1);
        pen = true;
      }
      c.svg.append(svgEl('path', { class: 's' + (i % 8), d, 'data-series': s.name }));
    });
    const last = history.at(-1).data;
    // The big figure: a breakdown's sum (all closes, all resumes), else the first series.
    let first = series[0] ? series[0].get(last) : null;
    let label = series.length > 1 ? series[0].name : '';
    if (c.breakdown) {
      first = series.reduce((sum, s) => sum + (s.get(last) ?? 0), 0);
      label = 'all';
    }
    const [num, unit] = first === null || first === undefined ? ['–', ''] : c.fmt(first);
    c.valueEl.textContent = num;
    c.unitEl.textContent = label ? unit + ' ' + label : unit;
    c.spanEl.textContent = span > 0 ? spanText : '';
    c.maxEl.textContent = top > 0 ? 'scale ' + c.fmt(top).join(' ') : '';
    c.legendEl.replaceChildren(...series.map((s, i) => {
      const li = el('li');
      const v = s.get(last);
      const shown = v === null || v === undefined ? '–' : c.fmt(v).join(' ');
      li.append(el('i', 's' + (i % 8)), s.name + ' ' + shown + (s.total ? ' · ' + s.total(last) + ' in all' : ''));
      return li;
    }));
    if (series.length === 0) c.legendEl.append(el('li', 'none', c.empty ?? 'no data'));
    c.card.dataset.points = String(history.length);
    c.card.dataset.last = JSON.stringify(Object.fromEntries(series.map((s) => [s.name, s.get(last) ?? null])));
  }
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so the scale is readable.
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function showTopGames(games) {
  const section = $('topGames');
  if (!games) { section.hidden = true; return; }
  section.hidden = false;
  const rows = games.map((g) => {
    const tr = el('tr');
    const id = el('td', 'id', g.game_id);
    id.title = g.game_id;
    tr.append(id, el('td', '', String(g.seats)), el('td', '', String(g.away_seats)), el('td', '', g.state ?? '–'),
      el('td', '', seconds(g.oldest_idle_ms / 1000).join(' ')));
    return tr;
  });
  if (rows.length === 0) {
    const tr = el('tr');
    const td = el('td', '', 'no game has a seat');
    td.colSpan = 5;
    tr.append(td);
    rows.push(tr);
  }
  $('topGamesBody').replaceChildren(...rows);
}

function showError(text) {
  $('error').textContent = text ?? '';
  $('error').hidden = !text;
}

function tokenChanged() {
  const has = Boolean(sessionStorage.getItem(TOKEN_KEY));
  $('forgetToken').hidden = !has;
  $('token').placeholder = has ? 'token in use (this tab only)' : 'OPERATOR_TOKEN for game details';
}

let refused = ''; // the error of the last token refused, shown until another is tried

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  try {
    const res = await fetch('/dashboard/data', { headers, cache: 'no-store' });
    if (res.status === 401 && token) {
      // Forget it and go on without: the operator sees why the details went. Only if it is still the
      // token in use: a poll begun before another token was entered must not forget the new one.
      if (sessionStorage.getItem(TOKEN_KEY) !== token) return;
      sessionStorage.removeItem(TOKEN_KEY);
      tokenChanged();
      showTopGames(null);
      refused = 'The operator token was refused (401 Unauthorized). Showing the public view.';
      showError(refused);
      return;
    }
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const data = await res.json();
    if (history.length && data.time_ms <= history[history.length - 1].t) return; // an older poll answered late
    history.push({ t: data.time_ms, data });
    if (history.length > KEEP) history.shift();
    showError(refused);
    draw();
    showTopGames(data.top_games);
    const status = $('status');
    status.classList.toggle('draining', data.draining);
    status.textContent = (data.draining ? 'DRAINING · ' : '') + 'updated ' + new Date(data.time_ms).toLocaleTimeString() +
      (data.top_games ? ' · operator view' : '');
    $('window').textContent = data.window_seconds === null ? '–' : Math.round(data.window_seconds) + ' s';
  } catch (e) {
    showError('Cannot read /dashboard/data: ' + e.message);
  }
}

async function loop() {
  await poll();
  setTimeout(loop, POLL_MS);
}

function start() {
  buildCharts();
  tokenChanged();
  $('tokenForm').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = $('token').value.trim();
    $('token').value = '';
    if (!v) return;
    sessionStorage.setItem(TOKEN_KEY, v);
    refused = '';
    showError('');
    tokenChanged();
    poll();
  });
  $('forgetToken').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    tokenChanged();
    showTopGames(null);
    poll();
  });
  loop();
}

start();
