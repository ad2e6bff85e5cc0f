/*
 * The status page: reads /stats every second and draws what changed.
 * Rates come from the difference of two readings, as megactl stats -f
 * computes them; a counter that went down means the daemon restarted, and
 * counts from zero again. Every text goes in through textContent, never as
 * markup: log lines can carry what a client sent.
 */
'use strict';

const POLL_MS = 1000;
const TIMEOUT_MS = 2500;
const WINDOW_S = 300;           // the charts show the last five minutes
const GAP_S = 3.5;              // a longer silence breaks the chart's line

const $ = (id) => document.getElementById(id);
const series = { in: [], ok: [], bad: [], queue: [], spool: [], p99: [] };
let prev = null;                // { t: ms, s: /stats object }
let lastAnswer = 0;             // ms of the last good reading

function fmtInt(n) {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function fmtRate(n) {
  return n >= 100 ? fmtInt(n) : n.toFixed(n >= 10 ? 0 : 1);
}

function fmtBytes(v) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u ? v.toFixed(1) + ' ' + units[u] : Math.round(v) + ' B';
}

function fmtSeconds(s) {
  if (s === null || s < 0) return '-';
  return s < 1 ? (s * 1000).toFixed(1) + ' ms' : s.toFixed(2) + ' s';
}

function fmtUptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24;
  const m = Math.floor(s / 60) % 60, sec = Math.floor(s % 60);
  const two = (x) => (x < 10 ? '0' : '') + x;
  if (d) return d + 'd ' + h + 'h';
  if (h) return h + 'h ' + two(m) + 'm';
  return m + 'm ' + two(sec) + 's';
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function badge(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  el.className = 'badge ' + cls;
}

function sumValues(obj) {
  return Object.values(obj || {}).reduce((a, b) => a + b, 0);
}

// CUR - PREV of a counter; one that went down counts from zero.
function delta(prevN, curN) {
  return curN >= prevN ? curN - prevN : curN;
}

// The 99th percentile of the observations between two readings of a
// histogram ({buckets: {"0.001": cumulative, ..., "+Inf": count}}),
// interpolated inside its bucket as histogram_quantile() does; null: none.
function p99(hPrev, hCur) {
  const bounds = Object.keys(hCur.buckets)
    .map((k) => [k === '+Inf' ? Infinity : parseFloat(k), k])
    .sort((a, b) => a[0] - b[0]);
  const per = [];
  let last = 0;
  for (const [bound, key] of bounds) {
    const before = hPrev ? hPrev.buckets[key] || 0 : 0;
    const cum = delta(before, hCur.buckets[key]);
    per.push([bound, Math.max(0, cum - last)]);
    last = Math.max(last, cum);
  }
  if (last === 0) return null;
  const rank = 0.99 * last;
  let below = 0, lo = 0;
  for (const [bound, n] of per) {
    if (n > 0 && below + n >= rank)
      return bound === Infinity ? lo : lo + (bound - lo) * (rank - below) / n;
    below += n;
    if (bound !== Infinity) lo = bound;
  }
  return lo;
}

function push(name, t, v) {
  const a = series[name];
  a.push([t, v]);
  while (a.length && a[0][0] < t - WINDOW_S * 1000) a.shift();
}

function showWriters(s) {
  const ul = $('writers');
  const states = s.writer_state || [];
  ul.textContent = '';
  states.forEach((st, i) => {
    const li = document.createElement('li');
    li.className = 'st-' + st;
    li.dataset.state = st;
    li.textContent = 'writer ' + i + ': ' + st;
    ul.appendChild(li);
  });
  if (!states.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'no writer running';
    ul.appendChild(li);
  }
}

function showReasons(s) {
  const tbody = $('reasons');
  const rows = Object.entries(s.events_rejected_total || {})
    .filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  tbody.textContent = '';
  if (!rows.length) rows.push(['none', null]);
  for (const [reason, n] of rows) {
    const tr = tbody.insertRow();
    const name = tr.insertCell();
    name.textContent = reason;
    if (n === null) { name.className = 'muted'; continue; }
    const count = tr.insertCell();
    count.className = 'n';
    count.textContent = fmtInt(n);
  }
}

// /stats "log_recent": the last warnings and errors, oldest first.
function showLogs(s) {
  const ol = $('logs');
  const lines = s.log_recent || [];
  const key = lines.map((l) => l.line).join('\n');
  if (ol.dataset.key === key) return;
  ol.dataset.key = key;
  ol.textContent = '';
  for (const l of lines.length ? lines.slice().reverse() : [{ level: 'none', line: 'none' }]) {
    const li = document.createElement('li');
    li.className = l.level === 'none' ? 'muted' : 'lv-' + l.level;
    li.textContent = l.line;
    ol.appendChild(li);
  }
}

