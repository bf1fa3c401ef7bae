// Fetch with the API key, a one-at-a-time key prompt on 401, and streaming readers.
const KEY_STORAGE = "llamaswap.apiKey";

export function getKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: keep working without persistence */ }
}

let prompting = null; // the pending key prompt, shared by every caller that got a 401

/** Show the key dialog (once, however many requests failed); resolves when a key is saved. */
export function promptKey(refused = false) {
  if (prompting) return prompting;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  const error = document.getElementById("key-error");
  const form = document.getElementById("key-form");
  error.hidden = !refused;
  input.value = "";
  prompting = new Promise((resolve) => {
    const done = (ev) => {
      ev.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      setKey(key);
      form.removeEventListener("submit", done);
      dialog.close();
      prompting = null;
      window.dispatchEvent(new CustomEvent("llamaswap:key"));
      resolve(key);
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("cancel", (ev) => ev.preventDefault());
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return prompting;
}

function withKey(opts = {}) {
  const headers = new Headers(opts.headers || {});
  const key = getKey();
  if (key && !headers.has("Authorization")) headers.set("Authorization", `Bearer ${key}`);
  // "omit": the key travels only as Bearer, and a 401 comes back to us (not to the
  // browser's own Basic prompt, which the server's WWW-Authenticate would trigger).
  return { credentials: "omit", ...opts, headers };
}

/** fetch() that sends the stored key and, on 401, asks for a key and retries. */
export async function apiFetch(url, opts = {}) {
  for (;;) {
    const resp = await fetch(url, withKey(opts));
    if (resp.status !== 401) return resp;
    const hadKey = Boolean(getKey());
    if (hadKey) setKey("");
    await promptKey(hadKey);
  }
}

/** A model ID as a URL path (IDs may contain `/`: each segment is encoded). */
export function idPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

/** Read a streaming text body, calling onChunk(text) for each decoded piece. */
export async function readText(resp, onChunk, signal) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  const abort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", abort);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const text = decoder.decode(value, { stream: true });
      if (text) onChunk(text);
    }
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

/** Split an SSE text stream into frames: onFrame({event, data}) per frame. */
export function sseParser(onFrame) {
  let buf = "";
  return (text) => {
    buf += text.replace(/\r\n?/g, "\n");
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const raw = buf.slice(0, at);
      buf = buf.slice(at + 2);
      let event = "message";
      const data = [];
      for (const line of raw.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) onFrame({ event, data: data.join("\n") });
    }
  };
}

/**
 * Follow a long-lived stream, reconnecting after it ends or fails, until signal aborts.
 * onOpen() runs on each (re)connection, onText(chunk) for each piece, onState(live:boolean).
 */
export function follow(url, { onText, onOpen, onState, signal, retryMs = 1500 }) {
  (async () => {
    while (!signal.aborted) {
      try {
        const resp = await apiFetch(url, { signal, headers: { Accept: "text/event-stream, text/plain" } });
        if (!resp.ok) throw new Error(`${resp.status}`);
        onOpen?.();
        onState?.(true);
        await readText(resp, onText, signal);
      } catch (err) {
        if (signal.aborted) break;
      }
      onState?.(false);
      if (signal.aborted) break;
      await new Promise((r) => setTimeout(r, retryMs));
    }
  })();
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
