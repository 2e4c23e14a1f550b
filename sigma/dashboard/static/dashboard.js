// The live dashboard. It talks to the gateway only through SigmaClient; every incoming event is
// queued and the page is rendered once per animation frame, so a burst costs one render.
// The event log keeps at most LOG_ROWS rows in the DOM.

import { ALL_TYPES, SigmaClient } from "/static/sigma-client.js";

const LOG_ROWS = 200;
const RING = 1000; // events kept for re-filtering the log
const WINDOW_S = 600; // charts show the last 10 minutes
const ALERTS = 4;

const $ = (id) => document.getElementById(id);
const text = (value) => (value === null || value === undefined ? "–" : String(value));
const pct = (value) => (typeof value === "number" ? value.toFixed(1) : "–");
const bytes = (n) => {
  if (typeof n !== "number") return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key === "title") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : text(child));
  return node;
};

// --- the token (auth mode "jwt"): from #token=..., never sent to a server or a log -----------

function takeToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) history.replaceState(null, "", location.pathname + location.search);
  return token;
}

const client = new SigmaClient({ token: takeToken(), types: ALL_TYPES });
let everWelcomed = false;

// --- page state, changed by events and rendered per frame ---------------------------------------

const pending = [];
const ring = [];
const dirty = new Set();
const view = {
  system: null,
  storage: null,
  agents: new Map(),
  jobs: new Map(),
  tree: null,
  flashed: new Set(),
  alerts: [],
  heartbeatAt: null,
  sessions: { count: null, at: -Infinity },
  paused: false,
  filter: "",
  received: 0,
};
const series = { t: [], cpu: [], mem: [], load: [] };
let frameRequested = false;

function schedule(part) {
  dirty.add(part);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(render);
  }
}

client.on("event", (event) => {
  pending.push(event);
  schedule("events");
});
client.on("state", () => schedule("connection"));
client.on("welcome", (data) => {
  everWelcomed = true;
  view.sessions.at = -Infinity; // another server's (or a restarted one's) clock from now on
  noteSessions(data.client_count, client.welcomedAt);
  // The server's newest heartbeat, so the age shows at once rather than after the next beat.
  const beat = Date.parse(data.last_heartbeat_at);
  if (Number.isFinite(beat)) {
    view.heartbeatAt = performance.now() - Math.max(0, Date.now() - beat);
  }
  $("token-form").hidden = true;
  schedule("connection");
});
client.on("subscriptions", () => schedule("toggles"));
client.on("gap", (gap) => {
  const what = gap.reason === "not_recovered"
    ? "resume could not recover: events were missed"
    : `${gap.missing} event(s) missed (${gap.reason.replace("_", " ")})`;
  $("gap").hidden = false;
  $("gap").textContent = "gap";
  $("gap").title = what;
  alert("gap", what);
});
client.on("error", (error) => alert("error", `${error.code}: ${error.message}`));
client.on("close", () => {
  if (!everWelcomed && client.attempt >= 1) $("token-form").hidden = false;
});

function alert(kind, message) {
  view.alerts.unshift({ kind, message, at: new Date() });
  view.alerts.length = Math.min(view.alerts.length, ALERTS);
  schedule("alerts");
}

function apply(event) {
  const data = event.data || {};
  switch (event.type) {
    case "system_status":
      view.system = data;
      addSample(event, data);
      dirty.add("system");
      break;
    case "storage_update":
      view.storage = data;
      dirty.add("storage");
      break;
    case "agent_status": {
      const id = String(data.agent_id ?? data.id);
      if (data.change === "removed") view.agents.delete(id);
      else view.agents.set(id, data);
      dirty.add("agents");
      break;
    }
    case "compression_update": {
      const id = String(data.job_id ?? data.id);
      view.jobs.delete(id);
      view.jobs.set(id, data);
      while (view.jobs.size > 12) view.jobs.delete(view.jobs.keys().next().value);
      dirty.add("jobs");
      break;
    }
    case "supervision":
      // in a cluster every node's tree arrives: show the one of the node we are connected to
      if (data.node && client.node && data.node !== client.node) break;
      if (data.tree) {
        view.tree = data.tree;
        const sessions = data.tree.children?.find((child) => child.child_count !== undefined);
        noteSessions(sessions?.child_count, event.timestamp);
      }
      if (!event.snapshot && data.child_id && data.supervisor === "root") {
        view.flashed.add(data.child_id);
        if (!$("faults").hidden) refreshFaults(); // a fault may just have fired
      }
      dirty.add("tree");
      break;
    case "heartbeat": {
      const age = event.snapshot ? Math.max(0, Date.now() - Date.parse(event.timestamp)) : 0;
      view.heartbeatAt = performance.now() - (Number.isFinite(age) ? age : 0);
      // in a cluster every node beats: the count shown is the connected node's
      if (!data.node || !client.node || data.node === client.node) {
        noteSessions(data.client_count, event.timestamp);
      }
      break;
    }
    case "rpc_error":
      if (!event.snapshot) alert("error", `rpc_error ${text(data.method)}: ${text(data.message)}`);
      break;
    case "connection_error":
      if (!event.snapshot) alert("error", `connection_error: ${text(data.error)}`);
      break;
    case "notification":
      if (!event.snapshot) alert("info", text(data.message ?? data.text ?? data.kind));
      break;
    default:
  }
}

