// Device memory on the Models page: a bar per device with a segment per model (loaded
// solid, asleep hatched), declared vs measured bytes, a badge when a model uses more than
// it declared, host memory held by sleeping models, and why the last eviction happened.
// Fed by the `memory` event (the same view as /running's `memory`).
import { el } from "./api.js";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** Bytes as a short binary size: 1536 -> "1.5 KiB", 12 GiB -> "12 GiB". */
export function formatBytes(n) {
  if (n == null) return "?";
  let value = n, unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit++; }
  const text = unit === 0 || Number.isInteger(value) ? String(value) : value.toFixed(1).replace(/\.0$/, "");
  return `${text} ${UNITS[unit]}`;
}

/** "declared 10 GiB · measured 20 GiB" for a model's entry on one device. */
export function usageText(m) {
  const parts = [`${m.declaredFrom === "estimate" ? "estimated" : "declared"} ${formatBytes(m.declaredBytes)}`];
  parts.push(m.measuredBytes == null ? "not measured" : `measured ${formatBytes(m.measuredBytes)}`);
  if (m.state === "asleep") parts.push("asleep: device memory free");
  return parts.join(" · ");
}

/** One line on an eviction record: what was placed, what made room, and the bytes. */
export function evictionText(e) {
  const made = [];
  if (e.stopped?.length) made.push(`stopped ${e.stopped.join(", ")}`);
  if (e.slept?.length) made.push(`put ${e.slept.join(", ")} to sleep`);
  const room = (e.devices || []).map((d) =>
    `${e.target} needed ${formatBytes(d.neededBytes)} on ${d.name}, ${formatBytes(d.freeBytes)} free`);
  const why = e.by === "memory" ? room.join("; ") : `${e.target} may not run beside them (groups/matrix)`;
  return `${why}: ${made.join(" and ") || "nothing"}`;
}

const agoText = (s) => (s < 60 ? `${Math.round(s)} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`);

function bar(d) {
  const asleepBytes = d.models.filter((m) => m.state === "asleep").reduce((a, m) => a + m.countedBytes, 0);
  // Asleep models hold none of the device, but are drawn after the loaded ones so the bar
  // shows what waking them would need; the scale grows when that exceeds the capacity.
  const scale = Math.max(d.capacityBytes, d.usedBytes + asleepBytes, 1);
  const order = [...d.models.filter((m) => m.state !== "asleep"), ...d.models.filter((m) => m.state === "asleep")];
  return el("div", { class: "membar", role: "img", "aria-label": `${d.name}: ${formatBytes(d.usedBytes)} of ${formatBytes(d.capacityBytes)} used` },
    order.map((m) => el("span", {
      class: `seg ${m.state}${m.overDeclared ? " over" : ""}`,
      "data-seg": m.model,
      "data-state": m.state,
      style: `width: ${(100 * m.countedBytes) / scale}%`,
      title: `${m.model} (${m.state}): ${usageText(m)}`,
    }, m.model)));
}

function deviceCard(d) {
  return el("div", { class: "card device", "data-device": d.name },
    el("div", { class: "model-head" },
      el("span", { class: "model-name" }, d.name),
      el("span", { class: "muted small", "data-device-used": d.name },
        `${formatBytes(d.usedBytes)} of ${formatBytes(d.capacityBytes)} used · ${formatBytes(d.freeBytes)} free`)),
    bar(d),
    d.models.length
      ? el("ul", { class: "mem-models" }, d.models.map((m) =>
        el("li", { "data-mem-model": m.model, "data-state": m.state },
          el("span", { class: `dot ${m.state}`, title: m.state }),
          el("span", { class: "mono" }, m.model),
          el("span", { class: "muted small" }, ` ${m.state} · ${usageText(m)}`),
          m.overDeclared
            ? el("span", { class: "tag warn", "data-over": m.model, title: "placement counts the measured value; raise resources.memory" },
              `uses ${formatBytes(m.measuredBytes)}, more than declared`)
            : null)))
      : el("p", { class: "muted small" }, "no model on this device"));
}

/** Render the memory view into `section` (hidden when placement by memory is off). */
export function renderDevices(section, memory) {
  const devices = memory?.devices || [];
  section.hidden = devices.length === 0;
  if (!devices.length) { section.replaceChildren(); return; }
  const host = memory.hostMemory;
  const last = memory.evictions?.[memory.evictions.length - 1];
  section.replaceChildren(
    el("h2", {}, "Devices"),
    ...devices.map(deviceCard),
    host ? el("p", { class: "muted small", id: "host-memory" },
      `Host memory${host.detected ? " (detected)" : ""}: ${formatBytes(host.asleepBytes)} of ${formatBytes(host.capacityBytes)} held by sleeping models`
      + (host.asleep?.length ? ` (${host.asleep.join(", ")})` : "")) : null,
    el("p", { class: "small", id: "last-eviction" },
      el("strong", {}, "Last eviction: "),
      last ? `${evictionText(last)} (${agoText(last.ago_s ?? 0)})` : "none yet"),
  );
}
