// Timeline: one lane per model with starting/ready/stopping segments and swap markers,
// and a strip of the queue depth (requests waiting for a lease) over time.
import { el } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const WINDOWS = { "1 min": 60e3, "5 min": 300e3, "15 min": 900e3 };
const LANE_H = 30, GAP = 6, TOP = 22, LABEL_W = 110, QUEUE_H = 44;

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

const fmtDur = (d) => (d == null ? "?" : d < 1 ? `${Math.round(d * 1000)} ms` : `${d.toFixed(2)} s`);
const fmtClock = (t) => new Date(t).toLocaleTimeString([], { hour12: false });

// Swap labels sit on one of two rows of their target's lane (baselines from the lane top;
// 11px text is ~13.3px tall, so the rows are 14px apart).
const LABEL_ROWS = [12, LANE_H - 4];
const LABEL_FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
let measureCtx = null;
function textWidth(text) {
  measureCtx ??= document.createElement("canvas").getContext("2d");
  measureCtx.font = LABEL_FONT;
  return measureCtx.measureText(text).width;
}

/** Places labels without overlap: place(lane, x, text) -> {x, row, anchor} on the first row
 * of the lane where the label's extent is free (right of the marker, or left of it near the
 * right edge), or null when every row is taken there (the marker keeps its tooltip). */
function labelPlacer(left, right) {
  const taken = new Map(); // "lane:row" -> [[x0, x1]]
  const PAD = 4;
  return (lane, xs, text) => {
    const w = textWidth(text);
    const after = [xs + PAD, xs + PAD + w], before = [xs - PAD - w, xs - PAD];
    const spans = after[1] <= right || before[0] < left
      ? [[after, "start"], [before, "end"]] : [[before, "end"], [after, "start"]];
    for (let row = 0; row < LABEL_ROWS.length; row++) {
      const key = `${lane}:${row}`;
      const used = taken.get(key) || [];
      for (const [[x0, x1], anchor] of spans) {
        if (x0 < left || x1 > right + 1) continue;
        if (used.some(([a, b]) => x0 < b + PAD && a < x1 + PAD)) continue;
        used.push([x0, x1]);
        taken.set(key, used);
        return { x: anchor === "start" ? x0 : x1, row, anchor };
      }
    }
    return null;
  };
}

