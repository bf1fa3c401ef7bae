// Activity: the requests being served right now (or waiting for their model), live from
// the `inflight` events, with a Cancel button each; below, the completed requests, their
// token and speed statistics and a viewer for captured bodies (history.js).
import { apiFetch, el } from "./api.js";
import { mountHistory } from "./history.js";

export function fmtElapsed(ms) {
  const s = Math.max(ms, 0) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
}

/** The request's session id: the first `ui.activity.session_id` header it carries. */
export function sessionOf(headers, names) {
  const lower = new Map(Object.entries(headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
  for (const name of names || []) {
    const v = lower.get(String(name).toLowerCase());
    if (v) return String(v);
  }
  return "";
}

export function mount(view, store) {
  const count = el("span", { class: "muted", id: "inflight-count" });
  const queue = el("span", { class: "tag", id: "activity-queue", "data-depth": "0" });
  const body = el("tbody", { id: "inflight-rows" });
  const empty = el("p", { class: "muted", id: "inflight-empty" });
  const error = el("p", { class: "error", id: "inflight-error", hidden: true });
  const table = el("table", { class: "inflight", id: "inflight-table" },
    el("thead", {}, el("tr", {},
      ["ID", "Model", "Session", "Method", "Path", "Remote IP", "Elapsed", ""].map((h) => el("th", { scope: "col" }, h)))),
    body);
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Activity"), count, el("span", { class: "grow" }), queue),
    el("h2", {}, "In flight"),
    error,
    el("div", { class: "card table-wrap" }, table, empty),
  );
  const unmountHistory = mountHistory(view, store);

  const rows = new Map(); // id -> {tr, elapsed}

  async function cancel(id, button) {
    button.disabled = true;
    button.textContent = "Cancelling…";
    error.hidden = true;
    try {
      const resp = await apiFetch(`/api/inflight/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      if (resp.status === 404) { store.inflight.delete(id); render(); return; } // already finished
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      // the row goes away with the `remove` event
    } catch (err) {
      error.textContent = `Cancelling request ${id} failed: ${err.message}`;
      error.hidden = false;
      button.disabled = false;
      button.textContent = "Cancel";
    }
  }

  function row(r) {
    const elapsed = el("td", { class: "mono elapsed" });
    const button = el("button", { type: "button", class: "ghost danger", title: `Cancel request ${r.id}` }, "Cancel");
    button.addEventListener("click", () => cancel(r.id, button));
    const tr = el("tr", { "data-id": r.id, "data-model": r.model },
      el("td", { class: "mono" }, r.id),
      el("td", { class: "model-name" }, r.model),
      el("td", { class: "mono session" }, sessionOf(r.req_headers, store.uiConfig?.activity?.session_id)),
      el("td", { class: "mono" }, r.method),
      el("td", { class: "mono path" }, r.req_path),
      el("td", { class: "mono" }, r.remote_ip),
      elapsed,
      el("td", { class: "actions" }, button));
    return { tr, elapsed };
  }

  function tick() {
    const now = Date.now();
    for (const [id, { elapsed }] of rows) {
      const r = store.inflight.get(id);
      if (r) elapsed.textContent = fmtElapsed(now - r.since);
    }
  }

  function render() {
    for (const [id, { tr }] of rows) {
      if (!store.inflight.has(id)) { tr.remove(); rows.delete(id); }
    }
    const sorted = [...store.inflight.values()].sort((a, b) => a.since - b.since || Number(a.id) - Number(b.id));
    for (const r of sorted) {
      let entry = rows.get(r.id);
      if (!entry) { entry = row(r); rows.set(r.id, entry); }
      body.append(entry.tr); // (re)appending keeps the order without rebuilding the rows
    }
    const n = store.inflight.size;
    count.textContent = store.inflightReceived ? `${n} in flight` : "";
    table.hidden = n === 0;
    empty.hidden = n > 0;
    empty.textContent = store.inflightReceived ? "No requests in flight." : "Connecting…";
    queue.dataset.depth = String(store.queueDepth);
    queue.textContent = `queue: ${store.queueDepth} waiting`;
    tick();
  }

  render();
  const timer = setInterval(tick, 200);
  const off = store.subscribe((kind) => { if (kind === "inflight" || kind === "queue") render(); });
  return () => { clearInterval(timer); off(); unmountHistory(); };
}