function addSample(event, data) {
  const t = Date.parse(event.timestamp) / 1000 || Date.now() / 1000;
  if (series.t.length && t <= series.t[series.t.length - 1]) return; // a snapshot seen already
  series.t.push(t);
  series.cpu.push(data.cpu_usage ?? null);
  series.mem.push(data.memory?.percent ?? null);
  series.load.push(Array.isArray(data.load_average) ? data.load_average[0] : null);
  while (series.t.length && series.t[0] < t - WINDOW_S) {
    for (const key of Object.keys(series)) series[key].shift();
  }
}

// --- rendering, once per frame -----------------------------------------------------------------

function render() {
  frameRequested = false;
  const batch = pending.splice(0, pending.length);
  for (const event of batch) apply(event);
  view.received += batch.length;
  for (const event of batch) ring.push(event);
  if (ring.length > RING) ring.splice(0, ring.length - RING);
  if (batch.length) renderLog(batch);
  if (dirty.has("connection") || batch.length) renderConnection();
  if (dirty.has("system")) renderSystem();
  if (dirty.has("storage")) renderStorage();
  if (dirty.has("agents")) renderAgents();
  if (dirty.has("jobs")) renderJobs();
  if (dirty.has("tree")) renderTree();
  if (dirty.has("sessions")) renderSessions();
  if (dirty.has("alerts")) renderAlerts();
  if (dirty.has("toggles")) renderToggles();
  if (dirty.has("relog")) rebuildLog();
  dirty.clear();
}

function renderConnection() {
  const state = $("connection-state") || document.querySelector('[data-testid="connection-state"]');
  const label = client.state === "reconnecting" ? `reconnecting (attempt ${client.attempt})` : client.state;
  state.textContent = label;
  state.dataset.state = client.state;
  document.querySelector('[data-testid="epoch"]').textContent = text(client.epoch);
  document.querySelector('[data-testid="last-seq"]').textContent = text(client.lastSeq);
  $("server-version").textContent = text(client.serverVersion);
  $("client-id").textContent = client.clientId ? client.clientId.slice(0, 8) : "–";
}

function renderSystem() {
  const data = view.system;
  document.querySelector('[data-testid="cpu-percent"]').textContent = pct(data?.cpu_usage);
  charts.forEach((chart) => chart.update());
}

function renderStorage() {
  const data = view.storage;
  const rows = [];
  if (data?.data_dir) rows.push(usageRow("data dir", data.data_dir));
  for (const path of data?.paths || []) rows.push(usageRow(path.path, path));
  if (typeof data?.file_count === "number") {
    rows.push(el("div", { class: "row" }, el("span", {}, "files"),
      el("small", {}, `${data.file_count} · ${bytes(data.file_bytes)}`)));
  }
  $("storage").replaceChildren(...rows);
}

function usageRow(name, usage) {
  const percent = typeof usage.percent === "number" ? usage.percent : 0;
  return el("div", {},
    el("div", { class: "row" }, el("span", {}, name),
      el("small", {}, usage.error || `${pct(usage.percent)}% of ${bytes(usage.total)}`)),
    bar(percent));
}

function bar(percent) {
  const fill = el("span");
  fill.style.width = `${Math.max(0, Math.min(100, percent))}%`; // CSSOM: allowed by the CSP
  return el("div", { class: "bar" }, fill);
}

function renderAgents() {
  if (!view.agents.size) { $("agents").replaceChildren("none yet"); return; }
  $("agents").replaceChildren(...[...view.agents].map(([id, agent]) =>
    el("div", { class: "row" }, el("span", {}, id),
      el("small", {}, `${text(agent.state)}${agent.current_job ? ` · ${agent.current_job.slice(0, 8)}` : ""} · ${text(agent.jobs_done)} done`))));
}

