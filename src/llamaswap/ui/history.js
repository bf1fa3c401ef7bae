// Completed requests from the activity store (GET /api/metrics/activity): a paged,
// sortable table with a model filter, token and speed statistics (GET /api/metrics/stats)
// and a dialog showing a request's captured bodies (GET /api/captures/<id>).
// Refreshed when an `activity` event says a request was recorded.
import { apiFetch, el } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const LIMITS = [10, 25, 50, 100];
const COLUMNS = [
  // [sort key (null: not sortable), header, cell(row)]
  ["id", "ID", (r) => el("td", { class: "mono" }, r.id)],
  ["time", "Time", (r) => timeCell(r.timestamp)],
  ["model", "Model", (r) => el("td", { class: "model" }, r.model, metadataTags(r.metadata))],
  ["req_path", "Path", (r) => el("td", { class: "mono path" }, r.req_path ?? "")],
  ["resp_status_code", "Status", (r) => el("td", {
    class: `mono${r.error_msg || r.resp_status_code >= 400 ? " error" : ""}`, title: r.error_msg || r.resp_content_type || null,
  }, r.resp_status_code ?? "")],
  ["cached", "Cached", (r) => num(r.tokens?.cache_tokens)],
  ["prompt", "Prompt", (r) => num(r.tokens?.input_tokens)],
  ["generated", "Generated", (r) => num(r.tokens?.output_tokens)],
  ["prompt_speed", "Prompt tok/s", (r) => num(r.tokens?.prompt_per_second, 1)],
  ["gen_speed", "Gen tok/s", (r) => num(r.tokens?.tokens_per_second, 1)],
  ["duration", "Duration", (r) => el("td", { class: "mono num" }, fmtMs(r.duration_ms))],
  [null, "", null], // capture button
];

// Kept across page switches.
const prefs = { page: 1, limit: 25, sort: "id", order: "desc", model: "" };

/** A number cell; negative values mean "unknown" in the activity store. */
function num(v, digits = 0) {
  const known = typeof v === "number" && v >= 0;
  return el("td", { class: "mono num" }, known ? (digits ? v.toFixed(digits) : String(v)) : "–");
}

export function fmtMs(ms) {
  if (typeof ms !== "number") return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function parseTime(t) {
  if (typeof t === "number") return t < 1e12 ? t * 1000 : t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

export function fmtAgo(ms, now = Date.now()) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

function timeCell(t) {
  const ms = parseTime(t);
  return el("td", { class: "nowrap", title: ms == null ? String(t ?? "") : new Date(ms).toLocaleString(), "data-time": ms ?? "" },
    ms == null ? String(t ?? "") : fmtAgo(ms));
}

function metadataTags(meta) {
  if (!meta || typeof meta !== "object") return null;
  return Object.entries(meta).map(([k, v]) => el("span", { class: "tag meta", title: k }, ` ${k}=${v}`));
}

const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

/** A bar chart of a speed histogram `{bins, min, max, binSize, p50, p95, p99}`. */
export function histogram(id, title, h) {
  const box = el("div", { class: "card hist", id });
  const bins = Array.isArray(h?.bins) ? h.bins : [];
  const total = bins.reduce((a, b) => a + b, 0);
  box.append(el("h3", {}, title));
  if (!total) {
    box.dataset.count = "0";
    box.append(el("p", { class: "muted" }, "No measured speeds yet."));
    return box;
  }
  box.dataset.count = String(total);
  // Bars only in the (stretched) SVG; the axis labels are HTML so they keep their shape.
  const W = 300, H = 70, top = 2;
  const max = Math.max(...bins);
  const bw = W / bins.length;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "hist-chart", role: "img", "aria-label": `${title} histogram` });
  bins.forEach((count, i) => {
    const bh = max ? ((H - top) * count) / max : 0;
    const rect = svg("rect", { x: i * bw + 1, y: H - bh, width: Math.max(bw - 2, 1), height: bh, class: "bar" });
    const lo = h.min + i * h.binSize;
    rect.append(svg("title", {}, `${lo.toFixed(1)}–${(lo + h.binSize).toFixed(1)} tok/s: ${count}`));
    chart.append(rect);
  });
  box.append(chart, el("div", { class: "hist-axis mono" }, el("span", {}, Number(h.min).toFixed(1)), el("span", {}, Number(h.max).toFixed(1))));
  box.append(el("div", { class: "percentiles mono" },
    ["p50", "p95", "p99"].map((p) => el("span", { "data-p": p }, `${p} ${Number(h[p] ?? 0).toFixed(1)}`)), "tok/s"));
  return box;
}

