// Models: local models with live state dots, Load / Unload / Unload all and a log panel;
// selectors, the active profile's pins and peer models from /v1/models; a profile switcher;
// device memory and the last eviction (devices.js) when models are placed by memory.
import { apiFetch, el, follow, idPath } from "./api.js";
import { LogView } from "./logs.js";
import { renderDevices } from "./devices.js";

const CAPABILITY_LABELS = {
  vision: "vision",
  audio_transcriptions: "transcription",
  audio_speech: "speech",
  image_generation: "image generation",
  image_to_image: "image editing",
  function_calling: "tools",
  reranker: "reranker",
};

/** Tags for an OpenAI-style `/v1/models` entry's capability fields. */
export function capabilityTags(entry) {
  const tags = [];
  for (const [key, label] of Object.entries(CAPABILITY_LABELS)) {
    if (entry?.capabilities?.[key]) tags.push(el("span", { class: "tag cap", "data-cap": key }, label));
  }
  if (entry?.architecture?.modality) tags.push(el("span", { class: "tag cap", title: "modality" }, entry.architecture.modality));
  if (entry?.context_length) tags.push(el("span", { class: "tag cap", title: "context length" }, `ctx ${entry.context_length}`));
  return tags;
}

/** The `meta.llamaswap` block of a `/v1/models` entry ({} when absent). */
export const metaOf = (entry) => entry?.meta?.llamaswap || {};

/** What the scheduler knows of a model: requests in flight and queued, learned load time. */
export function schedulingText(m) {
  const parts = [`${m.inFlight ?? 0} in flight`, `${m.queued ?? 0} queued`];
  if (m.loadTimeS != null) parts.push(`loads in ~${m.loadTimeS.toFixed(1)} s`);
  return parts.join(" · ");
}

const secs = (n) => `${Math.max(0, Math.round(n))} s`;

/** Where a model runs and how long it stays: group, ttl, idle time or time left before
 * the ttl unloads it, port and pid. `elapsedS`: seconds since the modelStatus arrived (the
 * server sends it on changes only, so the countdown ticks here). */
export function residencyText(m, elapsedS = 0) {
  const parts = [];
  if (m.group) parts.push(`group ${m.group}`);
  if (m.ttl != null) parts.push(m.ttl > 0 ? `ttl ${m.ttl} s` : "no ttl");
  if (m.unloadInS != null) parts.push(`unloads in ${secs(m.unloadInS - elapsedS)}`);
  else if (m.idleS != null) parts.push(`idle ${secs(m.idleS + elapsedS)}`);
  if (m.port != null) parts.push(`port ${m.port}`);
  if (m.pid != null) parts.push(`pid ${m.pid}`);
  return parts.join(" · ");
}

// Load makes sense only for a model that is not (being) loaded; Unload for one that runs.
const LOADED = new Set(["starting", "ready"]);
const UNLOADED = new Set(["stopped", "shutdown"]);

