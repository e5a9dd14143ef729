// wasmgate dashboard: polls the admin API of the listener that served it and draws routes,
// upstreams and plugins. No framework and no build step: the gateway embeds this file as is.
"use strict";

const POLL_MS = 1500;
const HISTORY = 40;
const TOKEN_KEY = "wasmgate-admin-token";
// The phases in the order a request meets them, as the WIT names them.
const PHASES = ["init", "request-headers", "request-body", "select-upstream", "upstream-request",
  "upstream-error", "response-headers", "response-body", "response-trailers", "log"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  tokenTried: false,
  previous: null, // { at, metrics } of the last poll, for rates and windowed percentiles
  rates: new Map(), // route -> requests/s, last HISTORY polls
  lastGood: null,
};

class Unauthorized extends Error {}

const $ = (id) => document.getElementById(id);

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function api(path, text) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return text ? response.text() : response.json();
}

// Prometheus text: name -> [{ labels, value }].
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line[0] === "#") continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: Number(m[3]) });
  }
  return out;
}

function sumBy(metrics, name, key) {
  const out = new Map();
  for (const s of metrics.get(name) || []) {
    const k = key(s.labels);
    if (k !== null) out.set(k, (out.get(k) || 0) + s.value);
  }
  return out;
}

// Cumulative buckets of a histogram per key: key -> Map(le -> count).
function bucketsBy(metrics, name, key) {
  const out = new Map();
  for (const s of metrics.get(`${name}_bucket`) || []) {
    const k = key(s.labels);
    if (!out.has(k)) out.set(k, new Map());
    out.get(k).set(s.labels.le, s.value);
  }
  return out;
}

// The bucket bound holding quantile q of the observations between two polls (or since start,
// without a previous poll); null when nothing was observed.
function quantile(now, before, q) {
  if (!now) return null;
  const rows = [...now.entries()]
    .map(([le, count]) => [le === "+Inf" ? Infinity : Number(le), count - ((before && before.get(le)) || 0)])
    .sort((a, b) => a[0] - b[0]);
  const total = rows.length ? rows[rows.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  for (let i = 0; i < rows.length; i++) {
    if (rows[i][1] >= rank) return rows[i][0] === Infinity ? -(rows[i - 1] || [0])[0] : rows[i][0];
  }
  return null;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 0) return `> ${seconds(-value)}`;
  if (value < 1e-3) return `${Math.round(value * 1e6)} µs`;
  if (value < 1) return `${+(value * 1e3).toPrecision(3)} ms`;
  return `${+value.toPrecision(3)} s`;
}

function bytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log2(n) / 10));
  return `${+(n / 2 ** (10 * i)).toPrecision(3)} ${units[i]}`;
}

