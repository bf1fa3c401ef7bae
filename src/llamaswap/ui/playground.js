// Playground: a streamed chat with reasoning shown apart from the answer, and forms for
// embeddings, rerank, speech and transcription. Each tab offers the models whose
// capabilities fit first; any model can still be picked.
import { apiFetch, el, readText, sseParser } from "./api.js";

const chat = { messages: [], model: "" }; // kept across page switches
const picked = {}; // tab -> the model last chosen there

const TABS = [
  { key: "chat", label: "Chat" },
  { key: "embeddings", label: "Embeddings" },
  { key: "rerank", label: "Rerank", capability: "reranker" },
  { key: "speech", label: "Speech", capability: "audio_speech" },
  { key: "transcription", label: "Transcription", capability: "audio_transcriptions" },
];

/** The models for a tab: `{suited, other}` id lists from /v1/models entries. */
export function modelsFor(entries, capability) {
  const suited = [], other = [];
  for (const e of entries) {
    const type = e.meta?.llamaswap?.type;
    if (type === "alias") continue;
    (capability && e.capabilities?.[capability] ? suited : other).push(e.id);
  }
  return { suited, other };
}

/** Show an error answer's text (an OpenAI-style envelope's message when there is one). */
async function errorText(resp) {
  const text = await resp.text();
  try {
    const doc = JSON.parse(text);
    const msg = doc?.error?.message ?? doc?.error ?? doc?.message;
    if (typeof msg === "string") return `${resp.status}: ${msg}`;
  } catch { /* not JSON */ }
  return `${resp.status}: ${text.slice(0, 300)}`;
}

const currentTab = () => {
  const sub = location.hash.replace(/^#\/?/, "").split("/")[1] || "chat";
  return TABS.some((t) => t.key === sub) ? sub : "chat";
};

export function mount(view, store) {
  const tab = currentTab();
  const spec = TABS.find((t) => t.key === tab);
  const select = el("select", { id: "pg-model", "aria-label": "Model" });
  const tabs = el("nav", { class: "tabs", id: "pg-tabs" }, TABS.map((t) =>
    el("a", { href: `#/playground/${t.key}`, "data-tab": t.key, class: t.key === tab ? "active" : null }, t.label)));
  const clear = el("button", { type: "button", class: "ghost", id: "pg-clear" }, "Clear");
  view.append(el("div", { class: "toolbar" }, el("h1", {}, "Playground"), tabs, el("span", { class: "grow" }), select, clear));
  const cleanups = [];

  async function fillModels() {
    let entries = store.models.filter((m) => !m.unlisted).map((m) => ({ id: m.id }));
    try {
      const resp = await apiFetch("/v1/models");
      if (resp.ok) entries = (await resp.json()).data || entries;
    } catch { /* fall back to the event list */ }
    const { suited, other } = modelsFor(entries, spec.capability);
    const current = select.value || picked[tab] || (tab === "chat" ? chat.model : "");
    const option = (id) => el("option", { value: id, selected: id === current }, id);
    if (spec.capability && suited.length) {
      select.replaceChildren(
        el("optgroup", { label: `${spec.label} models` }, suited.map(option)),
        el("optgroup", { label: "Other models" }, other.map(option)));
    } else {
      select.replaceChildren(...[...suited, ...other].sort().map(option));
    }
    if (!select.value && select.options.length) select.value = select.options[0].value;
    select.dataset.suited = suited.join(" ");
  }
  select.addEventListener("change", () => { picked[tab] = select.value; if (tab === "chat") chat.model = select.value; });

  const body = el("div", { class: "pg-body", "data-tab": tab });
  view.append(body);
  const forms = { chat: chatTab, embeddings: embeddingsTab, rerank: rerankTab, speech: speechTab, transcription: transcriptionTab };
  const cleanup = forms[tab](body, () => select.value, clear);
  if (cleanup) cleanups.push(cleanup);

  fillModels();
  const off = store.subscribe((kind) => { if (kind === "modelStatus" && !select.options.length) fillModels(); });
  return () => { off(); for (const fn of cleanups) fn(); };
}

/** A form with a Send button that runs `run(signal)` once at a time, showing errors. */
function runner(form, send, out, run) {
  let ctrl = null;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (ctrl) return;
    ctrl = new AbortController();
    send.disabled = true;
    out.dataset.state = "busy";
    out.replaceChildren(el("p", { class: "muted" }, "working…"));
    try {
      await run(ctrl.signal);
      out.dataset.state = "done";
    } catch (err) {
      if (!ctrl.signal.aborted) out.replaceChildren(el("p", { class: "error" }, String(err.message || err)));
      out.dataset.state = "error";
    } finally {
      ctrl = null;
      send.disabled = false;
    }
  });
  return () => ctrl?.abort();
}