/** The crash-loop backoff line, or "" when the model is not backing off. */
export function backoffText(b) {
  if (!b) return "";
  return `backing off after ${b.failures} failed starts; next attempt in ${Math.ceil(b.retryInS)} s. ${b.lastError}`;
}

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
  const profileSelect = el("select", { id: "profile-select", "aria-label": "Active profile" });
  const profileBox = el("label", { class: "profile-box", id: "profile-box", hidden: true }, "Profile", profileSelect);
  const profileDesc = el("p", { class: "muted desc", id: "profile-desc", hidden: true });
  const selectors = el("section", { id: "selector-list", hidden: true });
  const pins = el("section", { id: "pin-list", hidden: true });
  const peers = el("section", { id: "peer-list", hidden: true });
  const devices = el("section", { id: "device-list", hidden: true });
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Models"), el("span", { class: "grow" }), status, profileBox, unloadAll),
    profileDesc, devices, list, selectors, pins, peers,
  );

  const cards = new Map(); // id -> {node, dot, stateText, caps, sched, backoff}
  const panels = new Map(); // id -> AbortController of an open log panel
  let listing = [];          // the latest /v1/models data
  let profiles = null;       // the latest /api/profiles answer (null: none or unavailable)
  let alive = true;

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
    const caps = el("div", { class: "caps" });
    const sched = el("div", { class: "muted small sched", "data-sched": m.id }, schedulingText(m));
    const backoff = el("pre", { class: "backoff", "data-backoff": m.id, hidden: !m.backoff }, backoffText(m.backoff));
    const residency = el("div", { class: "muted small residency", "data-residency": m.id }, residencyText(m));
    const logButton = el("button", { type: "button", class: "ghost", onclick: () => toggleLogs(m.id, logBox, logButton) }, "Logs");
    const load = el("button", {
      type: "button",
      onclick: async () => {
        load.disabled = true; // until the modelStatus of the start arrives
        status.textContent = `loading ${m.id}…`;
        await report(apiFetch(`/upstream/${idPath(m.id)}/`), `${m.id} loaded`);
        syncButtons(cards.get(m.id), current(m.id));
      },
    }, "Load");
    const unload = el("button", {
      type: "button", class: "ghost",
      onclick: async () => {
        unload.disabled = true;
        await report(apiFetch(`/api/models/unload/${idPath(m.id)}`, { method: "POST" }), `${m.id} unloaded`);
        syncButtons(cards.get(m.id), current(m.id));
      },
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
      m.aliases?.length ? el("div", { class: "aliases" }, el("span", { class: "muted small" }, "aliases"), m.aliases.map((a) => el("span", { class: "tag", title: "alias" }, a))) : null,
      sched,
      residency,
      backoff,
      caps,
      logBox,
    );
    const c = { node, dot, stateText, caps, sched, backoff, residency, load, unload };
    cards.set(m.id, c);
    syncButtons(c, m);
    return node;
  }

  /** The latest modelStatus entry of `id` (undefined once it is gone). */
  const current = (id) => store.models.find((x) => x.id === id);

  function syncButtons(c, m) {
    if (!c || !m) return;
    c.load.disabled = LOADED.has(m.state);
    c.unload.disabled = UNLOADED.has(m.state);
  }

  // Seconds since the latest modelStatus, for the idle / unload countdowns.
  const elapsedS = () => (store.modelsAt ? (Date.now() - store.modelsAt) / 1000 : 0);

  function renderResidency() {
    const elapsed = elapsedS();
    for (const m of store.models) {
      const c = cards.get(m.id);
      if (c) c.residency.textContent = residencyText(m, elapsed);
    }
  }

  /** The live state of a name a selector or pin points at: a local model's, or null. */
  function stateOf(name) {
    const m = store.models.find((x) => x.id === name || x.aliases?.includes(name));
    return m ? m.state : null;
  }

  function targetChip(name) {
    const state = stateOf(name);
    const isPeer = state == null && listing.some((e) => e.id === name && metaOf(e).type === "peer");
    const cls = state ?? (isPeer ? "peer" : "unknown");
    return el("span", { class: "target", "data-target": name, "data-state": cls },
      el("span", { class: `dot ${cls}`, title: state ?? (isPeer ? "peer model" : "") }), name);
  }

  /** A selector's state: its pinned target's for `pin`, else the liveliest target's. */
  function selectorState(meta) {
    const states = (meta.targets || []).map(stateOf);
    if (meta.strategy === "pin") return states[0] ?? "stopped";
    for (const s of ["ready", "starting", "stopping"]) if (states.includes(s)) return s;
    return "stopped";
  }

  function renderSelectors() {
    const entries = listing.filter((e) => metaOf(e).type === "selector");
    selectors.hidden = entries.length === 0;
    selectors.replaceChildren(el("h2", {}, "Selectors"), ...entries.map((e) => {
      const meta = metaOf(e);
      const state = selectorState(meta);
      return el("div", { class: "card selector", "data-selector": e.id, "data-state": state },
        el("div", { class: "model-head" },
          el("span", { class: `dot ${state}`, title: state }),
          el("span", { class: "model-name" }, e.id),
          el("span", { class: "tag strategy", title: "strategy" }, meta.strategy || "?"),
          meta.spillover != null ? el("span", { class: "tag", title: "spillover" }, `spillover ${meta.spillover}`) : null),
        e.name && e.name !== e.id ? el("div", {}, e.name) : null,
        e.description ? el("p", { class: "desc" }, e.description) : null,
        el("div", { class: "targets" }, el("span", { class: "muted" }, "targets"), (meta.targets || []).map(targetChip)),
        el("div", { class: "caps" }, capabilityTags(e)));
    }));
  }

  function renderPins() {
    const active = profiles?.profiles?.find((p) => p.name === (profiles.active ?? store.activeProfile));
    const rows = new Map(); // pin -> target ("" = refused)
    if (active) for (const [pin, target] of Object.entries(active.pins || {})) rows.set(pin, target || "");
    for (const e of listing) if (metaOf(e).type === "profile" && !rows.has(e.id)) rows.set(e.id, metaOf(e).target || "");
    pins.hidden = rows.size === 0;
    const name = active?.name ?? listing.map(metaOf).find((m) => m.type === "profile")?.profile ?? "";
    pins.replaceChildren(
      el("h2", {}, "Profile pins ", el("span", { class: "tag", id: "pins-profile" }, name)),
      el("div", { class: "card pins" }, [...rows].sort(([a], [b]) => a.localeCompare(b)).map(([pin, target]) =>
        el("div", { class: "pin", "data-pin": pin },
          el("span", { class: "model-name" }, pin), el("span", { class: "muted" }, " → "),
          target ? targetChip(target) : el("span", { class: "muted" }, "refused (404)")))));
  }

  function renderPeers() {
    const byPeer = new Map();
    for (const e of listing) {
      const meta = metaOf(e);
      if (meta.type !== "peer") continue;
      if (!byPeer.has(meta.peerID)) byPeer.set(meta.peerID, []);
      byPeer.get(meta.peerID).push(e);
    }
    peers.hidden = byPeer.size === 0;
    peers.replaceChildren(el("h2", {}, "Peers"), ...[...byPeer].map(([peer, entries]) =>
      el("div", { class: "card peer", "data-peer": peer },
        el("div", { class: "model-head" }, el("span", { class: "dot peer" }), el("span", { class: "model-name" }, peer), el("span", { class: "tag" }, "peer")),
        el("ul", { class: "peer-models" }, entries.map((e) =>
          el("li", { "data-peer-model": e.id },
            el("span", { class: "mono" }, e.id),
            e.description ? el("span", { class: "desc" }, ` — ${e.description}`) : null,
            el("span", { class: "caps" }, capabilityTags(e))))))));
  }

  function renderProfiles() {
    const list = profiles?.profiles || [];
    profileBox.hidden = list.length === 0;
    const active = profiles?.active ?? store.activeProfile ?? "";
    profileSelect.replaceChildren(
      el("option", { value: "", selected: !active }, "none"),
      ...list.map((p) => el("option", { value: p.name, selected: p.name === active, title: p.description || null }, p.name)));
    profileSelect.value = active || "";
    const desc = list.find((p) => p.name === active)?.description || "";
    profileDesc.hidden = !desc;
    profileDesc.textContent = desc;
  }

  function renderCaps() {
    for (const [id, c] of cards) c.caps.replaceChildren(...capabilityTags(listing.find((e) => e.id === id)));
  }

  function renderExtras() {
    renderCaps();
    renderSelectors();
    renderPins();
    renderPeers();
    renderProfiles();
  }

  // One fetch at a time; a call during a fetch asks for one more round after it.
  let fetching = false, again = false;
  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    do {
      again = false;
      try {
        const [models, profs] = await Promise.all([apiFetch("/v1/models"), apiFetch("/api/profiles")]);
        if (models.ok) listing = (await models.json()).data || [];
        profiles = profs.ok ? await profs.json() : null;
      } catch { /* the next event retries */ }
    } while (again && alive);
    fetching = false;
    if (alive) renderExtras();
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
      if (!store.models.length) list.append(el("p", { class: "muted" }, "No local models configured."));
      refresh(); // a reload may have changed selectors, peers and profiles too
      return;
    }
    for (const m of store.models) {
      const c = cards.get(m.id);
      c.node.dataset.state = m.state;
      c.dot.className = `dot ${m.state}`;
      c.dot.title = m.state;
      c.stateText.textContent = m.state;
      c.sched.textContent = schedulingText(m);
      c.backoff.hidden = !m.backoff;
      c.backoff.textContent = backoffText(m.backoff);
      syncButtons(c, m);
    }
    renderResidency();
    renderSelectors();
    renderPins();
  }

  profileSelect.addEventListener("change", async () => {
    const name = profileSelect.value || null;
    profileSelect.disabled = true;
    try {
      await report(apiFetch("/api/profiles/active", {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      }), ""); // the select shows the outcome; only errors are reported
    } finally {
      profileSelect.disabled = false;
    }
    refresh();
  });

  render();
  renderDevices(devices, store.memory);
  refresh();
  const off = store.subscribe((kind) => {
    if (kind === "memory") renderDevices(devices, store.memory);
    else if (kind === "modelStatus") render();
    else if (kind === "profileChanged") refresh();
  });
  const ticker = setInterval(renderResidency, 1000);
  return () => { alive = false; off(); clearInterval(ticker); for (const ctrl of panels.values()) ctrl.abort(); };
}