function rate(value) {
  return value === null ? "–" : value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

// What compression made of a route's bytes: "1.2 MiB → 31%".
function compressed(into, out) {
  return into ? `${bytes(into)} → ${((100 * (out || 0)) / into).toFixed(0)}%` : "–";
}

// What a route's cache answered: "83% of 1200 · 4.1 MiB" (hits, stale and revalidated answers
// over lookups that did not bypass it; bytes held).
function cached(answered, looked, held) {
  return looked ? `${((100 * (answered || 0)) / looked).toFixed(0)}% of ${looked} · ${bytes(held || 0)}` : "–";
}

function when(ms) {
  return new Date(ms).toLocaleTimeString();
}

function spark(values) {
  const max = Math.max(1, ...values);
  const step = 90 / Math.max(1, HISTORY - 1);
  const offset = (HISTORY - values.length) * step;
  const points = values.map((v, i) => `${(offset + i * step).toFixed(1)},${(21 - (v / max) * 20).toFixed(1)}`);
  return `<svg class="spark" viewBox="0 0 90 22" aria-hidden="true"><polyline points="${points.join(" ")}"/></svg>`;
}

function drawStatus(status) {
  const g = $("generation");
  g.className = "";
  g.textContent = `wasmgate ${status.version} · generation ${status.generation}, loaded ${when(status.loaded_at_ms)} from ${status.config_file}${status.draining ? " · draining" : ""}`;
  const r = $("reload");
  const last = status.last_reload;
  if (!last) {
    r.className = "muted";
    r.textContent = "No reload since start.";
  } else if (last.ok) {
    r.className = "muted";
    r.textContent = `Last reload ${when(last.at_ms)}: applied (${last.plugins_loaded} plugins loaded, ${last.plugins_kept} kept).`;
  } else {
    r.className = "faulted";
    r.textContent = `Last reload ${when(last.at_ms)} was refused; the previous config keeps serving: ${last.error}`;
  }
}

function drawRoutes(status, metrics, previous, dt) {
  const key = (l) => l.route;
  const totals = sumBy(metrics, "wasmgate_requests_total", key);
  const before = previous ? sumBy(previous, "wasmgate_requests_total", key) : new Map();
  const classes = sumBy(metrics, "wasmgate_requests_total", (l) => `${l.route} ${String(l.status)[0]}`);
  const buckets = bucketsBy(metrics, "wasmgate_request_duration_seconds", (l) => l.name);
  const beforeBuckets = previous ? bucketsBy(previous, "wasmgate_request_duration_seconds", (l) => l.name) : new Map();
  const squeezed = (direction) => sumBy(metrics, "wasmgate_compression_bytes_total", (l) => (l.direction === direction ? l.route : null));
  const [compressedIn, compressedOut] = [squeezed("in"), squeezed("out")];
  const fromCache = sumBy(metrics, "wasmgate_cache_requests_total", (l) => (["hit", "stale", "revalidated"].includes(l.result) ? l.route : null));
  const lookups = sumBy(metrics, "wasmgate_cache_requests_total", (l) => (l.result === "bypass" ? null : l.route));
  const held = sumBy(metrics, "wasmgate_cache_bytes", (l) => l.name);
  const names = [...status.routes, ...[...totals.keys()].filter((n) => !status.routes.includes(n))];
  const rows = names.map((name) => {
    const total = totals.get(name) || 0;
    const perSecond = previous && dt > 0 ? Math.max(0, total - (before.get(name) || 0)) / dt : null;
    const history = state.rates.get(name) || [];
    if (perSecond !== null) history.push(perSecond);
    if (history.length > HISTORY) history.shift();
    state.rates.set(name, history);
    const cls = (c) => classes.get(`${name} ${c}`) || 0;
    const p = (q) => seconds(quantile(buckets.get(name), previous ? beforeBuckets.get(name) : null, q));
    return `<tr data-route="${esc(name)}"><td>${esc(name)}</td><td><span class="rate">${rate(perSecond)}</span> ${spark(history)}</td>` +
      `<td class="requests">${total}</td><td>${cls(2)}</td><td>${cls(3)}</td><td>${cls(4)}</td>` +
      `<td class="${cls(5) ? "faulted" : ""}">${cls(5)}</td><td class="p50">${p(0.5)}</td><td class="p99">${p(0.99)}</td>` +
      `<td class="compressed">${compressed(compressedIn.get(name), compressedOut.get(name))}</td>` +
      `<td class="cache">${cached(fromCache.get(name), lookups.get(name), held.get(name))}</td></tr>`;
  });
  $("routes").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="11">No routes.</td></tr>`;
}

function drawUpstreams(upstreams) {
  const cards = Object.entries(upstreams).map(([name, group]) => {
    const reuse = group.requests ? `${(100 * (1 - group.new_connections / group.requests)).toFixed(0)}%` : "–";
    const rows = group.backends.map((b) => {
      const health = b.ejected
        ? `<span class="badge warn">ejected</span>`
        : b.healthy ? `<span class="badge ok">healthy</span>` : `<span class="badge bad">unhealthy</span>`;
      const resolved = b.resolved !== b.address ? ` <span class="muted">${esc(b.resolved)}</span>` : "";
      return `<tr data-backend="${esc(b.address)}"><td>${esc(b.address)}${resolved}</td><td class="health">${health}</td>` +
        `<td>${b.weight}</td><td class="in-flight">${b.in_flight}</td></tr>`;
    });
    return `<div class="card" data-group="${esc(name)}"><h3>${esc(name)}</h3>` +
      `<p class="muted">${group.requests ?? 0} requests sent, ${group.new_connections ?? 0} on new connections (${reuse} reused)</p>` +
      `<div class="scroll"><table><thead><tr><th>Backend</th><th>State</th><th>Weight</th><th>In flight</th></tr></thead>` +
      `<tbody>${rows.join("")}</tbody></table></div></div>`;
  });
  $("upstreams").innerHTML = cards.length ? `<div class="cards">${cards.join("")}</div>` : `<p class="muted">No upstream groups.</p>`;
}

function drawPlugins(plugins, metrics, previous, dt) {
  const calls = sumBy(metrics, "wasmgate_plugin_call_duration_seconds_count", (l) => l.plugin);
  const callsBefore = previous ? sumBy(previous, "wasmgate_plugin_call_duration_seconds_count", (l) => l.plugin) : new Map();
  const buckets = bucketsBy(metrics, "wasmgate_plugin_call_duration_seconds", (l) => `${l.plugin} ${l.phase}`);
  const beforeBuckets = previous ? bucketsBy(previous, "wasmgate_plugin_call_duration_seconds", (l) => `${l.plugin} ${l.phase}`) : new Map();
  const card = (name, p, title) => {
    const f = p.faults;
    const faults = f.traps + f.deadline + f.memory + f.pool_exhausted;
    const total = calls.get(name) || 0;
    const perSecond = previous && dt > 0 ? Math.max(0, total - (callsBefore.get(name) || 0)) / dt : null;
    // Phases the plugin was called in; the others are not worth a row.
    const called = (phase) => ((buckets.get(`${name} ${phase}`) || new Map()).get("+Inf") || 0) > 0;
    const phases = PHASES.filter(called).map((phase) => {
      const now = buckets.get(`${name} ${phase}`);
      const before = previous ? beforeBuckets.get(`${name} ${phase}`) : null;
      const count = now.get("+Inf") || 0;
      return `<tr data-phase="${esc(phase)}"><td>${esc(phase)}</td><td>${count}</td>` +
        `<td>${seconds(quantile(now, before, 0.5))}</td><td>${seconds(quantile(now, before, 0.99))}</td></tr>`;
    });
    const flags = p.flags.map((flag) => `<p class="flag">${esc(flag.message)} Raise <code>${esc(flag.raise)}</code>.</p>`);
    const memory = p.memory.limit ? `${bytes(p.memory.peak)} of ${bytes(p.memory.limit)}` : bytes(p.memory.peak);
    const canary = p.canary
      ? `<p class="muted">Canary ${esc(p.canary.sha256.slice(0, 12))} at weight ${p.canary.weight}${p.canary.rolled_back ? `, rolled back: ${esc(p.canary.rolled_back)}` : ""}</p>`
      : "";
    return `<div class="card" data-plugin="${esc(name)}"><h3>${esc(title)}</h3><dl>` +
      `<dt>Calls</dt><dd><span class="calls">${total}</span> in all phases (${rate(perSecond)}/s)</dd>` +
      `<dt>Faults</dt><dd class="${faults ? "faulted" : ""}"><span class="faults">${faults}</span> (trap ${f.traps}, deadline ${f.deadline}, memory ${f.memory}, no instance ${f.pool_exhausted})</dd>` +
      `<dt>Instances</dt><dd class="instances">${p.instances.in_use} in use, ${p.instances.idle} idle, ${p.instances.max} at most</dd>` +
      `<dt>Memory peak</dt><dd class="memory">${memory}</dd>` +
      `<dt>Deadline used</dt><dd>${p.deadline.p99_used === null ? "–" : `${(100 * p.deadline.p99_used).toFixed(0)}% at p99`} of ${p.deadline.ms} ms</dd>` +
      `<dt>Pool waits</dt><dd>${p.pool_wait.waits}</dd></dl>` +
      (phases.length ? `<div class="scroll"><table><thead><tr><th>Phase</th><th>Calls</th><th>p50</th><th>p99</th></tr></thead><tbody>${phases.join("")}</tbody></table></div>` : "") +
      flags.join("") + canary + `</div>`;
  };
  const cards = Object.entries(plugins).map(([name, p]) => card(name, p, name));
  $("plugins").innerHTML = cards.length ? `<div class="cards">${cards.join("")}</div>` : `<p class="muted">No plugins loaded.</p>`;
}

function show(view, message) {
  $("token-form").hidden = view !== "token";
  $("main").hidden = view === "token" || state.lastGood === null;
  $("main").classList.toggle("stale", view === "unreachable");
  $("forget").hidden = !state.token;
  const banner = $("banner");
  banner.hidden = !message;
  banner.textContent = message || "";
}

async function poll() {
  try {
    const [status, upstreams, plugins, text] = await Promise.all([
      api("/status"), api("/upstreams"), api("/plugins"), api("/metrics", true),
    ]);
    const at = performance.now();
    const metrics = parseMetrics(text);
    const previous = state.previous;
    const dt = previous ? (at - previous.at) / 1000 : 0;
    drawStatus(status);
    drawRoutes(status, metrics, previous && previous.metrics, dt);
    drawUpstreams(upstreams);
    drawPlugins(plugins, metrics, previous && previous.metrics, dt);
    state.previous = { at, metrics };
    state.lastGood = Date.now();
    state.tokenTried = false;
    show("data");
  } catch (error) {
    if (error instanceof Unauthorized) {
      $("token-message").textContent = state.tokenTried
        ? "That token was refused. Check [admin] token in the gateway's config."
        : "";
      if (state.token) sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      show("token");
      return; // polling resumes once a token is entered
    }
    const since = state.lastGood ? ` The figures below are from ${when(state.lastGood)}.` : "";
    const reason = error instanceof TypeError ? "no answer" : error.message;
    show("unreachable", `The gateway's admin API at ${location.host} is unreachable (${reason}); retrying every ${POLL_MS / 1000} s.${since}`);
  }
  setTimeout(poll, POLL_MS);
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token-input").value;
  state.tokenTried = true;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token-input").value = "";
  $("token-message").textContent = "";
  poll();
});

$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

poll();