function showFigures(s, rates) {
  setText('version', s.version || '');
  setText('uptime', fmtUptime(s.uptime_seconds || 0));
  setText('committed-total', fmtInt(s.events_committed_total));
  $('committed-total').dataset.value = String(s.events_committed_total);
  setText('dead-lettered', fmtInt(s.events_dead_lettered_total));
  setText('queue', fmtInt(s.queue_events));
  setText('queue-bytes', fmtBytes(s.queue_bytes));
  setText('spool', fmtBytes(s.spool_bytes));
  setText('connections', fmtInt(s.connections));
  setText('in-rate', rates ? fmtRate(rates.in) : '-');
  setText('committed-rate', rates ? fmtRate(rates.ok) : '-');
  setText('rejected-rate', rates ? fmtRate(rates.bad) : '-');
  if (s.postgres_up) badge('pg-status', 'PostgreSQL up', 'good');
  else badge('pg-status', 'PostgreSQL down', 'bad');
  showWriters(s);
  showReasons(s);
  showLogs(s);
}

function take(s, t) {
  let rates = null;
  if (prev && (s.uptime_seconds < prev.s.uptime_seconds ||
               s.events_received_total < prev.s.events_received_total)) {
    setText('note', 'restarted at ' + new Date(t).toLocaleTimeString());
    prev = null;
  }
  if (prev) {
    const secs = (t - prev.t) / 1000;
    rates = {
      in: delta(prev.s.events_received_total, s.events_received_total) / secs,
      ok: delta(prev.s.events_committed_total, s.events_committed_total) / secs,
      bad: delta(sumValues(prev.s.events_rejected_total),
                 sumValues(s.events_rejected_total)) / secs,
    };
    push('in', t, rates.in);
    push('ok', t, rates.ok);
    push('bad', t, rates.bad);
    push('p99', t, p99(prev.s.event_commit_latency_seconds, s.event_commit_latency_seconds));
  }
  push('queue', t, s.queue_events);
  push('spool', t, s.spool_bytes);
  showFigures(s, rates);
  prev = { t: t, s: s };
}

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue('--' + name).trim();
}

// Lines of LISTS ([[color, series], ...]) on canvas ID, time on x, 0..max on y.
function draw(id, lists, fmt) {
  const c = $(id);
  const w = c.clientWidth, h = c.clientHeight, dpr = window.devicePixelRatio || 1;
  if (!w || !h) return;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
  }
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = Date.now(), top = 14, bottom = h - 2;
  let max = 0;
  for (const [, pts] of lists)
    for (const [, v] of pts) if (v !== null && v > max) max = v;
  const scale = max > 0 ? max * 1.1 : 1;
  g.strokeStyle = color('line');
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(0, bottom + 0.5);
  g.lineTo(w, bottom + 0.5);
  g.stroke();
  g.fillStyle = color('muted');
  g.font = '11px system-ui, sans-serif';
  g.fillText('max ' + fmt(max) + '   last 5 min', 2, 11);
  for (const [name, pts] of lists) {
    g.strokeStyle = color(name);
    g.lineWidth = 1.5;
    g.beginPath();
    let tPrev = null;
    for (const [t, v] of pts) {
      if (v === null) { tPrev = null; continue; }
      const x = w - (now - t) / (WINDOW_S * 1000) * w;
      const y = bottom - v / scale * (bottom - top);
      if (tPrev === null || t - tPrev > GAP_S * 1000) g.moveTo(x, y);
      else g.lineTo(x, y);
      tPrev = t;
    }
    g.stroke();
  }
}

function drawAll() {
  draw('chart-rates', [['in', series.in], ['ok', series.ok], ['bad', series.bad]], fmtRate);
  draw('chart-queue', [['in', series.queue]], fmtInt);
  draw('chart-spool', [['warn', series.spool]], fmtBytes);
  draw('chart-p99', [['ok', series.p99]], fmtSeconds);
}

function lost(why) {
  const since = lastAnswer ? ' (' + Math.round((Date.now() - lastAnswer) / 1000) + ' s)' : '';
  badge('conn-status', 'reconnecting' + since, 'bad');
  $('conn-status').title = why;
  $('main').classList.add('stale');
}

async function poll() {
  const started = Date.now();
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const r = await fetch('/stats', { cache: 'no-store', signal: ctl.signal });
    if (!r.ok) throw new Error('/stats answered ' + r.status);
    const s = await r.json();
    lastAnswer = Date.now();
    take(s, lastAnswer);
    badge('conn-status', 'live', 'good');
    $('conn-status').title = '';
    $('main').classList.remove('stale');
  } catch (e) {
    lost(String(e && e.message || e));
  } finally {
    clearTimeout(timer);
  }
  drawAll();
  setTimeout(poll, Math.max(100, POLL_MS - (Date.now() - started)));
}

window.addEventListener('resize', drawAll);
poll();