async function postJSON(url, payload, signal) {
  const resp = await apiFetch(url, {
    method: "POST", signal,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  if (!resp.ok) throw new Error(await errorText(resp));
  return resp;
}

function chatTab(view, model, clear) {
  const log = el("div", { class: "chat", id: "pg-chat" });
  const input = el("textarea", { id: "pg-input", placeholder: "Say something… (Ctrl+Enter to send)", "aria-label": "Message" });
  const send = el("button", { type: "submit", id: "pg-send" }, "Send");
  const stop = el("button", { type: "button", class: "ghost", id: "pg-stop", disabled: true }, "Stop");
  const form = el("form", { class: "compose" }, input, el("div", { class: "row" }, send, stop));
  clear.addEventListener("click", () => { chat.messages = []; log.replaceChildren(); });
  view.append(log, form);
  let ctrl = null;

  function bubble(role, content = "", reasoning = "") {
    const reasonText = el("div", { class: "reasoning-text" }, reasoning);
    const details = el("details", { class: "reasoning", open: true, hidden: !reasoning }, el("summary", {}, "reasoning"), reasonText);
    const body = el("div", { class: "content" }, content);
    const node = el("div", { class: `msg ${role}`, "data-role": role }, el("span", { class: "who" }, role === "user" ? "you" : "assistant"), details, body);
    log.append(node);
    return { node, details, reasonText, body };
  }
  for (const m of chat.messages) bubble(m.role, m.content, m.reasoning || "");

  async function submit(ev) {
    ev?.preventDefault();
    const text = input.value.trim();
    if (!text || ctrl) return;
    chat.model = model();
    chat.messages.push({ role: "user", content: text });
    bubble("user", text);
    input.value = "";
    const out = bubble("assistant");
    out.node.classList.add("streaming");
    const reply = { role: "assistant", content: "", reasoning: "" };
    ctrl = new AbortController();
    send.disabled = true; stop.disabled = false;
    try {
      const resp = await apiFetch("/v1/chat/completions", {
        method: "POST",
        signal: ctrl.signal,
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({
          model: chat.model, stream: true,
          messages: chat.messages.map(({ role, content }) => ({ role, content })),
        }),
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      const parse = sseParser(({ data }) => {
        if (data === "[DONE]") return;
        let obj;
        try { obj = JSON.parse(data); } catch { return; }
        if (obj.error) { out.body.append(el("div", { class: "error" }, obj.error.message || JSON.stringify(obj.error))); return; }
        const delta = obj.choices?.[0]?.delta || {};
        const r = delta.reasoning_content ?? delta.reasoning;
        if (r) { reply.reasoning += r; out.reasonText.textContent = reply.reasoning; out.details.hidden = false; }
        if (delta.content) { reply.content += delta.content; out.body.textContent = reply.content; }
      });
      await readText(resp, parse, ctrl.signal);
    } catch (err) {
      if (!ctrl.signal.aborted) out.body.append(el("div", { class: "error" }, String(err.message || err)));
    } finally {
      out.node.classList.remove("streaming");
      out.node.dataset.done = "true";
      chat.messages.push(reply);
      ctrl = null;
      send.disabled = false; stop.disabled = true;
    }
  }
  form.addEventListener("submit", submit);
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) submit(ev); });
  stop.addEventListener("click", () => ctrl?.abort());
  return () => ctrl?.abort();
}

const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);

function embeddingsTab(view, model, clear) {
  const input = el("textarea", { id: "emb-input", placeholder: "One text per line", "aria-label": "Texts to embed" });
  const send = el("button", { type: "submit", id: "emb-send" }, "Embed");
  const out = el("div", { class: "pg-result", id: "emb-result" });
  const form = el("form", { class: "pg-form" }, el("label", {}, "Input", input), el("div", { class: "row" }, send));
  clear.addEventListener("click", () => { input.value = ""; out.replaceChildren(); });
  view.append(form, out);
  return runner(form, send, out, async (signal) => {
    const texts = lines(input.value);
    const resp = await postJSON("/v1/embeddings", { model: model(), input: texts.length === 1 ? texts[0] : texts }, signal);
    const doc = await resp.json();
    const data = doc.data || [];
    out.replaceChildren(
      el("p", { id: "emb-summary" }, `${data.length} vector${data.length === 1 ? "" : "s"}, ` +
        `dimensions: ${data[0]?.embedding?.length ?? 0}` +
        (doc.usage?.prompt_tokens != null ? `, ${doc.usage.prompt_tokens} prompt tokens` : "")),
      el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "text"), el("th", {}, "length"), el("th", {}, "first values"))),
        el("tbody", {}, data.map((d, i) => el("tr", { "data-index": d.index ?? i },
          el("td", { class: "mono" }, d.index ?? i),
          el("td", {}, texts[d.index ?? i] ?? ""),
          el("td", { class: "mono vec-len" }, d.embedding?.length ?? 0),
          el("td", { class: "mono" }, (d.embedding || []).slice(0, 6).map((x) => Number(x).toFixed(4)).join(", ") + ((d.embedding?.length ?? 0) > 6 ? ", …" : "")))))));
  });
}