export function mount(view, store) {
  let windowMs = WINDOWS["5 min"];
  const picker = el("select", { id: "timeline-window", "aria-label": "Time window" },
    Object.keys(WINDOWS).map((k) => el("option", { value: k, selected: WINDOWS[k] === windowMs }, k)));
  picker.addEventListener("change", () => { windowMs = WINDOWS[picker.value]; draw(); });
  const box = el("div", { class: "timeline-box card" });
  const swaps = el("ul", { class: "swaps", id: "swap-list" });
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Timeline"), el("span", { class: "grow" }), picker),
    el("div", { class: "legend" },
      ["starting", "ready", "stopping"].map((k) => el("span", {}, el("i", { style: `background: var(--${k})` }), k)),
      el("span", {}, el("i", { style: "background: var(--swap)" }), "swap (target · duration)"),
      el("span", {}, el("i", { style: "background: var(--swap); opacity: .35" }), "queue depth (waiting requests)")),
    box,
    el("h2", {}, "Recent swaps"),
    swaps,
  );

  function draw() {
    const now = Date.now();
    const from = now - windowMs;
    const ids = store.models.map((m) => m.id);
    for (const id of store.lanes.keys()) if (!ids.includes(id)) ids.push(id);
    const width = Math.max(box.clientWidth - 2, 280);
    const labelW = Math.min(LABEL_W, width * 0.3);
    const plotW = width - labelW - 8;
    const lanesH = TOP + Math.max(ids.length, 1) * (LANE_H + GAP);
    const height = lanesH + QUEUE_H + 4;
    const x = (t) => labelW + ((t - from) / windowMs) * plotW;
    const svg = s("svg", { class: "timeline", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "model state timeline" });

    const axis = s("g", { class: "axis" });
    const step = windowMs / 5;
    for (let i = 0; i <= 5; i++) {
      const t = from + i * step;
      axis.append(s("line", { class: "grid", x1: x(t), x2: x(t), y1: TOP - 4, y2: height }));
      const label = i === 5 ? "now" : `-${Math.round((now - t) / 1000)}s`;
      axis.append(s("text", { x: x(t), y: 12, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle" }, label));
    }
    svg.append(axis);

    ids.forEach((id, i) => {
      const y = TOP + i * (LANE_H + GAP);
      const lane = s("g", { class: "lane", "data-model": id });
      lane.append(s("rect", { class: "lane-bg", x: labelW, y, width: plotW, height: LANE_H, rx: 4 }));
      const name = id.length > 16 && labelW < 110 ? `${id.slice(0, 14)}…` : id;
      lane.append(s("text", { x: 4, y: y + LANE_H / 2 + 4 }, name));
      const changes = store.lanes.get(id) || [];
      changes.forEach((c, j) => {
        if (c.state === "stopped") return;
        const end = j + 1 < changes.length ? changes[j + 1].t : now;
        if (end < from) return;
        const x0 = x(Math.max(c.t, from)), x1 = x(end);
        const rect = s("rect", { class: `seg seg-${c.state}`, "data-state": c.state, x: x0, y: y + 3, width: Math.max(x1 - x0, 2), height: LANE_H - 6, rx: 3 });
        rect.append(s("title", {}, `${id}: ${c.state} from ${fmtClock(c.t)}`));
        lane.append(rect);
      });
      svg.append(lane);
    });

    // Newest first, so that when labels crowd the latest ones keep theirs.
    const placer = labelPlacer(labelW, labelW + plotW);
    for (const sw of [...store.swaps].reverse()) {
      if (sw.t < from) continue;
      const g = s("g", { class: `swap${sw.error ? " failed" : ""}`, "data-target": sw.target });
      const xs = x(sw.t);
      g.append(s("line", { x1: xs, x2: xs, y1: TOP - 4, y2: height }));
      const lane = Math.max(ids.indexOf(sw.target), 0);
      const text = `⇄ ${sw.target} · ${fmtDur(sw.duration_s)}`;
      const spot = placer(lane, xs, text);
      if (spot) {
        g.append(s("text", {
          class: "swap-label", x: spot.x, y: TOP + lane * (LANE_H + GAP) + LABEL_ROWS[spot.row],
          "text-anchor": spot.anchor,
        }, text));
      }
      g.append(s("title", {}, `swap to ${sw.target} in ${fmtDur(sw.duration_s)}${sw.evicted?.length ? `, evicted ${sw.evicted.join(", ")}` : ""}${sw.error ? ` — error: ${sw.error}` : ""}`));
      svg.append(g);
    }
    svg.append(queueStrip(from, now, lanesH, labelW, plotW, x));
    box.replaceChildren(svg);
  }

  // A step line of the queue depth across the window; data-depth is the depth now and
  // data-max the highest depth seen in the window.
  function queueStrip(from, now, y, labelW, plotW, x) {
    const changes = store.queue;
    let depth = 0;
    let i = 0;
    while (i < changes.length && changes[i].t <= from) depth = changes[i++].depth;
    const steps = [{ t: from, depth }];
    for (; i < changes.length; i++) steps.push(changes[i]);
    const max = Math.max(...steps.map((c) => c.depth), store.queueDepth);
    const g = s("g", { class: "queue", id: "queue-strip", "data-depth": store.queueDepth, "data-max": max });
    g.append(s("rect", { class: "queue-bg", x: labelW, y, width: plotW, height: QUEUE_H, rx: 4 }));
    g.append(s("text", { x: 4, y: y + QUEUE_H / 2 + 4 }, `queue ${store.queueDepth}`));
    const scale = Math.max(max, 1);
    const base = y + QUEUE_H - 2;
    const yOf = (d) => base - (d / scale) * (QUEUE_H - 8);
    let dPath = `M ${x(from)} ${base}`;
    steps.forEach((c, j) => {
      const x0 = x(c.t);
      dPath += ` L ${x0} ${yOf(j ? steps[j - 1].depth : c.depth)} L ${x0} ${yOf(c.depth)}`;
    });
    dPath += ` L ${x(now)} ${yOf(steps[steps.length - 1].depth)} L ${x(now)} ${base} Z`;
    const area = s("path", { class: "queue-area", d: dPath });
    area.append(s("title", {}, `queue depth: ${store.queueDepth} now, at most ${max} in this window`));
    g.append(area);
    if (max > 0) g.append(s("text", { class: "queue-max", x: labelW + 4, y: y + 12 }, `max ${max}`));
    return g;
  }

  function listSwaps() {
    const items = store.swaps.slice(-20).reverse().map((sw) =>
      el("li", { class: sw.error ? "error" : "", "data-target": sw.target },
        el("span", { class: "mono" }, fmtClock(sw.t)), " swap → ",
        el("strong", {}, sw.target), ` in ${fmtDur(sw.duration_s)}`,
        sw.evicted?.length ? ` (evicted ${sw.evicted.join(", ")})` : "",
        sw.error ? ` — ${sw.error}` : ""));
    swaps.replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No swaps yet.")]));
  }

  draw();
  listSwaps();
  const timer = setInterval(draw, 1000);
  const onResize = () => draw();
  window.addEventListener("resize", onResize);
  const off = store.subscribe((kind) => {
    if (kind === "modelStatus" || kind === "swap" || kind === "history" || kind === "queue") draw();
    if (kind === "swap" || kind === "history") listSwaps();
  });
  return () => { clearInterval(timer); off(); window.removeEventListener("resize", onResize); };
}
