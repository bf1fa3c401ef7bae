// Playground: a streamed chat with reasoning shown apart from the answer.
import { apiFetch, el, readText, sseParser } from "./api.js";

const chat = { messages: [], model: "" }; // kept across page switches

export function mount(view, store) {
  const select = el("select", { id: "pg-model", "aria-label": "Model" });
  const log = el("div", { class: "chat", id: "pg-chat" });
  const input = el("textarea", { id: "pg-input", placeholder: "Say something… (Ctrl+Enter to send)", "aria-label": "Message" });
  const send = el("button", { type: "submit", id: "pg-send" }, "Send");
  const stop = el("button", { type: "button", class: "ghost", id: "pg-stop", disabled: true }, "Stop");
  const clear = el("button", { type: "button", class: "ghost", onclick: () => { chat.messages = []; log.replaceChildren(); } }, "Clear");
  const form = el("form", { class: "compose" }, input, el("div", { class: "row" }, send, stop));
  view.append(el("div", { class: "toolbar" }, el("h1", {}, "Playground"), el("span", { class: "grow" }), select, clear), log, form);
  let ctrl = null;

  async function fillModels() {
    const names = new Set(store.models.filter((m) => !m.unlisted).map((m) => m.id));
    try {
      const resp = await apiFetch("/v1/models");
      if (resp.ok) for (const m of (await resp.json()).data || []) names.add(m.id);
    } catch { /* fall back to the event list */ }
    const current = select.value || chat.model;
    select.replaceChildren(...[...names].sort().map((n) => el("option", { value: n, selected: n === current }, n)));
    if (!select.value && select.options.length) select.value = select.options[0].value;
  }
  select.addEventListener("change", () => { chat.model = select.value; });

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
    const model = select.value;
    chat.model = model;
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
          model, stream: true,
          messages: chat.messages.map(({ role, content }) => ({ role, content })),
        }),
      });
      if (!resp.ok) throw new Error(`${resp.status}: ${(await resp.text()).slice(0, 300)}`);
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

  fillModels();
  const off = store.subscribe((kind) => { if (kind === "modelStatus" && !select.options.length) fillModels(); });
  return () => { off(); ctrl?.abort(); };
}