function rerankTab(view, model, clear) {
  const query = el("input", { type: "text", id: "rr-query", placeholder: "Query", "aria-label": "Query" });
  const docs = el("textarea", { id: "rr-docs", placeholder: "One document per line", "aria-label": "Documents" });
  const send = el("button", { type: "submit", id: "rr-send" }, "Rerank");
  const out = el("div", { class: "pg-result", id: "rr-result" });
  const form = el("form", { class: "pg-form" }, el("label", {}, "Query", query), el("label", {}, "Documents", docs), el("div", { class: "row" }, send));
  clear.addEventListener("click", () => { query.value = ""; docs.value = ""; out.replaceChildren(); });
  view.append(form, out);
  return runner(form, send, out, async (signal) => {
    const documents = lines(docs.value);
    const resp = await postJSON("/v1/rerank", { model: model(), query: query.value, documents }, signal);
    const doc = await resp.json();
    const results = [...(doc.results || doc.data || [])].sort((a, b) => (b.relevance_score ?? b.score ?? 0) - (a.relevance_score ?? a.score ?? 0));
    out.replaceChildren(el("table", { class: "grid", id: "rr-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "rank"), el("th", {}, "score"), el("th", {}, "document"))),
      el("tbody", {}, results.map((r, rank) => el("tr", { "data-index": r.index },
        el("td", { class: "mono" }, rank + 1),
        el("td", { class: "mono" }, Number(r.relevance_score ?? r.score ?? 0).toFixed(4)),
        el("td", {}, documents[r.index] ?? r.document?.text ?? `#${r.index}`))))));
  });
}

function speechTab(view, model, clear) {
  const text = el("textarea", { id: "sp-input", placeholder: "Text to speak", "aria-label": "Text to speak" });
  const voice = el("input", { type: "text", id: "sp-voice", placeholder: "voice (optional)", "aria-label": "Voice" });
  const send = el("button", { type: "submit", id: "sp-send" }, "Speak");
  const out = el("div", { class: "pg-result", id: "sp-result" });
  const form = el("form", { class: "pg-form" }, el("label", {}, "Text", text), el("label", {}, "Voice", voice), el("div", { class: "row" }, send));
  let url = null;
  const release = () => { if (url) URL.revokeObjectURL(url); url = null; };
  clear.addEventListener("click", () => { text.value = ""; release(); out.replaceChildren(); });
  view.append(form, out);
  const stop = runner(form, send, out, async (signal) => {
    const payload = { model: model(), input: text.value, response_format: "wav" };
    if (voice.value.trim()) payload.voice = voice.value.trim();
    const resp = await postJSON("/v1/audio/speech", payload, signal);
    const type = resp.headers.get("Content-Type") || "";
    if (!type.startsWith("audio/") && !type.startsWith("application/octet-stream")) {
      out.replaceChildren(el("p", { class: "muted" }, `The server answered ${type || "no content type"}, not audio:`),
        el("pre", { class: "body" }, (await resp.text()).slice(0, 2000)));
      return;
    }
    const blob = await resp.blob();
    release();
    url = URL.createObjectURL(blob);
    const audio = el("audio", { controls: true, src: url, id: "sp-audio" });
    out.replaceChildren(audio, el("p", { class: "muted", id: "sp-summary" }, `${type.split(";")[0]}, ${blob.size} bytes`));
    audio.play().catch(() => { /* autoplay refused: the controls remain */ });
  });
  return () => { stop(); release(); };
}

function transcriptionTab(view, model, clear) {
  const file = el("input", { type: "file", id: "tr-file", accept: "audio/*", "aria-label": "Audio file" });
  const language = el("input", { type: "text", id: "tr-language", placeholder: "language (optional, e.g. en)", "aria-label": "Language" });
  const send = el("button", { type: "submit", id: "tr-send" }, "Transcribe");
  const out = el("div", { class: "pg-result", id: "tr-result" });
  const form = el("form", { class: "pg-form" }, el("label", {}, "Audio file", file), el("label", {}, "Language", language), el("div", { class: "row" }, send));
  clear.addEventListener("click", () => { file.value = ""; out.replaceChildren(); });
  view.append(form, out);
  return runner(form, send, out, async (signal) => {
    const upload = file.files?.[0];
    if (!upload) throw new Error("Choose an audio file first.");
    const data = new FormData();
    data.append("model", model());
    data.append("file", upload, upload.name);
    if (language.value.trim()) data.append("language", language.value.trim());
    const resp = await apiFetch("/v1/audio/transcriptions", { method: "POST", body: data, signal });
    if (!resp.ok) throw new Error(await errorText(resp));
    const text = await resp.text();
    let shown = text;
    try { const doc = JSON.parse(text); if (typeof doc.text === "string") shown = doc.text; } catch { /* plain text */ }
    out.replaceChildren(el("p", { class: "transcript", id: "tr-text" }, shown));
  });
}