function renderJobs() {
  if (!view.jobs.size) { $("jobs").replaceChildren("none live"); return; }
  $("jobs").replaceChildren(...[...view.jobs.values()].reverse().map((job) => {
    const progress = Number(job.progress ?? job.percent ?? 0);
    return el("div", {},
      el("div", { class: "row" }, el("span", {}, text(job.path ?? job.job_id)),
        el("small", {}, `${text(job.state)} · ${progress.toFixed(0)}%`)),
      bar(progress));
  }));
}

// The session count comes from the welcome and the heartbeats (`client_count`) and from the
// tree in supervision events (`child_count`), all of the node the page is connected to; the one
// counted last by that node's clock wins (`timestamp`, when it was counted). Not by seq: a
// supervision snapshot can be far older than the welcome (sessions that come and go send no
// supervision event), and in a cluster a heartbeat counted just before the page joined can be
// numbered after its welcome.
function noteSessions(count, timestamp) {
  if (!Number.isFinite(count)) return;
  const at = microsOf(timestamp);
  if (Number.isFinite(at)) {
    if (at < view.sessions.at) return;
    view.sessions.at = at;
  }
  view.sessions.count = count;
  dirty.add("sessions");
}

// Microseconds since the epoch of the server's ISO 8601 timestamps (`Date.parse` keeps only
// the milliseconds of their six fractional digits).
function microsOf(timestamp) {
  const extra = /\.\d{3}(\d{1,3})/.exec(timestamp || "");
  return Date.parse(timestamp) * 1000 + (extra ? Number(extra[1].padEnd(3, "0")) : 0);
}

function renderSessions() {
  $("sessions-count").textContent = `${view.sessions.count} session(s)`;
}

function renderTree() {
  const children = view.tree?.children || [];
  $("tree").replaceChildren(...children.map((child) => {
    const row = el("tr", {
      "data-testid": "actor",
      "data-actor": child.id,
      "data-state": child.state,
      "data-restarts": String(child.restarts),
    },
    el("td", {}, child.id),
    el("td", {}, el("span", { class: "state" }, child.state)),
    el("td", {}, String(child.restarts)),
    el("td", { class: "reason" }, child.last_exit || ""));
    if (view.flashed.has(child.id)) row.classList.add("flash");
    return row;
  }));
  view.flashed.clear();
}

function renderAlerts() {
  $("alerts").replaceChildren(...view.alerts.map((a) =>
    el("div", { class: a.kind === "info" ? "alert info" : "alert" },
      `${a.at.toLocaleTimeString()} ${a.message}`)));
}

function renderToggles() {
  for (const box of document.querySelectorAll('[data-testid="subscription-toggle"]')) {
    box.checked = client.subscriptions.includes(box.dataset.type);
  }
}

function logRow(event) {
  const time = event.timestamp ? event.timestamp.slice(11, 19) : "";
  return el("li", { "data-testid": "event", "data-type": event.type },
    el("span", { class: "time" }, time),
    el("span", { class: "seq" }, event.snapshot ? `(${event.seq})` : `#${event.seq}`),
    el("span", {}, event.type),
    el("span", {}, summary(event)));
}

function renderLog(batch) {
  $("log-count").textContent = `${view.received} received`;
  if (view.paused) return;
  const shown = batch.filter((e) => !view.filter || e.type === view.filter).slice(-LOG_ROWS);
  const fragment = document.createDocumentFragment();
  for (let i = shown.length - 1; i >= 0; i -= 1) fragment.append(logRow(shown[i]));
  const log = $("event-log");
  log.prepend(fragment);
  while (log.childElementCount > LOG_ROWS) log.lastElementChild.remove();
}

function rebuildLog() {
  const shown = ring.filter((e) => !view.filter || e.type === view.filter).slice(-LOG_ROWS);
  $("event-log").replaceChildren(...shown.reverse().map(logRow));
}

function summary(event) {
  const d = event.data || {};
  switch (event.type) {
    case "heartbeat": return `beat ${text(d.beat)} · ${text(d.client_count)} client(s)`;
    case "system_status": return `cpu ${pct(d.cpu_usage)}% · mem ${pct(d.memory?.percent)}%`;
    case "supervision":
      return `${d.kind} ${d.supervisor}/${text(d.child_id)}${d.reason ? ` · ${d.reason}` : ""}`;
    case "agent_status": return `${text(d.agent_id)} ${text(d.state)} ${text(d.change)}`;
    case "compression_update": return `${text(d.job_id).slice(0, 8)} ${text(d.state)} ${pct(Number(d.progress))}%`;
    case "storage_update": return `data dir ${pct(d.data_dir?.percent)}% · ${text(d.file_count)} file(s)`;
    case "rpc_error": return `${text(d.method)}: ${text(d.message)}`;
    case "connection_error": return text(d.error);
    case "notification": return text(d.message ?? d.text ?? d.kind);
    default: return JSON.stringify(d).slice(0, 160);
  }
}

