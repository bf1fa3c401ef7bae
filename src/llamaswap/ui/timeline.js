// Timeline: one lane per model with starting/ready/stopping segments and swap markers.
import { el } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const WINDOWS = { "1 min": 60e3, "5 min": 300e3, "15 min": 900e3 };
const LANE_H = 26, GAP = 6, TOP = 22, LABEL_W = 110;

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

const fmtDur = (d) => (d == null ? "?" : d < 1 ? `${Math.round(d * 1000)} ms` : `${d.toFixed(2)} s`);
const fmtClock = (t) => new Date(t).toLocaleTimeString([], { hour12: false });

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
      el("span", {}, el("i", { style: "background: var(--swap)" }), "swap (target · duration)")),
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
    const height = TOP + Math.max(ids.length, 1) * (LANE_H + GAP) + 4;
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

    for (const sw of store.swaps) {
      if (sw.t < from) continue;
      const g = s("g", { class: `swap${sw.error ? " failed" : ""}`, "data-target": sw.target });
      const xs = x(sw.t);
      g.append(s("line", { x1: xs, x2: xs, y1: TOP - 4, y2: height }));
      const lane = ids.indexOf(sw.target);
      const ty = TOP + Math.max(lane, 0) * (LANE_H + GAP) + LANE_H / 2 + 4;
      const anchor = xs > labelW + plotW * 0.7 ? "end" : "start";
      g.append(s("text", { x: xs + (anchor === "end" ? -4 : 4), y: ty, "text-anchor": anchor }, `⇄ ${sw.target} · ${fmtDur(sw.duration_s)}`));
      g.append(s("title", {}, `swap to ${sw.target} in ${fmtDur(sw.duration_s)}${sw.evicted?.length ? `, evicted ${sw.evicted.join(", ")}` : ""}${sw.error ? ` — error: ${sw.error}` : ""}`));
      svg.append(g);
    }
    box.replaceChildren(svg);
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
    if (kind === "modelStatus" || kind === "swap") draw();
    if (kind === "swap") listSwaps();
  });
  return () => { clearInterval(timer); off(); window.removeEventListener("resize", onResize); };
}
