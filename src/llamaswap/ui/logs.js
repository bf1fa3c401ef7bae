// Logs: the proxy and upstream streams, one model's own stream, a text filter and ANSI colours.
import { el, follow, idPath } from "./api.js";

const MAX_LINES = 5000;
const ESC_RE = /\x1b\[([0-9;]*)([A-Za-z])/g;

/** Render one line with SGR colours as DOM nodes (escaping everything else). */
export function ansiLine(line, carry) {
  const frag = document.createDocumentFragment();
  let style = carry || { bold: false, dim: false, italic: false, underline: false, fg: null };
  let last = 0;
  const push = (text) => {
    if (!text) return;
    const cls = [];
    if (style.bold) cls.push("ansi-bold");
    if (style.dim) cls.push("ansi-dim");
    if (style.italic) cls.push("ansi-italic");
    if (style.underline) cls.push("ansi-underline");
    if (style.fg) cls.push(`ansi-${style.fg}`);
    frag.append(cls.length ? el("span", { class: cls.join(" ") }, text) : document.createTextNode(text));
  };
  for (const m of line.matchAll(ESC_RE)) {
    push(line.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[2] !== "m") continue;
    style = { ...style };
    const codes = m[1] === "" ? [0] : m[1].split(";").map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) style = { bold: false, dim: false, italic: false, underline: false, fg: null };
      else if (c === 1) style.bold = true;
      else if (c === 2) style.dim = true;
      else if (c === 3) style.italic = true;
      else if (c === 4) style.underline = true;
      else if (c === 22) { style.bold = false; style.dim = false; }
      else if (c === 23) style.italic = false;
      else if (c === 24) style.underline = false;
      else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) style.fg = c;
      else if (c === 39) style.fg = null;
      else if (c === 38 || c === 48) i += codes[i + 1] === 5 ? 2 : 4; // 256/true colour: skip
    }
  }
  push(line.slice(last));
  return { frag, style };
}

const stripAnsi = (s) => s.replace(ESC_RE, "");
let pickedModel = ""; // the model panel's choice, kept across page switches

/** A <pre> that holds the lines of a stream and shows those matching a filter. */
export class LogView {
  constructor(pre) {
    this.pre = pre;
    this.lines = [];
    this.partial = "";
    this.filter = "";
    this.pending = false;
  }
  clear() { this.lines = []; this.partial = ""; this.schedule(); }
  append(text) {
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop();
    this.lines.push(...parts);
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    this.schedule();
  }
  setFilter(f) { this.filter = f.toLowerCase(); this.schedule(); }
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }
  render() {
    const pre = this.pre;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30;
    const all = this.partial ? [...this.lines, this.partial] : this.lines;
    const frag = document.createDocumentFragment();
    let style = null;
    for (const line of all) {
      if (this.filter && !stripAnsi(line).toLowerCase().includes(this.filter)) continue;
      const out = ansiLine(line, style);
      style = out.style;
      const div = el("div", { class: "line" });
      div.append(out.frag);
      if (!line) div.append("\u200b");
      frag.append(div);
    }
    pre.replaceChildren(frag);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
}

export function mount(view, store) {
  const filter = el("input", { type: "search", id: "log-filter", placeholder: "filter lines…", "aria-label": "Filter log lines" });
  const ctrl = new AbortController();
  const views = [];
  const panel = (lv, ...tools) => {
    views.push(lv);
    const clear = el("button", { type: "button", class: "ghost", onclick: () => lv.clear() }, "Clear");
    return el("section", {}, el("div", { class: "row" }, ...tools, el("span", { class: "spacer" }), clear), lv.pre);
  };
  const section = (source, title) => {
    const lv = new LogView(el("pre", { class: "log", id: `log-${source}`, "data-log": source }));
    follow(`/logs/stream/${source}`, { signal: ctrl.signal, onOpen: () => lv.clear(), onText: (t) => lv.append(t) });
    return panel(lv, el("h2", {}, title));
  };

  // One model's own process log, picked from the configured models.
  const modelView = new LogView(el("pre", { class: "log", id: "log-model", "data-log": "" }));
  const picker = el("select", { id: "log-model-select", "aria-label": "Model log" });
  let modelCtrl = null;
  const followModel = (id) => {
    pickedModel = id;
    modelCtrl?.abort();
    modelCtrl = null;
    modelView.pre.dataset.log = id;
    modelView.clear();
    if (!id) return;
    modelCtrl = new AbortController();
    follow(`/logs/stream/${idPath(id)}`, {
      signal: modelCtrl.signal,
      onOpen: () => modelView.clear(),
      onText: (t) => modelView.append(t),
    });
  };
  const fillPicker = () => {
    const ids = store.models.map((m) => m.id);
    // at first: the last choice, else the first model that is running
    const current = picker.options.length > 1 ? picker.value
      : (ids.includes(pickedModel) ? pickedModel : store.models.find((m) => m.state === "ready")?.id || "");
    if ([...picker.options].map((o) => o.value).join("\n") === ["", ...ids].join("\n")) return;
    picker.replaceChildren(el("option", { value: "" }, "choose a model…"), ...ids.map((id) => el("option", { value: id }, id)));
    picker.value = ids.includes(current) ? current : "";
    if (picker.value !== modelView.pre.dataset.log) followModel(picker.value);
  };
  picker.addEventListener("change", () => followModel(picker.value));
  fillPicker();

  filter.addEventListener("input", () => { for (const v of views) v.setFilter(filter.value); });
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Logs"), el("span", { class: "grow" }), filter),
    el("div", { class: "logs-grid" },
      section("proxy", "Proxy"),
      section("upstream", "Upstream"),
      panel(modelView, el("h2", {}, "Model"), picker)),
  );
  const off = store.subscribe((kind) => { if (kind === "modelStatus") fillPicker(); });
  return () => { off(); ctrl.abort(); modelCtrl?.abort(); };
}