// ---- capture bodies ---------------------------------------------------------------------

function headerValue(headers, name) {
  if (!headers) return "";
  if (Array.isArray(headers)) {
    const hit = headers.find((h) => String(h.name ?? h[0]).toLowerCase() === name);
    return hit ? String(hit.value ?? hit[1]) : "";
  }
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return Array.isArray(v) ? v.join(", ") : String(v);
  return "";
}

function decodeBase64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** How to show a captured body: `{kind: "json"|"text"|"binary"|"empty", text, size}`. */
export function describeBody(b64, headers) {
  if (!b64) return { kind: "empty", text: "", size: 0 };
  let bytes;
  try { bytes = decodeBase64(b64); } catch { return { kind: "text", text: String(b64), size: String(b64).length }; }
  const size = bytes.length;
  const type = headerValue(headers, "content-type").toLowerCase();
  let text = null;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch { /* not UTF-8 */ }
  if (text == null || /[\x00-\x08\x0e-\x1f]/.test(text.slice(0, 4096))) {
    return { kind: "binary", text: `binary body, ${fmtInt(size)} bytes${type ? ` (${type})` : ""}`, size };
  }
  if (!type.includes("event-stream") && (type.includes("json") || /^\s*[{[]/.test(text))) {
    try { return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2), size }; } catch { /* fall through */ }
  }
  return { kind: "text", text, size };
}

function headerTable(headers) {
  const entries = Array.isArray(headers)
    ? headers.map((h) => [h.name ?? h[0], h.value ?? h[1]])
    : Object.entries(headers || {});
  if (!entries.length) return el("p", { class: "muted" }, "none");
  return el("table", { class: "grid headers" }, el("tbody", {}, entries.sort(([a], [b]) => String(a).localeCompare(String(b))).map(([k, v]) =>
    el("tr", {}, el("th", { class: "mono" }, k), el("td", { class: "mono" }, Array.isArray(v) ? v.join(", ") : String(v))))));
}

function bodyBlock(id, b64, headers) {
  const body = describeBody(b64, headers);
  const label = body.kind === "empty" ? "empty" : `${body.kind}, ${fmtInt(body.size)} bytes`;
  return [
    el("div", { class: "muted small" }, label),
    body.kind === "empty" ? null : el("pre", { class: `body ${body.kind}`, id, "data-kind": body.kind }, body.text),
  ];
}

// ---- the page section -------------------------------------------------------------------

