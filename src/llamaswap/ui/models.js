// Models: live state dots, Load / Unload / Unload all, and a per-model log panel.
import { apiFetch, el, follow, idPath } from "./api.js";
import { LogView } from "./logs.js";

export function mount(view, store) {
  const status = el("span", { class: "muted", id: "models-status" });
  const list = el("div", { id: "model-list" });
  const unloadAll = el("button", {
    type: "button", class: "ghost", id: "unload-all",
    onclick: async () => {
      unloadAll.disabled = true;
      try { await report(apiFetch("/api/models/unload", { method: "POST" }), "unloaded every model"); }
      finally { unloadAll.disabled = false; }
    },
  }, "Unload all");
  view.append(el("div", { class: "toolbar" }, el("h1", {}, "Models"), el("span", { class: "grow" }), status, unloadAll), list);

  const cards = new Map(); // id -> {card, dot, stateText, logs}
  const panels = new Map(); // id -> AbortController of an open log panel

  async function report(promise, okText) {
    try {
      const resp = await promise;
      if (resp.ok) status.textContent = okText;
      else status.textContent = `error ${resp.status}: ${(await resp.text()).slice(0, 200)}`;
    } catch (err) {
      status.textContent = `error: ${err}`;
    }
  }

  function toggleLogs(id, box, button) {
    const open = panels.get(id);
    if (open) {
      open.abort();
      panels.delete(id);
      box.replaceChildren();
      button.textContent = "Logs";
      return;
    }
    const ctrl = new AbortController();
    panels.set(id, ctrl);
    const logView = new LogView(el("pre", { class: "log", "data-log": id }));
    box.replaceChildren(logView.pre);
    button.textContent = "Hide logs";
    follow(`/logs/stream/${idPath(id)}`, {
      signal: ctrl.signal,
      onOpen: () => logView.clear(),
      onText: (t) => logView.append(t),
    });
  }

  function card(m) {
    const dot = el("span", { class: `dot ${m.state}`, title: m.state });
    const stateText = el("span", { class: "state" }, m.state);
    const logBox = el("div");
    const logButton = el("button", { type: "button", class: "ghost", onclick: () => toggleLogs(m.id, logBox, logButton) }, "Logs");
    const load = el("button", {
      type: "button",
      onclick: async () => {
        load.disabled = true;
        status.textContent = `loading ${m.id}…`;
        try { await report(apiFetch(`/upstream/${idPath(m.id)}/`), `${m.id} loaded`); }
        finally { load.disabled = false; }
      },
    }, "Load");
    const unload = el("button", {
      type: "button", class: "ghost",
      onclick: () => report(apiFetch(`/api/models/unload/${idPath(m.id)}`, { method: "POST" }), `${m.id} unloaded`),
    }, "Unload");
    const title = m.name && m.name !== m.id ? `${m.name}` : "";
    const node = el("div", { class: "card model", "data-model": m.id, "data-state": m.state },
      el("div", { class: "model-head" },
        dot,
        el("span", { class: "model-name" }, m.id),
        stateText,
        m.unlisted ? el("span", { class: "tag" }, "unlisted") : null,
        el("span", { class: "actions" },
          load, unload, logButton,
          el("a", { href: `/upstream/${idPath(m.id)}/`, target: "_blank", rel: "noopener", class: "mono" }, "open ↗"),
        ),
      ),
      title ? el("div", {}, title) : null,
      m.description ? el("p", { class: "desc" }, m.description) : null,
      m.aliases?.length ? el("div", { class: "aliases" }, m.aliases.map((a) => el("span", { class: "tag", title: "alias" }, a))) : null,
      logBox,
    );
    cards.set(m.id, { node, dot, stateText });
    return node;
  }

  function render() {
    if (!store.received) {
      list.replaceChildren(el("p", { class: "muted" }, "Waiting for the model list…"));
      return;
    }
    const ids = store.models.map((m) => m.id).join("\n");
    if (ids !== [...cards.keys()].join("\n")) {
      for (const ctrl of panels.values()) ctrl.abort();
      panels.clear();
      cards.clear();
      list.replaceChildren(...store.models.map(card));
      if (!store.models.length) list.append(el("p", { class: "muted" }, "No models configured."));
      return;
    }
    for (const m of store.models) {
      const c = cards.get(m.id);
      c.node.dataset.state = m.state;
      c.dot.className = `dot ${m.state}`;
      c.dot.title = m.state;
      c.stateText.textContent = m.state;
    }
  }

  render();
  const off = store.subscribe((kind) => { if (kind === "modelStatus") render(); });
  return () => { off(); for (const ctrl of panels.values()) ctrl.abort(); };
}
