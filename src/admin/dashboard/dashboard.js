// Pointsman dashboard (SPEC 8.1). Reads the admin JSON endpoints of the
// address it was served from, at most every 2 s, and changes nothing
// without a click. No dependencies; charts are inline SVG.
'use strict';

const REFRESH_MS = 2000;
const TOKEN_KEY = 'pointsman.admin-token';
const SVG_NS = 'http://www.w3.org/2000/svg';

// ---- small DOM helpers (text only: names from the config are never HTML)

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

const $ = (id) => document.getElementById(id);

// ---- formatting

const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
function pct(x, digits = 1) {
  if (x === null || x === undefined) return '–';
  return (x * 100).toFixed(digits) + '%';
}
function ms(x) {
  if (x === null || x === undefined) return '–';
  return x < 10 ? x.toFixed(2) + ' ms' : x < 100 ? x.toFixed(1) + ' ms' : Math.round(x) + ' ms';
}
function duration(msec) {
  if (msec === null || msec === undefined) return '–';
  let s = Math.round(msec / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (h) return `${h}h ${m}m`;
  if (m) return s ? `${m}m ${s}s` : `${m}m`;
  return `${s}s`;
}
function pvalue(p) {
  if (p === null || p === undefined) return '–';
  return p < 0.0001 ? p.toExponential(1) : p.toFixed(4);
}
function signedPct(x) {
  return (x >= 0 ? '+' : '') + pct(x, 2);
}

// ---- the admin API

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store', headers: { accept: 'application/json' } });
  if (!r.ok) {
    const err = new Error(`${path}: ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

async function post(path) {
  const headers = {};
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  const r = await fetch(path, { method: 'POST', headers, cache: 'no-store' });
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null;
  }
  return { status: r.status, body };
}

// ---- the modal: confirmations and the admin token

function ask({ title, text, wantToken }) {
  const dialog = $('ask');
  $('ask-title').textContent = title;
  $('ask-text').textContent = text || '';
  $('ask-label').hidden = !wantToken;
  const input = $('ask-input');
  input.value = '';
  return new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const form = $('ask-form');
    const cancel = $('ask-cancel');
    const onSubmit = (ev) => {
      ev.preventDefault();
      done(wantToken ? input.value.trim() || null : true);
    };
    const onCancel = (ev) => {
      ev.preventDefault();
      done(wantToken ? null : false);
    };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    (wantToken ? input : $('ask-ok')).focus();
  });
}

function notice(text, kind) {
  const n = $('notice');
  n.textContent = text;
  n.className = `notice ${kind || ''}`;
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => (n.hidden = true), 8000);
}

// An operator action: confirmed first when it moves users at once, then
// posted; on 401/403 the token is asked for and the action repeated.
async function act(path, what, { confirmText } = {}) {
  if (confirmText && !(await ask({ title: what + '?', text: confirmText }))) return;
  let r = await post(path);
  for (let tries = 0; (r.status === 401 || r.status === 403) && tries < 3; tries++) {
    const t = await ask({
      title: r.status === 403 ? 'Wrong admin token' : 'Admin token needed',
      text: `${what}: this proxy needs its admin token (admin.token_file). It is kept for this browser tab only.`,
      wantToken: true,
    });
    if (!t) {
      notice(`${what}: cancelled`, 'warn');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    r = await post(path);
  }
  if (r.status === 200) {
    notice(`${what}: done`, 'ok');
  } else {
    const why = r.body && r.body.error ? r.body.error : `answered ${r.status}`;
    notice(`${what}: ${why}`, 'bad');
  }
  renderTokenState();
  refreshSoon(0);
}

function renderTokenState() {
  const p = $('token-state');
  p.replaceChildren();
  if (token()) {
    p.append(
      'An admin token is kept for this tab. ',
      el('button', {
        class: 'link',
        onclick: () => {
          sessionStorage.removeItem(TOKEN_KEY);
          renderTokenState();
        },
      }, 'Forget it'),
    );
  } else {
    p.append('Buttons ask for the admin token when the proxy needs one.');
  }
}

// ---- charts: one small SVG line chart per metric, one line per arm

const CHART_W = 300;
const CHART_H = 90;
const PAD_L = 12;
const PAD_B = 14;

function chart(title, at, arms, pick, fmt, windowMs, now) {
  const w = CHART_W - PAD_L;
  const h = CHART_H - PAD_B - 4;
  let max = 0;
  for (const a of arms) for (const v of pick(a)) if (v !== null && v > max) max = v;
  const top = max > 0 ? max * 1.1 : 1;
  const x = (t) => PAD_L + w * Math.min(1, Math.max(0, 1 - (now - t) / windowMs));
  const y = (v) => 4 + h - (h * v) / top;
  const g = svg('svg', {
    viewBox: `0 0 ${CHART_W} ${CHART_H}`,
    class: 'chart',
    role: 'img',
    'aria-label': title,
  });
  g.append(
    svg('line', { x1: PAD_L, y1: 4 + h, x2: CHART_W, y2: 4 + h, class: 'axis' }),
    svg('line', { x1: PAD_L, y1: 4, x2: CHART_W, y2: 4, class: 'grid' }),
  );
  const label = (tx, ty, text, anchor) => {
    const t = svg('text', { x: tx, y: ty, class: 'tick', 'text-anchor': anchor || 'end' });
    t.textContent = text;
    return t;
  };
  g.append(
    // The scale's top, inside the plot (long labels never clip).
    label(PAD_L + 3, 12, max > 0 ? fmt(top) : '', 'start'),
    label(PAD_L - 3, 4 + h, '0'),
    label(PAD_L, CHART_H - 2, `-${Math.round(windowMs / 60000)}m`, 'start'),
    label(CHART_W, CHART_H - 2, 'now'),
  );
  arms.forEach((a, i) => {
    const values = pick(a);
    let d = '';
    let pen = false;
    values.forEach((v, j) => {
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${x(at[j]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d) g.append(svg('path', { d, class: `line s${i % 6}` }));
    // A lone point has no segment: mark every point lightly.
    values.forEach((v, j) => {
      if (v !== null && v !== undefined) {
        g.append(svg('circle', { cx: x(at[j]).toFixed(1), cy: y(v).toFixed(1), r: 1.6, class: `dot s${i % 6}` }));
      }
    });
  });
  return el('figure', { class: 'chart-box' }, el('figcaption', {}, title), g);
}

function charts(series, seriesMeta) {
  if (!series) return el('p', { class: 'muted small' }, 'charts: no data yet');
  const { now, windowMs, bucketMs } = seriesMeta;
  // A short history is drawn over at least 3 minutes rather than squeezed
  // into the right edge of 15.
  const span = series.at.length
    ? Math.min(windowMs, Math.max(3 * 60000, now - series.at[0] + bucketMs))
    : windowMs;
  const legend = el(
    'div',
    { class: 'legend' },
    series.arms.map((a, i) => el('span', { class: `key s${i % 6}` }, a.name)),
  );
  if (!series.at.length) {
    return el('div', { class: 'charts-wrap' }, legend,
      el('p', { class: 'muted small' }, `charts: the first point comes after ${duration(bucketMs)}`));
  }
  return el(
    'div',
    { class: 'charts-wrap' },
    legend,
    el(
      'div',
      { class: 'charts' },
      chart(`requests / ${duration(bucketMs)}`, series.at, series.arms, (a) => a.requests, (v) => num(Math.round(v)), span, now),
      chart('error rate', series.at, series.arms, (a) => a.error_rate, (v) => pct(v, 1), span, now),
      chart('p99 latency', series.at, series.arms, (a) => a.p99_ms, ms, span, now),
    ),
  );
}

// ---- canaries

const CANARY_ACTIONS = {
  pause: { ok: ['static', 'progressing'] },
  resume: { ok: ['paused', 'rolled_back'] },
  promote: { notIn: ['promoted'], confirm: 'Every user goes to the canary at once (weight 100%).' },
  rollback: { notIn: ['rolled_back'], confirm: 'Every user goes back to stable at once (weight 0%).' },
};

function canaryActionApplies(action, state) {
  const a = CANARY_ACTIONS[action];
  return a.ok ? a.ok.includes(state) : !a.notIn.includes(state);
}

const canaryCards = new Map();

function canaryCard(name) {
  if (canaryCards.has(name)) return canaryCards.get(name);
  const parts = {
    head: el('div', { class: 'card-head' }),
    body: el('div', { class: 'card-body' }),
    charts: el('div', {}),
    buttons: {},
  };
  const bar = el('div', { class: 'buttons' });
  for (const action of Object.keys(CANARY_ACTIONS)) {
    const b = el('button', {
      'data-canary': name,
      'data-action': action,
      class: action === 'rollback' ? 'danger' : '',
      onclick: () => act(`/canaries/${encodeURIComponent(name)}/${action}`, `${action} canary ${name}`, {
        confirmText: CANARY_ACTIONS[action].confirm,
      }),
    }, action);
    parts.buttons[action] = b;
    bar.append(b);
  }
  parts.card = el('article', { class: 'card', 'data-canary': name }, parts.head, parts.body, bar, parts.charts);
  canaryCards.set(name, parts);
  return parts;
}

function ladder(c) {
  if (!c.ladder || !c.ladder.length) {
    return el('p', { class: 'small' }, `fixed weight: ${c.weight}%`);
  }
  const steps = c.ladder.map((s, i) => {
    const cls = i < c.step ? 'step done' : i === c.step ? 'step current' : 'step';
    const hold = s.hold_ms === null ? 'last' : duration(s.hold_ms);
    const extra = i === c.step && c.hold_remaining_ms !== null ? ` · ${duration(c.hold_remaining_ms)} left` : '';
    return el('li', { class: cls, title: `step ${i}` }, el('b', {}, `${s.weight}%`), ` ${hold}${extra}`);
  });
  return el('ol', { class: 'ladder', 'aria-label': 'steps' }, steps);
}

function guardCell(value, limit, fmt) {
  if (limit === null || limit === undefined || value === null || value === undefined) return el('td', {}, fmt(value));
  const ratio = value / limit;
  const cls = ratio > 1 ? 'bad' : ratio > 0.7 ? 'warn' : '';
  return el('td', { class: cls, title: `limit ${fmt(limit)}` }, fmt(value));
}

function windowTable(c) {
  const g = c.guard;
  const rows = ['stable', 'canary'].map((arm) => {
    const s = c[arm] || {};
    const judged = g && arm === 'canary';
    const p99 = judged ? guardCell(s.p99_ms, g.max_p99_ms, ms) : el('td', {}, ms(s.p99_ms));
    let rate = el('td', {}, pct(s.error_rate, 2));
    if (judged) {
      let limit = g.max_error_rate;
      if (g.max_error_rate_increase !== null && g.max_error_rate_increase !== undefined) {
        const viaStable = (c.stable.error_rate || 0) + g.max_error_rate_increase;
        limit = limit === null || limit === undefined ? viaStable : Math.min(limit, viaStable);
      }
      rate = guardCell(s.error_rate, limit, (v) => pct(v, 2));
    }
    return el('tr', {}, el('th', {}, arm), el('td', {}, num(s.requests)), el('td', {}, num(s.errors)), rate, p99);
  });
  const caption = g
    ? `guard window ${duration(g.window_ms)}: judged from ${num(g.min_requests)} canary requests; ` +
      [
        g.max_error_rate !== null ? `error rate ≤ ${pct(g.max_error_rate, 2)}` : null,
        g.max_error_rate_increase !== null ? `≤ stable + ${pct(g.max_error_rate_increase, 2)}` : null,
        g.max_p99_ms !== null ? `p99 ≤ ${ms(g.max_p99_ms)}` : null,
      ].filter(Boolean).join(', ') + `; on breach: ${g.on_breach}`
    : 'no guard: window of the last minute';
  return el('div', { class: 'scroll' }, el('table', { class: 'window' },
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, ['arm', 'requests', 'errors', 'error rate', 'p99'].map((h) => el('th', {}, h)))),
    el('tbody', {}, rows)));
}

function renderCanaries(list, seriesByName, seriesMeta) {
  const root = $('canary-list');
  if (!list.length) {
    root.replaceChildren(el('p', { class: 'muted' }, 'no canary routes in this config'));
    canaryCards.clear();
    return;
  }
  const keep = new Set(list.map((c) => c.name));
  for (const name of canaryCards.keys()) if (!keep.has(name)) canaryCards.delete(name);
  const cards = list.map((c) => {
    const p = canaryCard(c.name);
    p.card.dataset.state = c.state;
    p.head.replaceChildren(
      el('h3', {}, c.name),
      el('span', { class: `badge state-${c.state}`, 'data-field': 'state' }, c.state.replace('_', ' ')),
      canaryUpstreams.has(c.name)
        ? el('span', { class: 'muted small' },
          `stable ${canaryUpstreams.get(c.name).stable} · canary ${canaryUpstreams.get(c.name).canary}`)
        : null,
    );
    const bar = el('div', { class: 'weight-bar', title: `${c.weight}% on the canary` }, el('div', { class: 'weight-fill' }));
    bar.firstChild.style.width = `${Math.max(0, Math.min(100, c.weight))}%`;
    p.body.replaceChildren(
      el('p', { class: 'weight' }, el('b', { 'data-field': 'weight' }, `${c.weight}%`), ' of users on the canary',
        c.steps ? ` · step ${c.step + 1} of ${c.steps}` : ''),
      bar,
      ladder(c),
      windowTable(c),
    );
    for (const [action, b] of Object.entries(p.buttons)) b.disabled = !canaryActionApplies(action, c.state);
    p.charts.replaceChildren(charts(seriesByName.get(c.name), seriesMeta));
    return p.card;
  });
  if (cards.some((card, i) => root.children[i] !== card) || root.children.length !== cards.length) {
    root.replaceChildren(...cards);
  }
}

// ---- experiments

const experimentCards = new Map();

function experimentCard(name) {
  if (experimentCards.has(name)) return experimentCards.get(name);
  const enc = encodeURIComponent(name);
  const parts = {
    head: el('div', { class: 'card-head' }),
    body: el('div', { class: 'card-body' }),
    release: el('span', { class: 'release' }),
    charts: el('div', {}),
    stop: el('button', {
      class: 'danger',
      'data-experiment': name,
      'data-action': 'stop',
      onclick: () => act(`/experiments/${enc}/stop`, `stop experiment ${name}`, {
        confirmText: 'Nobody is enrolled any more: every request goes to the route\'s own upstream.',
      }),
    }, 'stop'),
    resume: el('button', {
      'data-experiment': name,
      'data-action': 'resume',
      onclick: () => act(`/experiments/${enc}/resume`, `resume experiment ${name}`),
    }, 'resume'),
    releaseButtons: new Map(),
  };
  parts.card = el('article', { class: 'card', 'data-experiment': name }, parts.head, parts.body,
    el('div', { class: 'buttons' }, parts.stop, parts.resume, parts.release), parts.charts);
  experimentCards.set(name, parts);
  return parts;
}

function releaseButton(parts, name, variant) {
  if (parts.releaseButtons.has(variant)) return parts.releaseButtons.get(variant);
  const b = el('button', {
    'data-experiment': name,
    'data-action': 'release',
    'data-variant': variant,
    onclick: () => act(
      `/experiments/${encodeURIComponent(name)}/release?variant=${encodeURIComponent(variant)}`,
      `release ${variant} of ${name}`,
      { confirmText: `Everybody eligible gets ${variant}, until resumed.` },
    ),
  }, `release ${variant}`);
  parts.releaseButtons.set(variant, b);
  return b;
}

function variantRows(e) {
  return e.variants.map((v) => {
    const g = v.vs_first;
    let vs = '–';
    let vsClass = '';
    if (g) {
      vs = `${signedPct(g.difference)} [${signedPct(g.interval[0])}, ${signedPct(g.interval[1])}] p=${pvalue(g.p_value)}`;
      if (g.p_value < 0.05 && g.difference > 0) vsClass = 'bad';
    }
    const released = e.state === 'released' && e.released_variant === v.name;
    return el('tr', { class: released ? 'released' : '' },
      el('th', {}, v.name, released ? ' (released)' : ''),
      el('td', {}, pct(v.share)),
      el('td', { 'data-field': 'observed' }, pct(v.observed_share)),
      el('td', {}, num(v.users)),
      el('td', {}, num(v.requests)),
      el('td', {}, num(v.errors_5xx)),
      el('td', {}, pct(v.error_rate, 2)),
      el('td', {}, ms(v.p50_ms)),
      el('td', {}, ms(v.p99_ms)),
      el('td', { class: vsClass, title: 'difference of the 5xx rate to the first variant, 95% interval, p-value' }, vs));
  });
}

function renderExperiments(list, seriesByName, seriesMeta) {
  const root = $('experiment-list');
  if (!list.length) {
    root.replaceChildren(el('p', { class: 'muted' }, 'no experiments in this config'));
    experimentCards.clear();
    return;
  }
  const keep = new Set(list.map((e) => e.name));
  for (const name of experimentCards.keys()) if (!keep.has(name)) experimentCards.delete(name);
  const cards = list.map((e) => {
    const p = experimentCard(e.name);
    const srm = e.p_value === null || e.p_value === undefined
      ? el('span', { class: 'badge', 'data-field': 'srm' }, 'SRM: not enough users yet')
      : e.srm
        ? el('span', { class: 'badge bad', 'data-field': 'srm' }, `SRM: mismatch (p=${pvalue(e.p_value)})`)
        : el('span', { class: 'badge ok', 'data-field': 'srm' }, `SRM: ok (p=${pvalue(e.p_value)})`);
    p.head.replaceChildren(
      el('h3', {}, e.name),
      el('span', { class: `badge state-${e.state}`, 'data-field': 'state' },
        e.state === 'released' ? `released: ${e.released_variant}` : e.state),
      srm,
    );
    p.body.replaceChildren(
      el('p', { class: 'small' },
        `${num(e.users)} users, ${num(e.total)} enrolled requests`,
        e.released_requests ? `, ${num(e.released_requests)} released` : '',
        e.users_saturated ? ' (user count saturated: best effort)' : ''),
      el('div', { class: 'scroll' }, el('table', { class: 'variants' },
        el('thead', {}, el('tr', {}, ['variant', 'configured', 'observed', 'users', 'requests', '5xx', 'error rate', 'p50', 'p99', '5xx vs first (95% CI)']
          .map((h) => el('th', {}, h)))),
        el('tbody', {}, variantRows(e)))),
    );
    p.stop.disabled = e.state === 'stopped';
    p.resume.disabled = e.state === 'running';
    p.release.replaceChildren(...e.variants.map((v) => {
      const b = releaseButton(p, e.name, v.name);
      b.disabled = e.state === 'released' && e.released_variant === v.name;
      return b;
    }));
    p.charts.replaceChildren(charts(seriesByName.get(e.name), seriesMeta));
    return p.card;
  });
  if (cards.some((card, i) => root.children[i] !== card) || root.children.length !== cards.length) {
    root.replaceChildren(...cards);
  }
}

// ---- upstreams, routes, config

function when(at) {
  if (!at) return '–';
  const t = Date.parse(at);
  if (Number.isNaN(t)) return String(at);
  const ago = Date.now() - t;
  return ago >= 0 ? `${duration(ago)} ago` : `in ${duration(-ago)}`;
}

function renderUpstreams(data) {
  const root = $('upstream-list');
  if (data === 404) {
    root.replaceChildren(el('p', { class: 'muted', 'data-field': 'upstreams-unavailable' },
      'upstream health: not available (this proxy has no GET /upstreams)'));
    return;
  }
  if (!data) return;
  const list = Array.isArray(data) ? data : data.upstreams || [];
  if (!list.length) {
    root.replaceChildren(el('p', { class: 'muted' }, 'no upstreams'));
    return;
  }
  root.replaceChildren(...list.map((u) => {
    const endpoints = u.endpoints || [];
    const healthy = endpoints.filter((e) => e.healthy !== false && !e.ejected).length;
    const rows = endpoints.map((e) => {
      const name = e.endpoint || e.address || e.authority || e.name || '?';
      const ej = e.ejected;
      const ejected = ej ? `until ${when(ej.until)}${ej.times_in_row ? ` (×${ej.times_in_row})` : ''}` : 'no';
      const check = e.last_check ? `${e.last_check.result || ''} ${when(e.last_check.at)}${e.last_check.reason ? ': ' + e.last_check.reason : ''}` : '–';
      const fail = e.last_failure ? `${e.last_failure.kind || ''} ${when(e.last_failure.at)}${e.last_failure.reason ? ': ' + e.last_failure.reason : ''}` : '–';
      const bad = e.healthy === false || ej;
      return el('tr', { class: bad ? 'bad-row' : '' },
        el('th', {}, name),
        el('td', { class: e.healthy === false ? 'bad' : 'good' }, e.healthy === false ? 'unhealthy' : 'healthy'),
        el('td', { class: ej ? 'bad' : '' }, ejected, e.ejections ? ` · ${e.ejections} total` : ''),
        el('td', {}, num(e.in_flight)),
        el('td', { class: 'wrap' }, check),
        el('td', { class: 'wrap' }, fail));
    });
    return el('article', { class: 'card wide' },
      el('div', { class: 'card-head' }, el('h3', {}, u.name),
        el('span', { class: `badge ${healthy === endpoints.length ? 'ok' : healthy ? 'warn' : 'bad'}` },
          `${healthy}/${endpoints.length} serving`),
        el('span', { class: 'muted small' }, [u.protocol, u.balance].filter(Boolean).join(' · '))),
      el('div', { class: 'scroll' }, el('table', {},
        el('thead', {}, el('tr', {}, ['endpoint', 'health', 'ejected', 'in flight', 'last check', 'last failure'].map((h) => el('th', {}, h)))),
        el('tbody', {}, rows))));
  }));
}

function actionText(a) {
  if (!a) return '–';
  if (a.canary) return `canary ${a.canary.stable} → ${a.canary.canary}`;
  if (a.experiment) return `${a.to} · experiment ${a.experiment}`;
  if (a.to) return `→ ${a.to}`;
  if (a.respond) return `respond ${a.respond.status}`;
  if (a.redirect) return `redirect ${a.redirect.status} ${a.redirect.to}`;
  return JSON.stringify(a);
}

// Route name → its canary's upstreams, from /routes.
const canaryUpstreams = new Map();

function renderRoutes(data) {
  const routes = data.routes || [];
  canaryUpstreams.clear();
  for (const r of routes) if (r.action && r.action.canary) canaryUpstreams.set(r.name, r.action.canary);
  $('route-list').replaceChildren(el('table', { class: 'routes' },
    el('thead', {}, el('tr', {}, ['#', 'route', 'match', 'action'].map((h) => el('th', {}, h)))),
    el('tbody', {}, routes.map((r, i) => el('tr', {},
      el('td', { class: 'muted' }, String(i + 1)),
      el('th', {}, r.name),
      el('td', { class: 'mono' }, r.match || '(everything)'),
      el('td', { class: 'wrap' }, actionText(r.action)))))));
}

function renderConfig(c) {
  const lr = c.last_reload;
  const reload = lr
    ? el('span', { class: lr.result === 'success' ? 'good' : 'bad' }, `${lr.result} ${when(lr.at)}`, lr.error ? `: ${lr.error}` : '')
    : 'none since start';
  const row = (k, ...v) => el('tr', {}, el('th', {}, k), el('td', {}, ...v));
  $('config-info').replaceChildren(el('table', { class: 'kv' }, el('tbody', {},
    row('generation', el('b', { 'data-field': 'generation' }, String(c.generation))),
    row('loaded', `${c.loaded_at || '–'} (${when(c.loaded_at)})`),
    row('sha256', el('span', { class: 'mono', title: c.sha256 }, (c.sha256 || '').slice(0, 16) + '…')),
    row('sources', el('span', { class: 'mono' }, (c.sources || []).join(', '))),
    row('last reload', reload),
    c.pending_restart ? row('pending restart', el('span', { class: 'warn' }, 'yes: some changes need a restart')) : null,
  )));
}

// ---- the refresh loop

let timer = null;
let generation = null;
let inFlight = false;

function refreshSoon(delay) {
  clearTimeout(timer);
  timer = setTimeout(refresh, delay);
}

async function optional(path) {
  try {
    return await getJson(path);
  } catch (e) {
    if (e.status === 404) return 404;
    throw e;
  }
}

async function refresh() {
  if (inFlight) return;
  if (document.hidden) return; // resumed by visibilitychange
  inFlight = true;
  const started = Date.now();
  try {
    const [config, canaries, experiments, series, upstreams] = await Promise.all([
      getJson('/config'),
      getJson('/canaries'),
      getJson('/experiments'),
      optional('/series'),
      optional('/upstreams'),
    ]);
    if (config.generation !== generation) {
      renderRoutes(await getJson('/routes'));
      generation = config.generation;
    }
    renderConfig(config);
    const byName = new Map();
    let meta = { now: Date.now(), windowMs: 900000, bucketMs: 10000 };
    if (series && series !== 404) {
      meta = { now: series.now, windowMs: series.bucket_ms * series.buckets, bucketMs: series.bucket_ms };
      for (const s of [...series.canaries, ...series.experiments]) byName.set(s.name, s);
    }
    renderCanaries(canaries.canaries || [], byName, meta);
    renderExperiments(experiments.experiments || [], byName, meta);
    renderUpstreams(upstreams);
    const s = $('status');
    s.textContent = `${location.host} · generation ${config.generation} · updated ${new Date().toLocaleTimeString()}`;
    s.className = 'status ok';
  } catch (e) {
    const s = $('status');
    s.textContent = `admin API unreachable (${e.message}); retrying`;
    s.className = 'status bad';
  } finally {
    inFlight = false;
    refreshSoon(Math.max(REFRESH_MS - (Date.now() - started), REFRESH_MS / 2));
  }
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) refreshSoon(0);
});
renderTokenState();
refresh();
