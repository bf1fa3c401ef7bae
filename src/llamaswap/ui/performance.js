// Performance: a summary of the host (GET /api/hardware, copyable as JSON) and live charts
// of its samples (GET /api/performance): CPU, memory, load average, network and per-GPU
// utilisation and memory. The page polls every 5 s with `?after=<last timestamp>`, so
// each answer holds only the samples it has not seen yet.
import { apiFetch, el } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const HOUR_MS = 3600e3;
const WINDOWS = { "5 min": 300e3, "15 min": 900e3, "1 h": HOUR_MS };
const CHART_H = 120, PAD_TOP = 8, PAD_BOTTOM = 18;
// The poll interval; a page may set `window.llamaswapPerformancePollMs` before loading
// the UI to poll faster (the browser tests do).
const pollMs = () => globalThis.llamaswapPerformancePollMs ?? 5000;
const FIRST_SAMPLE_RETRY_MS = 1000; // the sampler's first sample comes 1 s after startup

const prefs = { window: "15 min" }; // kept across page switches

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

export function fmtBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(n < 10 ? 2 : 1) : Math.round(n)} ${units[i]}`;
}

const fmtRate = (n) => `${fmtBytes(n)}/s`;
const fmtPct = (n) => (typeof n === "number" ? `${n.toFixed(1)} %` : "–");
const fmtMiB = (mb) => fmtBytes(typeof mb === "number" ? mb * 1024 * 1024 : null);
const fmtClock = (t) => new Date(t).toLocaleTimeString([], { hour12: false });
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

// ---- hardware -----------------------------------------------------------------------------

function hardwareFacts(hw) {
  const os = hw.operating_system || {};
  const cpu = hw.cpu || {};
  const join = (...xs) => xs.filter((x) => x != null && x !== "").join(" ");
  const cores = [
    cpu.physical_core_count != null ? `${cpu.physical_core_count} cores` : null,
    cpu.logical_thread_count != null ? `${cpu.logical_thread_count} threads` : null,
    cpu.socket_count > 1 ? `${cpu.socket_count} sockets` : null,
  ].filter(Boolean).join(" · ");
  const accels = (hw.accelerators || []).map((a) => join(
    `${(a.kind || "gpu").toUpperCase()} ${a.index ?? ""}:`, a.vendor, a.model,
    a.memory?.capacity_bytes != null ? `· ${fmtBytes(a.memory.capacity_bytes)}` : null,
    a.driver?.version ? `· driver ${a.driver.version}` : null));
  return [
    ["Host", hw.hostname, "hw-hostname"],
    ["OS", join(os.name || os.family, os.version), "hw-os"],
    ["Kernel", os.kernel, "hw-kernel"],
    ["Architecture", hw.architecture?.name, "hw-arch"],
    ["CPU", join(cpu.model, cpu.vendor && !String(cpu.model || "").includes(cpu.vendor) ? `(${cpu.vendor})` : null), "hw-cpu"],
    ["Cores", cores, "hw-cores"],
    ["Memory", fmtBytes(hw.memory?.capacity_bytes), "hw-memory"],
    ["Accelerators", accels.length ? accels : "none found", "hw-accelerators"],
  ];
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain http on a LAN address is not a secure context: no Clipboard API there.
  const area = el("textarea", { style: "position: fixed; opacity: 0" });
  area.value = text;
  document.body.append(area);
  area.select();
  try { if (!document.execCommand("copy")) throw new Error("copy refused"); } finally { area.remove(); }
}

async function loadHardware(box, signal) {
  const copy = el("button", { class: "ghost", type: "button", id: "hardware-copy", disabled: true, title: "Copy the /api/hardware JSON" }, "Copy");
  const body = el("div", { class: "muted" }, "Reading the hardware…");
  box.replaceChildren(el("div", { class: "toolbar hw-head" }, el("h2", {}, "Hardware"), el("span", { class: "grow" }), copy), body);
  let resp, hw;
  try {
    resp = await apiFetch("/api/hardware", { signal });
    hw = await resp.json().catch(() => null);
  } catch (err) {
    if (signal.aborted) return;
    body.replaceChildren(el("span", { class: "error" }, `Could not load /api/hardware: ${err.message}`));
    return;
  }
  if (!resp.ok || !hw) {
    body.replaceChildren(el("span", { class: "error" }, hw?.error?.message || `/api/hardware answered ${resp.status}`));
    return;
  }
  const json = JSON.stringify(hw, null, 2);
  copy.disabled = false;
  copy.addEventListener("click", async () => {
    try {
      await copyText(json);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy failed";
    }
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  });
  body.className = "";
  body.replaceChildren(el("dl", { class: "facts" }, hardwareFacts(hw).flatMap(([k, v, id]) => [
    el("dt", {}, k),
    el("dd", { id }, Array.isArray(v) ? v.map((line) => el("div", {}, line)) : (v ?? "–")),
  ])));
}

// ---- charts -------------------------------------------------------------------------------

/**
 * A card with a line chart: `series` is [{name, points: [[t, v]]}], drawn from `from` to
 * `to` (ms) and 0 to `yMax`. The card's data-points is the number of points of the first
 * series; the latest point of each series is marked with a dot.
 */
function chart({ id, title, value, series, from, to, yMax, fmtY, width }) {
  const card = el("div", { class: "card perf-chart", id, "data-points": series[0]?.points.length ?? 0 });
  card.append(el("div", { class: "perf-head" }, el("h3", {}, title), el("span", { class: "perf-value mono" }, value)));
  const W = Math.max(width, 200), H = CHART_H;
  const plotH = H - PAD_TOP - PAD_BOTTOM;
  const span = Math.max(to - from, 1);
  const x = (t) => (to === from ? W - 4 : 2 + ((t - from) / span) * (W - 6));
  const y = (v) => PAD_TOP + plotH - (Math.min(Math.max(v, 0), yMax) / yMax) * plotH;
  const svg = s("svg", { class: "perf-svg", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": `${title} chart` });
  for (const f of [0, 0.5, 1]) svg.append(s("line", { class: "grid", x1: 0, x2: W, y1: y(yMax * f), y2: y(yMax * f) }));
  svg.append(s("text", { class: "ylabel", x: 4, y: PAD_TOP + 10 }, fmtY(yMax)));
  svg.append(s("text", { class: "xlabel", x: 2, y: H - 4 }, fmtClock(from)));
  svg.append(s("text", { class: "xlabel", x: W - 2, y: H - 4, "text-anchor": "end" }, fmtClock(to)));
  series.forEach((ser, i) => {
    const pts = ser.points.filter(([t, v]) => t >= from && typeof v === "number");
    if (!pts.length) return;
    const g = s("g", { class: `series s${i}`, "data-series": ser.name });
    g.append(s("path", { d: pts.map(([t, v], j) => `${j ? "L" : "M"} ${x(t).toFixed(1)} ${y(v).toFixed(1)}`).join(" ") }));
    const [lt, lv] = pts[pts.length - 1];
    const dot = s("circle", { cx: x(lt).toFixed(1), cy: y(lv).toFixed(1), r: 3 });
    dot.append(s("title", {}, `${ser.name}: ${fmtY(lv)} at ${fmtClock(lt)}`));
    g.append(dot);
    svg.append(g);
  });
  card.append(svg);
  if (series.length > 1) {
    card.append(el("div", { class: "legend" }, series.map((ser, i) => el("span", {}, el("i", { class: `s${i}` }), ser.name))));
  }
  return card;
}

/** A y-axis top above `max` that reads well (1, 2 or 5 times a power of ten). */
function niceMax(max) {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** Bytes per second received and sent between consecutive samples (all interfaces). */
function netRates(sys) {
  const recv = [], sent = [];
  const total = (smp, key) => (smp.net_io || []).reduce((a, n) => a + (n[key] || 0), 0);
  for (let i = 1; i < sys.length; i++) {
    const a = sys[i - 1], b = sys[i];
    const dt = (b.t - a.t) / 1000;
    const dr = total(b, "bytes_recv") - total(a, "bytes_recv");
    const ds = total(b, "bytes_sent") - total(a, "bytes_sent");
    if (dt <= 0 || dr < 0 || ds < 0) continue; // an interface went away or counters reset
    recv.push([b.t, dr / dt]);
    sent.push([b.t, ds / dt]);
  }
  return { recv, sent };
}

function drawCharts(box, data, width) {
  const { sys, gpus } = data;
  const last = sys.length ? sys[sys.length - 1].t : Date.now();
  const to = last;
  const from = Math.max(sys.length ? sys[0].t : last, to - WINDOWS[prefs.window]);
  const shown = sys.filter((x) => x.t >= from);
  const latest = shown[shown.length - 1];
  const cards = [];
  const cpu = shown.map((x) => [x.t, mean(x.cpu_util_per_core || [])]);
  cards.push(chart({ id: "chart-cpu", title: "CPU", value: latest ? fmtPct(cpu[cpu.length - 1][1]) : "–",
    series: [{ name: "CPU % (mean of cores)", points: cpu }], from, to, yMax: 100, fmtY: (v) => `${Math.round(v)} %`, width }));
  const memTotal = latest?.mem_total_mb || 1;
  cards.push(chart({ id: "chart-memory", title: "Memory",
    value: latest ? `${fmtMiB(latest.mem_used_mb)} / ${fmtMiB(latest.mem_total_mb)}` : "–",
    series: [{ name: "used", points: shown.map((x) => [x.t, x.mem_used_mb]) }], from, to, yMax: memTotal, fmtY: fmtMiB, width }));
  const loads = [1, 5, 15].map((m) => ({ name: `${m} min`, points: shown.map((x) => [x.t, x[`load_avg_${m}`]]) }));
  const loadMax = niceMax(Math.max(...loads.flatMap((l) => l.points.map((p) => p[1] || 0))));
  cards.push(chart({ id: "chart-load", title: "Load average",
    value: latest ? [1, 5, 15].map((m) => Number(latest[`load_avg_${m}`] ?? 0).toFixed(2)).join(" · ") : "–",
    series: loads, from, to, yMax: loadMax, fmtY: (v) => (v < 10 ? v.toFixed(1) : String(Math.round(v))), width }));
  const net = netRates(shown);
  const netMax = niceMax(Math.max(0, ...net.recv.map((p) => p[1]), ...net.sent.map((p) => p[1])));
  cards.push(chart({ id: "chart-network", title: "Network",
    value: net.recv.length ? `↓ ${fmtRate(net.recv[net.recv.length - 1][1])} · ↑ ${fmtRate(net.sent[net.sent.length - 1][1])}` : "needs two samples",
    series: [{ name: "received", points: net.recv }, { name: "sent", points: net.sent }], from, to, yMax: netMax, fmtY: fmtRate, width }));
  const byGpu = new Map();
  for (const g of gpus) {
    if (g.t < from) continue;
    const key = String(g.id);
    if (!byGpu.has(key)) byGpu.set(key, []);
    byGpu.get(key).push(g);
  }
  for (const [key, rows] of byGpu) {
    const g = rows[rows.length - 1];
    const memPct = (r) => (r.mem_used_mb != null && r.mem_total_mb ? (100 * r.mem_used_mb) / r.mem_total_mb : r.mem_util_pct);
    cards.push(chart({ id: `chart-gpu-${key}`, title: `GPU ${key}${g.name ? ` · ${g.name}` : ""}`,
      value: `${fmtPct(g.gpu_util_pct)} · ${fmtMiB(g.mem_used_mb)} / ${fmtMiB(g.mem_total_mb)}${g.temp_c != null ? ` · ${g.temp_c} °C` : ""}`,
      series: [
        { name: "utilisation %", points: rows.map((r) => [r.t, r.gpu_util_pct]) },
        { name: "memory used %", points: rows.map((r) => [r.t, memPct(r)]) },
      ], from, to, yMax: 100, fmtY: (v) => `${Math.round(v)} %`, width }));
  }
  box.replaceChildren(...cards);
}

// ---- the page -----------------------------------------------------------------------------

export function mount(view) {
  const ctrl = new AbortController();
  const picker = el("select", { id: "perf-window", "aria-label": "Time window" },
    Object.keys(WINDOWS).map((k) => el("option", { value: k, selected: k === prefs.window }, k)));
  picker.addEventListener("change", () => { prefs.window = picker.value; draw(); });
  const hardware = el("section", { class: "card", id: "hardware" });
  const status = el("p", { class: "muted", id: "perf-status" }, "Loading samples…");
  const charts = el("div", { class: "perf-grid", id: "perf-charts" });
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Performance"), el("span", { class: "grow" }), picker),
    hardware, status, charts);

  const data = { sys: [], gpus: [], cursor: "" };
  let timer = null;

  function chartWidth() {
    // One chart a row, two from 700 px (as style.css lays out .perf-grid); each SVG is
    // drawn at its card's inner width so its text keeps its size.
    const full = charts.clientWidth || 600;
    const cols = window.matchMedia("(min-width: 700px)").matches ? 2 : 1;
    const em = parseFloat(getComputedStyle(charts).fontSize) || 15;
    return Math.floor((full - (cols - 1) * 0.75 * em) / cols - 2 * em - 2);
  }

  function draw() {
    if (!data.sys.length) { charts.replaceChildren(); return; }
    drawCharts(charts, data, chartWidth());
  }

  function add(body) {
    const stamp = (x) => ({ ...x, t: Date.parse(x.timestamp) });
    for (const x of body.sys_stats || []) data.sys.push(stamp(x));
    for (const x of body.gpu_stats || []) data.gpus.push(stamp(x));
    const lastSys = body.sys_stats?.[body.sys_stats.length - 1]?.timestamp;
    if (lastSys) data.cursor = lastSys;
    const cutoff = (data.sys.length ? data.sys[data.sys.length - 1].t : Date.now()) - HOUR_MS;
    while (data.sys.length && data.sys[0].t < cutoff) data.sys.shift();
    while (data.gpus.length && data.gpus[0].t < cutoff) data.gpus.shift();
  }

  async function poll() {
    timer = null;
    let delay = pollMs();
    try {
      const url = data.cursor ? `/api/performance?after=${encodeURIComponent(data.cursor)}` : "/api/performance";
      const resp = await apiFetch(url, { signal: ctrl.signal });
      const body = await resp.json().catch(() => null);
      if (resp.status === 503 && body && body.enabled === false) {
        // Disabled (possibly by a reload): forget the history, it is gone on the server too.
        Object.assign(data, { sys: [], gpus: [], cursor: "" });
        status.dataset.state = "disabled";
        status.className = "muted";
        status.textContent = "Performance monitoring is disabled (performance.disabled).";
        status.hidden = false;
        charts.replaceChildren();
      } else if (!resp.ok || !body) {
        throw new Error(body?.error?.message || `/api/performance answered ${resp.status}`);
      } else {
        add(body);
        status.dataset.state = data.sys.length ? "live" : "waiting";
        status.className = "muted";
        status.hidden = data.sys.length > 0;
        status.textContent = "Waiting for the first sample…";
        if (!data.sys.length) delay = Math.min(delay, FIRST_SAMPLE_RETRY_MS);
        draw();
      }
    } catch (err) {
      if (ctrl.signal.aborted) return;
      status.dataset.state = "error";
      status.className = "error";
      status.hidden = false;
      status.textContent = `Could not load samples: ${err.message}`;
    }
    if (!ctrl.signal.aborted) timer = setTimeout(poll, delay);
  }

  const onResize = () => draw();
  window.addEventListener("resize", onResize);
  loadHardware(hardware, ctrl.signal);
  poll();
  return () => {
    ctrl.abort();
    if (timer) clearTimeout(timer);
    window.removeEventListener("resize", onResize);
  };
}