// --- heartbeat age, coloured against the interval -------------------------------------------

setInterval(() => {
  const badge = document.querySelector('[data-testid="heartbeat-age"]');
  if (view.heartbeatAt === null) return;
  const age = (performance.now() - view.heartbeatAt) / 1000;
  const interval = client.heartbeatInterval || 15;
  badge.textContent = `heartbeat ${age.toFixed(1)} s`;
  badge.dataset.age = age.toFixed(1);
  badge.dataset.level = age <= interval * 1.5 ? "fresh" : age <= interval * 3 ? "late" : "stale";
}, 250);

// --- charts (uPlot, vendored) ---------------------------------------------------------------

function chart(target, key, color, max) {
  const width = Math.max(200, target.clientWidth || 300);
  const options = {
    width, height: 140,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: true }, y: max ? { range: [0, max] } : { range: (u, lo, hi) => [0, Math.max(1, hi * 1.2)] } },
    axes: [
      { stroke: "#7f8c99", grid: { stroke: "#1f2935" }, ticks: { stroke: "#1f2935" } },
      { stroke: "#7f8c99", grid: { stroke: "#1f2935" }, ticks: { stroke: "#1f2935" }, size: 40 },
    ],
    series: [{}, { stroke: color, width: 1.5, fill: `${color}22` }],
  };
  const plot = new uPlot(options, [series.t, series[key]], target);
  return {
    update() { plot.setData([series.t, series[key]]); },
    resize() { plot.setSize({ width: Math.max(200, target.clientWidth), height: 140 }); },
  };
}

const charts = [
  chart($("chart-cpu"), "cpu", "#4fd1a5", 100),
  chart($("chart-mem"), "mem", "#6cb6ff", 100),
  chart($("chart-load"), "load", "#f0b429", 0),
];
window.addEventListener("resize", () => charts.forEach((c) => c.resize()));

// --- controls ---------------------------------------------------------------------------------

for (const type of ALL_TYPES) {
  const box = el("input", { type: "checkbox", "data-testid": "subscription-toggle", "data-type": type });
  box.addEventListener("change", () => {
    if (box.checked) client.subscribe([type]);
    else client.unsubscribe([type]);
  });
  $("toggles").append(el("label", {}, box, type));
  $("log-filter").append(el("option", { value: type }, type));
}
$("log-filter").addEventListener("change", (e) => {
  view.filter = e.target.value;
  schedule("relog");
});
$("log-pause").addEventListener("click", () => {
  view.paused = !view.paused;
  $("log-pause").textContent = view.paused ? "Resume" : "Pause";
  if (!view.paused) schedule("relog");
});
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  client.token = $("token-input").value.trim() || null;
  $("token-input").value = "";
  client.close();
  client.connect();
});

// --- fault panel: only when /admin/faults answers (admin on, loopback peer) ------------------

async function loadFaults() {
  let response;
  try { response = await fetch("/admin/faults"); } catch { return; }
  if (!response.ok) return;
  showFaults((await response.json()).points || []);
  $("faults").hidden = false;
}

function showFaults(points) {
  const select = $("fault-point");
  if (!select.options.length) {
    for (const row of points) select.append(el("option", { value: row.point }, row.point));
  }
  $("fault-list").replaceChildren(...points.filter((row) => row.armed).map((row) =>
    el("li", {}, `${row.point}: ${row.description} · fired ${text(row.fired)}`)));
}

async function refreshFaults() {
  try {
    const response = await fetch("/admin/faults");
    if (response.ok) showFaults((await response.json()).points || []);
  } catch { /* the gateway may be restarting; the next event retries */ }
}

async function faultRequest(method, body) {
  const response = await fetch("/admin/faults", {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const payload = await response.json();
  if (!response.ok) { alert("error", `fault: ${payload.detail || payload.error}`); return; }
  await refreshFaults();
}

$("fault-arm").addEventListener("click", () => {
  const spec = { point: $("fault-point").value, action: $("fault-action").value };
  if ($("fault-once").checked) spec.once = true;
  faultRequest("POST", spec);
});
$("fault-clear").addEventListener("click", () => faultRequest("DELETE"));

renderToggles();
loadFaults();
client.connect();
window.sigmaDashboard = { client, view };
