// The shell: hash routing, one shared /api/events connection and the history it builds.
import { apiFetch, follow, sseParser, promptKey } from "./api.js";
import * as models from "./models.js";
import * as timeline from "./timeline.js";
import * as logs from "./logs.js";
import * as playground from "./playground.js";
import * as activity from "./activity.js";
import * as performance from "./performance.js";

const PAGES = { models, activity, timeline, logs, playground, performance };
const HISTORY_MS = 30 * 60 * 1000; // keep half an hour of state changes

/** Live state shared by the pages, fed by /api/events. */
export const store = {
  models: [],            // the latest modelStatus payload
  received: false,       // whether a modelStatus arrived yet
  modelsAt: 0,           // browser time (ms) at which the latest modelStatus arrived
  lanes: new Map(),      // id -> [{state, t}] state changes, oldest first
  swaps: [],             // [{t, target, evicted, error, duration_s}], oldest first; from history, then live
  inflight: new Map(),   // id -> {...request, since} (since: browser clock when it started)
  inflightReceived: false, // whether an inflight snapshot arrived yet
  queue: [],             // [{t, depth}] queue depth changes, oldest first
  queueDepth: 0,         // the latest queue depth
  activeProfile: null,   // the active profile's name (profileChanged), null for none
  uiConfig: null,        // the uiConfig payload ({activity: {session_id: [header names]}})
  memory: null,          // the latest memory payload (device memory, host memory, evictions)
  listeners: new Set(),  // fn(kind, payload)
  emit(kind, payload) { for (const fn of this.listeners) fn(kind, payload); },
  subscribe(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); },
};

function onModelStatus(all) {
  const now = Date.now();
  // Local models only: peer models (peerID set) have no process, lane or log here; the
  // Models page lists them from /v1/models.
  const list = all.filter((m) => !m.peerID);
  store.models = list;
  store.modelsAt = now;
  store.received = true;
  for (const m of list) {
    let lane = store.lanes.get(m.id);
    if (!lane) { lane = []; store.lanes.set(m.id, lane); }
    const last = lane[lane.length - 1];
    if (!last || last.state !== m.state) lane.push({ state: m.state, t: now });
    while (lane.length > 1 && lane[1].t < now - HISTORY_MS) lane.shift();
  }
}

function onEvent(frame) {
  let msg;
  try { msg = JSON.parse(frame.data); } catch { return; }
  let payload = msg.data;
  if (typeof payload === "string") {
    try { payload = JSON.parse(payload); } catch { /* keep the string */ }
  }
  if (msg.type === "modelStatus" && Array.isArray(payload)) onModelStatus(payload);
  else if (msg.type === "swap" && payload) {
    store.swaps.push({ ...payload, t: Date.now() });
    const cutoff = Date.now() - HISTORY_MS;
    while (store.swaps.length && store.swaps[0].t < cutoff) store.swaps.shift();
  }
  else if (msg.type === "history" && payload) onHistory(payload);
  else if (msg.type === "inflight" && payload) onInflight(payload);
  else if (msg.type === "profileChanged" && payload) store.activeProfile = payload.active ?? null;
  else if (msg.type === "uiConfig" && payload) store.uiConfig = payload;
  else if (msg.type === "memory" && payload) store.memory = payload;
  else if (msg.type === "queue" && payload && typeof payload.depth === "number") {
    const now = Date.now();
    store.queueDepth = payload.depth;
    store.queue.push({ depth: payload.depth, t: now });
    while (store.queue.length > 1 && store.queue[1].t < now - HISTORY_MS) store.queue.shift();
  }
  store.emit(msg.type, payload);
}

// Sent on each (re)connection, right after the modelStatus: it holds the recent swaps and
// state changes, so it replaces what the page had. `ago_s` (not `at`) places them, so the
// server's clock need not match ours.
function onHistory(p) {
  const now = Date.now();
  const cutoff = now - HISTORY_MS;
  const when = (e) => now - (e.ago_s || 0) * 1000;
  if (Array.isArray(p.swaps)) {
    store.swaps = p.swaps.map((sw) => ({ ...sw, t: when(sw) })).filter((sw) => sw.t >= cutoff);
  }
  if (!Array.isArray(p.states)) return;
  const lanes = new Map();
  for (const c of p.states) {
    let lane = lanes.get(c.id);
    // Before its first kept change the model was in that change's `old` state.
    if (!lane) { lane = [{ state: c.old, t: 0 }]; lanes.set(c.id, lane); }
    lane.push({ state: c.new, t: when(c) });
  }
  for (const m of store.models) {
    const lane = lanes.get(m.id) || [];
    const last = lane[lane.length - 1];
    if (!last || last.state !== m.state) lane.push({ state: m.state, t: now });
    while (lane.length > 1 && lane[1].t < cutoff) lane.shift();
    store.lanes.set(m.id, lane);
  }
}

// Elapsed time ticks on the browser's clock: `since` is derived from the server's
// elapsed_ms when the request is first seen, so the two clocks need not agree.
function onInflight(p) {
  const now = Date.now();
  const withSince = (r) => ({ ...r, since: store.inflight.get(r.id)?.since ?? now - (r.elapsed_ms || 0) });
  if (p.operation === "snapshot" && Array.isArray(p.requests)) {
    const next = new Map();
    for (const r of p.requests) next.set(r.id, withSince(r));
    store.inflight = next;
    store.inflightReceived = true;
  } else if (p.operation === "upsert" && p.request) {
    store.inflight.set(p.request.id, withSince(p.request));
  } else if (p.operation === "remove") {
    store.inflight.delete(p.id);
  }
}

function connectEvents() {
  const conn = document.getElementById("conn");
  const ctrl = new AbortController();
  let parse;
  follow("/api/events", {
    signal: ctrl.signal,
    onOpen: () => { parse = sseParser(onEvent); },
    onText: (t) => parse(t),
    onState: (live) => {
      conn.textContent = live ? "live" : "reconnecting…";
      conn.className = `conn ${live ? "live" : "down"}`;
    },
  });
}

let unmount = null;

function route() {
  const name = (location.hash.replace(/^#\/?/, "").split(/[/?]/)[0]) || "models";
  const page = PAGES[name] || models;
  const key = PAGES[name] ? name : "models";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.route === key);
  document.title = `llamaswap · ${key}`;
  unmount?.();
  const view = document.getElementById("view");
  view.replaceChildren();
  view.dataset.page = key;
  unmount = page.mount(view, store) || null;
}

async function showVersion() {
  try {
    const resp = await apiFetch("/api/version");
    if (!resp.ok) return;
    const v = await resp.json();
    document.getElementById("version").textContent = `llamaswap ${v.version}`;
  } catch { /* optional */ }
}

function start() {
  // `/ui/models` and friends (e.g. the `/upstream` redirect) map onto hash routes.
  const sub = location.pathname.replace(/^\/ui\/?/, "").replace(/\/$/, "");
  if (!location.hash && PAGES[sub]) history.replaceState(null, "", `/ui/#/${sub}`);
  document.getElementById("key-button").addEventListener("click", () => promptKey(false));
  window.addEventListener("hashchange", route);
  route();
  connectEvents();
  showVersion();
}

start();