export function mountHistory(root, store) {
  let alive = true;
  const stats = el("div", { class: "stats", id: "activity-stats" });
  const modelFilter = el("select", { id: "history-model", "aria-label": "Filter by model" });
  const limit = el("select", { id: "history-limit", "aria-label": "Rows per page" },
    LIMITS.map((n) => el("option", { value: n, selected: n === prefs.limit }, `${n} / page`)));
  const prev = el("button", { type: "button", class: "ghost", id: "history-prev" }, "‹ Newer");
  const next = el("button", { type: "button", class: "ghost", id: "history-next" }, "Older ›");
  const pageInfo = el("span", { class: "muted", id: "history-page" });
  const head = el("tr", {});
  const body = el("tbody", { id: "history-rows" });
  const table = el("table", { class: "inflight history", id: "history-table" }, el("thead", {}, head), body);
  const empty = el("p", { class: "muted", id: "history-empty", hidden: true });
  const error = el("p", { class: "error", id: "history-error", hidden: true });
  const wrap = el("div", { class: "card table-wrap" }, table, empty);
  const dialog = el("dialog", { id: "capture-dialog", class: "capture" });
  root.append(
    el("div", { class: "toolbar history-bar" }, el("h2", {}, "Completed"), el("span", { class: "grow" }), modelFilter, limit),
    stats, error, wrap,
    el("div", { class: "row pager" }, prev, pageInfo, next),
    dialog,
  );

  const knownModels = new Set(prefs.model ? [prefs.model] : []);
  function fillModels(rows = []) {
    for (const m of store.models) knownModels.add(m.id);
    for (const r of rows) if (r.model) knownModels.add(r.model);
    const want = ["", ...[...knownModels].sort()];
    if ([...modelFilter.options].map((o) => o.value).join("\n") === want.join("\n")) return;
    modelFilter.replaceChildren(...want.map((id) => el("option", { value: id, selected: id === prefs.model }, id || "all models")));
    modelFilter.value = prefs.model;
  }

  function drawHead() {
    head.replaceChildren(...COLUMNS.map(([key, label]) => {
      if (!key) return el("th", { scope: "col" }, label);
      const active = prefs.sort === key;
      const button = el("button", { type: "button", class: "sort", "data-sort": key },
        label, active ? (prefs.order === "asc" ? " ▲" : " ▼") : "");
      button.addEventListener("click", () => {
        if (prefs.sort === key) prefs.order = prefs.order === "asc" ? "desc" : "asc";
        else { prefs.sort = key; prefs.order = key === "model" || key === "req_path" ? "asc" : "desc"; }
        prefs.page = 1;
        drawHead();
        refresh();
      });
      return el("th", { scope: "col", "aria-sort": active ? (prefs.order === "asc" ? "ascending" : "descending") : "none" }, button);
    }));
  }

  function row(r) {
    const cells = COLUMNS.map(([, , cell]) => (cell ? cell(r) : null)).filter(Boolean);
    const capture = r.has_capture
      ? el("button", { type: "button", class: "ghost", "data-capture": r.id, onclick: () => openCapture(r) }, "Capture")
      : null;
    return el("tr", { "data-id": r.id, "data-model": r.model ?? "" }, cells, el("td", { class: "actions" }, capture));
  }

  function showStats(s) {
    if (!s) { stats.replaceChildren(); return; }
    const tile = (id, label, value) => el("div", { class: "card tile" }, el("div", { class: "muted small" }, label), el("div", { class: "big", id }, fmtInt(value)));
    stats.replaceChildren(
      el("div", { class: "tiles" },
        tile("stat-requests", "Requests", s.total_requests),
        tile("stat-input", "Prompt tokens", s.total_input_tokens),
        tile("stat-output", "Generated tokens", s.total_output_tokens),
        tile("stat-cache", "Cached tokens", s.total_cache_tokens)),
      el("div", { class: "hists" },
        histogram("hist-prompt", "Prompt speed", s.prompt_histogram),
        histogram("hist-gen", "Generation speed", s.gen_histogram)));
  }

  function unavailable(status) {
    table.hidden = true;
    empty.hidden = false;
    empty.dataset.unavailable = "true";
    empty.textContent = `Request history is not available from this server (GET /api/metrics/activity answered ${status}).`;
    prev.disabled = next.disabled = true;
    pageInfo.textContent = "";
  }

  async function load() {
    const q = new URLSearchParams({ page: prefs.page, limit: prefs.limit, sort: prefs.sort, order: prefs.order });
    if (prefs.model) q.set("model", prefs.model);
    const statsQ = prefs.model ? `?${new URLSearchParams({ model: prefs.model })}` : "";
    const [resp, statsResp] = await Promise.all([apiFetch(`/api/metrics/activity?${q}`), apiFetch(`/api/metrics/stats${statsQ}`)]);
    if (!alive) return;
    showStats(statsResp.ok ? await statsResp.json() : null);
    if (!resp.ok) {
      if (resp.status === 404) { unavailable(404); return; }
      throw new Error(`GET /api/metrics/activity: HTTP ${resp.status}`);
    }
    const doc = await resp.json();
    const rows = Array.isArray(doc.data) ? doc.data : [];
    const pages = Math.max(doc.total_pages || 0, 1);
    if (prefs.page > pages && doc.total) { prefs.page = pages; return load(); }
    error.hidden = true;
    fillModels(rows);
    body.replaceChildren(...rows.map(row));
    table.hidden = rows.length === 0;
    empty.hidden = rows.length > 0;
    empty.textContent = prefs.model ? `No completed requests for ${prefs.model}.` : "No completed requests yet.";
    prev.disabled = prefs.page <= 1;
    next.disabled = prefs.page >= pages;
    pageInfo.textContent = `page ${doc.page ?? prefs.page} of ${pages} · ${fmtInt(doc.total ?? rows.length)} requests`;
    pageInfo.dataset.total = String(doc.total ?? rows.length);
  }

  // One load at a time; a request during a load asks for one more round after it.
  let loading = false, again = false;
  async function refresh() {
    if (loading) { again = true; return; }
    loading = true;
    do {
      again = false;
      try { await load(); } catch (err) {
        error.textContent = String(err.message || err);
        error.hidden = false;
      }
    } while (again && alive);
    loading = false;
  }

  async function openCapture(r) {
    dialog.replaceChildren(el("p", { class: "muted" }, "loading…"));
    if (!dialog.open) dialog.showModal();
    let cap;
    try {
      const resp = await apiFetch(`/api/captures/${encodeURIComponent(r.id)}`);
      if (!resp.ok) throw new Error(resp.status === 404 ? "This capture was evicted from the capture buffer." : `HTTP ${resp.status}`);
      cap = await resp.json();
    } catch (err) {
      dialog.replaceChildren(el("p", { class: "error" }, String(err.message || err)), closeButton());
      return;
    }
    dialog.dataset.id = String(cap.id ?? r.id);
    dialog.replaceChildren(
      el("div", { class: "row" }, el("h2", {}, `Request ${cap.id ?? r.id}`), el("span", { class: "mono" }, cap.req_path ?? r.req_path ?? ""),
        el("span", { class: "spacer" }), closeButton()),
      el("div", { class: "capture-grid" },
        el("section", { id: "capture-request" },
          el("h3", {}, "Request"), el("details", {}, el("summary", {}, "headers"), headerTable(cap.req_headers)),
          bodyBlock("capture-req-body", cap.req_body, cap.req_headers)),
        el("section", { id: "capture-response" },
          el("h3", {}, "Response"), el("details", {}, el("summary", {}, "headers"), headerTable(cap.resp_headers)),
          bodyBlock("capture-resp-body", cap.resp_body, cap.resp_headers))));
  }

  function closeButton() {
    return el("button", { type: "button", class: "ghost", id: "capture-close", onclick: () => dialog.close() }, "Close");
  }

  modelFilter.addEventListener("change", () => { prefs.model = modelFilter.value; prefs.page = 1; refresh(); });
  limit.addEventListener("change", () => { prefs.limit = Number(limit.value); prefs.page = 1; refresh(); });
  prev.addEventListener("click", () => { if (prefs.page > 1) { prefs.page -= 1; refresh(); } });
  next.addEventListener("click", () => { prefs.page += 1; refresh(); });
  dialog.addEventListener("click", (ev) => { if (ev.target === dialog) dialog.close(); }); // backdrop

  // Recorded rows arrive as `activity` events; refresh at most every 300 ms.
  let timer = null;
  const soon = () => { if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 300); };
  const ageTimer = setInterval(() => {
    for (const td of body.querySelectorAll("td[data-time]")) if (td.dataset.time) td.textContent = fmtAgo(Number(td.dataset.time));
  }, 5000);
  const off = store.subscribe((kind, payload) => {
    if (kind === "activity") soon();
    else if (kind === "modelStatus") fillModels();
    else if (kind === "inflight" && payload?.operation === "remove") soon();
  });

  fillModels();
  drawHead();
  refresh();
  return () => { alive = false; off(); clearTimeout(timer); clearInterval(ageTimer); if (dialog.open) dialog.close(); };
}
