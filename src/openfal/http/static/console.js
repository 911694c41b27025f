// The operator's console: the business at a glance, read from the Platform API
// (/v1/models/analytics, /v1/models/usage, /v1/keys) and the admin API (queues,
// workers, webhooks, credit). Charts are plain SVG; nothing is fetched from elsewhere.

import { ApiError, getKey, json, saveKey } from "./api.js";
import { $, h } from "./dom.js";

const DAYS = 14;
const COLOURS = ["#4f5bd5", "#17a673", "#e8833a", "#c2409a", "#2e9fd1", "#8a6ad6", "#c9a227", "#d14b4b"];
const SVG = "http://www.w3.org/2000/svg";

function banner(message) {
  const el = $("#banner");
  el.textContent = message || "";
  el.hidden = !message;
}

function money(value) {
  return `$${Number(value || 0).toFixed(2)}`;
}

function cell(value, numeric = false) {
  return h("td", { class: numeric ? "num" : null }, value == null ? "–" : String(value));
}

function fill(table, rows, empty) {
  const body = $(`#${table} tbody`);
  body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { class: "none", colspan: 8 }, empty))]));
}

function day(bucket) {
  return bucket.slice(5, 10);
}

/** Stacked bars: one bar per bucket, one coloured segment per series. */
function stacked(target, buckets, series, format) {
  const names = [...new Set(series.flatMap((s) => Object.keys(s)))].sort();
  const totals = series.map((s) => Object.values(s).reduce((a, b) => a + b, 0));
  const top = Math.max(1e-9, ...totals);
  const width = 100 / Math.max(1, buckets.length);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 60");
  svg.setAttribute("preserveAspectRatio", "none");
  series.forEach((values, i) => {
    let y = 56;
    names.forEach((name, n) => {
      const v = values[name] || 0;
      if (!v) return;
      const height = (v / top) * 52;
      y -= height;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(i * width + width * 0.15));
      rect.setAttribute("y", String(y));
      rect.setAttribute("width", String(width * 0.7));
      rect.setAttribute("height", String(height));
      rect.setAttribute("fill", COLOURS[n % COLOURS.length]);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${day(buckets[i])} ${name}: ${format(v)}`;
      rect.append(title);
      svg.append(rect);
    });
  });
  const legend = h("div", { class: "legend" }, names.map((name, n) =>
    h("span", {}, [h("span", { class: "swatch", style: `background:${COLOURS[n % COLOURS.length]}` }), name])));
  const axis = h("div", { class: "legend" }, buckets.length ? `${day(buckets[0])} … ${day(buckets[buckets.length - 1])}, highest ${format(top)}` : "");
  target.replaceChildren(legend, svg, axis);
}

function range() {
  const start = new Date(Date.now() - (DAYS - 1) * 86400e3).toISOString().slice(0, 10);
  const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  return new URLSearchParams({ start, timeframe: "day", timezone, limit: "100" });
}

async function analytics() {
  const params = range();
  params.append("expand", "summary");
  const answer = await json("GET", `/v1/models/analytics?${params}`);
  const buckets = answer.time_series.map((b) => b.bucket);
  stacked($("#requests-chart"), buckets, answer.time_series.map((b) => Object.fromEntries(b.results.map((r) => [r.endpoint_id, r.request_count]))), (v) => String(Math.round(v)));
  const sum = (field) => answer.summary.reduce((total, r) => total + (r[field] || 0), 0);
  $("#total-requests").textContent = String(sum("request_count"));
  $("#total-success").textContent = String(sum("success_count"));
  $("#total-user-errors").textContent = String(sum("user_error_count"));
  $("#total-errors").textContent = String(sum("error_count"));
  fill("requests-table", answer.summary.map((r) => h("tr", { "data-endpoint": r.endpoint_id }, [
    cell(r.endpoint_id), cell(r.request_count, true), cell(r.success_count, true), cell(r.user_error_count, true),
    cell(r.error_count, true), cell(r.p50_prepare_duration?.toFixed(3), true), cell(r.p90_duration?.toFixed(3), true),
  ])), "No requests in this period");
  return answer.summary;
}

async function usage() {
  const params = range();
  params.append("expand", "time_series");
  params.append("expand", "summary");
  const answer = await json("GET", `/v1/models/usage?${params}`);
  const buckets = answer.time_series.map((b) => b.bucket);
  const perKey = answer.time_series.map((b) => {
    const out = {};
    for (const item of b.results) out[item.key_id || "no key"] = (out[item.key_id || "no key"] || 0) + item.cost;
    return out;
  });
  stacked($("#revenue-chart"), buckets, perKey, money);
  $("#total-revenue").textContent = money(answer.summary.reduce((total, i) => total + i.cost, 0));
  fill("revenue-table", answer.summary.map((i) => h("tr", {}, [
    cell(i.key_id || "no key"), cell(i.endpoint_id), cell(`${i.quantity} ${i.unit}`, true), cell(money(i.unit_price)), cell(money(i.cost), true),
  ])), "Nothing billed in this period");
}

async function queues(summary) {
  const answer = await json("GET", "/api/admin/queues");
  const waits = Object.fromEntries(summary.map((r) => [r.endpoint_id, r.p50_prepare_duration]));
  // the worker pools of OPENFAL_POOLS; without any, each backend stands for one
  const pooled = answer.pools.length > 0;
  const rows = pooled ? answer.pools : answer.backends.map((b) => ({ ...b, pool: b.backend, oldest_wait_seconds: null }));
  $("#queues-title").textContent = pooled ? "Queues per worker pool" : "Queues per backend";
  fill("queues-table", rows.map((p) => {
    const wait = p.endpoints.map((e) => waits[e]).filter((w) => w != null);
    return h("tr", { "data-pool": p.pool }, [
      cell(p.pool), cell(p.queued, true), cell(p.running, true),
      cell(p.oldest_wait_seconds == null ? null : p.oldest_wait_seconds.toFixed(1), true),
      cell(p.workers, true), cell(p.slots, true), cell(p.busy, true),
      cell(wait.length ? Math.max(...wait).toFixed(3) : null, true),
      cell(p.endpoints.join(", ")),
    ]);
  }), "No pools");
}

function describeMemory(status) {
  const engines = status.engines || status.gpus || [];
  const memory = status.memory || engines.map((e) => e.memory).filter(Boolean)[0];
  if (!memory) return null;
  if (typeof memory === "object") return Object.entries(memory).map(([k, v]) => `${k} ${v}`).join(", ");
  return String(memory);
}

async function workers() {
  const list = await json("GET", "/api/admin/workers");
  const rows = [];
  for (const worker of list) {
    for (const [pool, info] of Object.entries(worker.backends || {})) {
      const status = info.status || {};
      const models = status.loaded_models || status.loaded || status.models || [];
      rows.push(h("tr", {}, [
        cell(`${worker.hostname}:${worker.pid}`), cell(worker.alive ? "yes" : "no"), cell(pool),
        cell(status.device || status.gpu || (status.gpus ? JSON.stringify(status.gpus) : null)),
        cell(Array.isArray(models) ? models.join(", ") || "none" : JSON.stringify(models)),
        cell(describeMemory(status)), cell(`${info.busy ?? 0}/${info.slots ?? 0}`, true),
      ]));
    }
  }
  fill("workers-table", rows, "No workers have reported");
}

async function webhooks() {
  const failed = await json("GET", "/api/admin/webhooks?state=failed&limit=20");
  fill("webhooks-table", failed.map((d) => h("tr", {}, [
    cell(d.id), cell(d.request_id), cell(d.url), cell(d.attempts, true), cell(d.last_status ?? d.last_error),
  ])), "No failing webhooks");
}

function limits(key) {
  const parts = [];
  if (key.max_concurrent) parts.push(`${key.max_concurrent} at once`);
  if (key.rpm) parts.push(`${key.rpm}/min`);
  if (key.max_queued) parts.push(`${key.max_queued} queued`);
  if (key.commercial_only) parts.push("commercial only");
  if (key.endpoints) parts.push(key.endpoints.join(" "));
  return parts.join(", ") || "none";
}

async function keys() {
  const answer = await json("GET", "/v1/keys?limit=1000");
  fill("keys-table", answer.keys.map((key) => {
    const topUp = h("button", { type: "button", class: "ghost", "data-action": "top-up" }, "Top up $10");
    topUp.addEventListener("click", () => act(() => json("POST", `/api/admin/keys/${key.key_id}/credit`, { amount: 10 })));
    const revoke = h("button", { type: "button", class: "ghost", "data-action": "revoke", disabled: !key.active }, "Revoke");
    revoke.addEventListener("click", () => act(() => json("DELETE", `/v1/keys/${key.key_id}`)));
    return h("tr", { "data-key": key.key_id }, [
      cell(key.alias), cell(key.key_id), cell(key.scope), cell(key.balance == null ? "metered" : money(key.balance), true),
      cell(limits(key)), cell(key.active ? "yes" : "revoked"), h("td", { class: "row-actions" }, [topUp, revoke]),
    ]);
  }), "No keys");
}

async function act(change) {
  try {
    await change();
    await keys();
  } catch (error) {
    banner(error instanceof ApiError ? error.message : String(error));
  }
}

async function refresh() {
  if (!getKey()) {
    banner("Enter an admin key to see the console.");
    return;
  }
  try {
    banner("");
    const summary = await analytics();
    await Promise.all([usage(), queues(summary), workers(), webhooks(), keys()]);
    document.body.dataset.loaded = "true";
  } catch (error) {
    const message = error instanceof ApiError && error.status === 403 ? "This key is not an admin key." : error.message || String(error);
    banner(message);
  }
}

$("#days").textContent = String(DAYS);
$("#api-key").value = getKey();
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveKey($("#api-key").value);
  $("#key-state").textContent = getKey() ? "Saved in this browser" : "";
  refresh();
});
$("#refresh").addEventListener("click", refresh);
$("#new-key").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { alias: form.get("alias"), commercial_only: form.get("commercial_only") === "on" };
  if (form.get("credit")) body.credit = Number(form.get("credit"));
  if (form.get("max_concurrent")) body.max_concurrent = Number(form.get("max_concurrent"));
  await act(async () => {
    const created = await json("POST", "/v1/keys", body);
    $("#new-secret-value").textContent = created.key;
    $("#new-secret").hidden = false;
    event.target.reset();
  });
});
refresh();
