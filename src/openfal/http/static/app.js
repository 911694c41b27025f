// The playground: key, endpoint picker, generated form, a followed run, history.

import { ApiError, call, detailText, events, getKey, json, saveKey } from "./api.js";
import { $, h } from "./dom.js";
import { FieldError, buildForm } from "./form.js";
import { logLine, mediaOf, prettyJson, renderGallery, renderMeta } from "./result.js";

const ENDPOINT_STORAGE = "openfal.playground.endpoint";
const THEME_STORAGE = "openfal.playground.theme";
const KIND_GROUPS = { image: "Images", video: "Video", json: "Utilities" };

const ui = {
  keyForm: $("#key-form"),
  key: $("#api-key"),
  keyState: $("#key-state"),
  banner: $("#banner"),
  endpoint: $("#endpoint"),
  endpointInfo: $("#endpoint-info"),
  form: $("#input-form"),
  fields: $("#fields"),
  advanced: $("#advanced"),
  advancedFields: $("#advanced-fields"),
  run: $("#run"),
  requestJson: $("#request-json"),
  requestUrl: $("#request-url"),
  pill: $("#status-pill"),
  cancel: $("#cancel"),
  empty: $("#output-empty"),
  runView: $("#run-view"),
  requestLine: $("#request-line"),
  progressWrap: $("#progress-wrap"),
  progress: $("#progress"),
  progressText: $("#progress-text"),
  error: $("#error"),
  preview: $("#preview"),
  previewImg: $("#preview-img"),
  gallery: $("#gallery"),
  meta: $("#meta"),
  logsBox: $("#logs-box"),
  logs: $("#logs"),
  logCount: $("#log-count"),
  rawBox: $("#raw-box"),
  raw: $("#raw-json"),
  history: $("#history"),
  historyEmpty: $("#history-empty"),
};

const state = { endpoints: [], endpoint: null, form: null, run: null, history: [], me: null, listedScope: "null" };

// ---- banner, key, theme ----------------------------------------------------------------

/** Text with `backticks` shown as code. */
function rich(text) {
  return text.split(/(`[^`]+`)/).map((part) => (/^`[^`]+`$/.test(part) ? h("code", {}, part.slice(1, -1)) : part));
}

function showBanner(message, { kind = "warn", action = null } = {}) {
  const close = h("button", { type: "button", class: "ghost small icon", "aria-label": "Dismiss" }, "×");
  close.addEventListener("click", hideBanner);
  ui.banner.replaceChildren(h("div", { class: "banner-text" }, rich(message)), ...(action ? [action] : []), close);
  ui.banner.dataset.kind = kind;
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
  ui.keyForm.classList.remove("attention");
}

function needKey(body) {
  const refused = getKey() !== "";
  const text = refused
    ? `The API key was refused${detailText(body) ? `: ${detailText(body)}` : ""}. Enter a valid key above.`
    : "This server needs an API key. Enter one above: `openfal keys create --name NAME` makes one, and `openfal serve --demo` prints a demo key.";
  showBanner(text, { kind: "key" });
  ui.keyForm.classList.add("attention");
  ui.key.setAttribute("aria-invalid", "true");
  ui.key.focus();
}

function renderKeyState() {
  let text = getKey() ? "Saved in this browser" : "No key";
  const balance = state.me?.balance;
  if (getKey() && typeof balance === "number") text += ` · $${balance.toFixed(2)} credit`;
  ui.keyState.textContent = text;
  ui.keyState.dataset.saved = getKey() ? "yes" : "no";
}

/** The key's own view (credit, endpoint scope) from /api/me; null without a usable key. */
async function loadMe() {
  state.me = null;
  if (getKey()) {
    try {
      state.me = (await json("GET", "/api/me")).key;
    } catch {
      state.me = null; // a refused key is reported by the calls that need it
    }
  }
  renderKeyState();
}

/** fnmatch's `*` and `?`, as the server matches a key's endpoint patterns. */
function globMatches(pattern, text) {
  const source = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${source}$`).test(text);
}

function initKey() {
  ui.key.value = getKey();
  renderKeyState();
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey(ui.key.value);
    ui.key.removeAttribute("aria-invalid");
    renderKeyState();
    hideBanner();
    loadMe().then(() => {
      // a key with another endpoint scope sees another list (the form is kept otherwise)
      if (JSON.stringify(state.me?.endpoints ?? null) !== state.listedScope) loadEndpoints();
    });
    loadHistory();
  });
  $("#key-forget").addEventListener("click", () => {
    saveKey("");
    ui.key.value = "";
    state.me = null;
    renderKeyState();
    state.history = [];
    renderHistory();
  });
  const reveal = $("#key-reveal");
  reveal.addEventListener("click", () => {
    const show = ui.key.type === "password";
    ui.key.type = show ? "text" : "password";
    reveal.setAttribute("aria-pressed", String(show));
    reveal.setAttribute("aria-label", show ? "Hide key" : "Show key");
  });
}

function initTheme() {
  const button = $("#theme-toggle");
  const order = ["auto", "light", "dark"];
  const apply = (theme) => {
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    button.setAttribute("aria-label", `Colour theme: ${theme === "auto" ? "automatic" : theme}`);
    button.title = `Colour theme: ${theme === "auto" ? "automatic" : theme}`;
  };
  let theme = localStorage.getItem(THEME_STORAGE) || "auto";
  apply(theme);
  button.addEventListener("click", () => {
    theme = order[(order.indexOf(theme) + 1) % order.length];
    localStorage.setItem(THEME_STORAGE, theme);
    apply(theme);
  });
}

// ---- endpoints and the form ------------------------------------------------------------

async function loadEndpoints() {
  let list;
  try {
    list = await json("GET", "/api/endpoints");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) needKey(err.body);
    else showBanner(`Could not load the endpoint list: ${err.message}`, { kind: "error" });
    ui.endpoint.replaceChildren(h("option", { value: "" }, "(no endpoints)"));
    return;
  }
  const scope = state.me?.endpoints ?? null;
  state.listedScope = JSON.stringify(scope);
  if (scope) list = list.filter((e) => scope.some((pattern) => globMatches(pattern, e.endpoint_id)));
  state.endpoints = list;
  const groups = new Map();
  for (const e of list) {
    const group = KIND_GROUPS[e.kind] || e.kind || "Other";
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(e);
  }
  ui.endpoint.replaceChildren(
    ...[...groups].map(([label, items]) =>
      h("optgroup", { label }, items.map((e) => h("option", { value: e.endpoint_id }, `${e.title} — ${e.endpoint_id}`))),
    ),
  );
  const wanted = decodeURIComponent(location.hash.replace(/^#\/?/, "")) || localStorage.getItem(ENDPOINT_STORAGE);
  const initial = list.find((e) => e.endpoint_id === wanted) || list[0];
  if (initial) selectEndpoint(initial.endpoint_id);
}

function selectEndpoint(id) {
  const endpoint = state.endpoints.find((e) => e.endpoint_id === id);
  if (!endpoint) return;
  state.endpoint = endpoint;
  ui.endpoint.value = id;
  localStorage.setItem(ENDPOINT_STORAGE, id);
  history.replaceState(null, "", `#${id}`);
  ui.endpointInfo.replaceChildren(
    h("span", { class: `badge kind-${endpoint.kind}` }, endpoint.kind),
    h("span", { class: "badge" }, endpoint.backend),
    h("code", {}, endpoint.endpoint_id),
    h("a", { href: `/openapi/queue/openapi.json?endpoint_id=${encodeURIComponent(id)}`, target: "_blank", rel: "noopener" }, "OpenAPI"),
  );
  state.form = buildForm(endpoint.input_schema, ui.fields, ui.advancedFields);
  ui.advanced.hidden = !state.form.hasAdvanced;
  ui.advanced.open = false;
  updatePreview();
}

function updatePreview() {
  if (!state.endpoint) return;
  ui.requestUrl.textContent = `${location.origin}/${state.endpoint.endpoint_id}`;
  try {
    ui.requestJson.textContent = prettyJson(state.form.collect());
  } catch (err) {
    ui.requestJson.textContent = `// ${err.message}`;
  }
}

// ---- a run -----------------------------------------------------------------------------

const STATUS_TEXT = { IN_QUEUE: "Queued", IN_PROGRESS: "Running", COMPLETED: "Completed" };

function setPill(text, tone) {
  ui.pill.textContent = text;
  ui.pill.dataset.tone = tone;
  ui.pill.hidden = false;
}

function startView(run) {
  ui.empty.hidden = true;
  ui.runView.hidden = false;
  ui.gallery.replaceChildren();
  ui.gallery.classList.remove("single");
  ui.meta.hidden = true;
  ui.error.hidden = true;
  ui.error.replaceChildren();
  ui.preview.hidden = true;
  ui.previewImg.removeAttribute("src");
  ui.logs.replaceChildren();
  ui.logCount.textContent = "";
  ui.logsBox.hidden = true;
  ui.rawBox.hidden = true;
  ui.raw.textContent = "";
  ui.progressWrap.hidden = true;
  ui.cancel.hidden = true;
  ui.cancel.disabled = false;
  ui.pill.hidden = true;
  renderRequestLine(run);
  markHistory();
}

function renderRequestLine(run) {
  const parts = [h("code", { class: "endpoint-id" }, run.endpointId)];
  if (run.requestId) parts.push(h("code", { class: "request-id", title: run.requestId }, run.requestId));
  if (run.fromHistory) parts.push(h("span", { class: "tag" }, "from history"));
  run.clock = h("span", { class: "clock" });
  parts.push(run.clock);
  ui.requestLine.replaceChildren(...parts);
  tick(run);
}

function tick(run) {
  if (!run.clock || !run.submittedAt) return;
  const end = run.finishedAt ?? performance.now();
  run.clock.textContent = `${((end - run.submittedAt) / 1000).toFixed(1)} s`;
}

function setProgress(run, status, progress) {
  ui.progressWrap.hidden = false;
  const bar = ui.progress;
  delete bar.dataset.outcome;
  if (progress && progress.total) {
    const pct = Math.max(0, Math.min(100, Math.round((progress.step / progress.total) * 100)));
    bar.classList.remove("indeterminate");
    bar.style.setProperty("--pct", `${pct}%`);
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", `step ${progress.step} of ${progress.total}`);
    ui.progressText.textContent = `step ${progress.step} / ${progress.total}`;
  } else if (status === "COMPLETED") {
    bar.classList.remove("indeterminate");
    bar.style.setProperty("--pct", "100%");
    bar.setAttribute("aria-valuenow", "100");
    bar.removeAttribute("aria-valuetext");
    ui.progressText.textContent = "done";
  } else {
    bar.classList.add("indeterminate");
    bar.removeAttribute("aria-valuenow");
    bar.setAttribute("aria-valuetext", status === "IN_QUEUE" ? "waiting in the queue" : "running");
    ui.progressText.textContent = status === "IN_QUEUE" ? "waiting" : "running";
  }
}

/** A request that ended without its output (cancelled, failed, its input refused at run
 * time): the bar stays at the last step it reached, in the outcome's colour, never full. */
function stopProgress(outcome, progress) {
  ui.progressWrap.hidden = false;
  const bar = ui.progress;
  const reached = progress && progress.total ? progress : null;
  const pct = reached ? Math.max(0, Math.min(100, Math.round((reached.step / reached.total) * 100))) : 0;
  bar.classList.remove("indeterminate");
  bar.dataset.outcome = outcome;
  bar.style.setProperty("--pct", `${pct}%`);
  bar.setAttribute("aria-valuenow", String(pct));
  const where = reached ? ` at step ${reached.step} / ${reached.total}` : "";
  bar.setAttribute("aria-valuetext", `${outcome}${where}`);
  ui.progressText.textContent = `${outcome}${where}`;
}

function appendLogs(entries) {
  if (!entries || !entries.length) return;
  const atBottom = ui.logs.scrollHeight - ui.logs.scrollTop - ui.logs.clientHeight < 24;
  ui.logs.append(...entries.map(logLine));
  ui.logsBox.hidden = false;
  if (!ui.logsBox.dataset.touched) ui.logsBox.open = true;
  ui.logCount.textContent = String(ui.logs.children.length);
  if (atBottom) ui.logs.scrollTop = ui.logs.scrollHeight;
}

/** One status body (from the stream or a poll) applied to the view. */
function applyStatus(run, body, { fullLogs = false } = {}) {
  if (run !== state.run) return;
  run.status = body.status;
  if (body.status === "IN_QUEUE") {
    const pos = body.queue_position ?? 0;
    setPill(pos === 0 ? "Queued · next" : `Queued · ${pos} ahead`, "queued");
  } else if (body.status === "IN_PROGRESS") {
    if (run.startedAt == null) run.startedAt = performance.now();
    setPill(run.cancelling ? "Cancelling…" : "Running", "running");
  }
  if (body.status !== "COMPLETED") {
    ui.cancel.hidden = false;
    if (run.cancelling) ui.pill.textContent = "Cancelling…";
  }
  setProgress(run, body.status, body.progress);
  if (Array.isArray(body.logs)) {
    const fresh = fullLogs ? body.logs.slice(run.logCount) : body.logs;
    run.logCount = fullLogs ? body.logs.length : run.logCount + body.logs.length;
    appendLogs(fresh);
  }
  if (body.preview_url && body.status === "IN_PROGRESS" && body.preview_url !== run.previewUrl) {
    run.previewUrl = body.preview_url;
    ui.previewImg.src = body.preview_url;
    ui.preview.hidden = false;
  }
}

async function follow(run) {
  const statusUrl = run.statusUrl;
  try {
    for await (const body of events(`${statusUrl}/stream?logs=1`, run.abort.signal)) {
      applyStatus(run, body);
      if (body.status === "COMPLETED") return finish(run, body);
    }
  } catch (err) {
    if (run.abort.signal.aborted) return;
    if (err instanceof ApiError && err.status === 401) return failRun(run, "Unauthorized", err.body, () => needKey(err.body));
  }
  // the stream ended early or broke: poll instead
  return poll(run);
}

async function poll(run) {
  while (run === state.run && !run.abort.signal.aborted) {
    let answer;
    try {
      answer = await call("GET", `${run.statusUrl}?logs=1`);
    } catch (err) {
      await sleep(1000);
      continue;
    }
    if (answer.status === 401) return failRun(run, "Unauthorized", answer.body, () => needKey(answer.body));
    if (answer.status === 404) return failRun(run, "Not found", answer.body);
    if (answer.body && typeof answer.body === "object") applyStatus(run, answer.body, { fullLogs: true });
    if (answer.status === 200) return finish(run, answer.body);
    await sleep(400);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const ERROR_TITLES = {
  client_cancelled: "Cancelled",
  request_timeout: "Timed out before it started",
  runner_disconnected: "The worker was lost",
  runner_scheduling_failure: "No runner could take it",
  bad_request: "The input was rejected",
};

async function finish(run, status) {
  if (run !== state.run) return;
  run.finishedAt = performance.now();
  clearInterval(run.timer);
  tick(run);
  ui.cancel.hidden = true;
  ui.preview.hidden = true;
  const cancelled = status.error_type === "client_cancelled";
  if (status.error) {
    stopProgress(cancelled ? "cancelled" : "failed", status.progress);
    setPill(cancelled ? "Cancelled" : "Failed", cancelled ? "neutral" : "error");
    showError(ERROR_TITLES[status.error_type] || "The request failed", status.error, status.error_type, cancelled ? "neutral" : "error");
  } else {
    setProgress(run, "COMPLETED", status.progress && status.progress.total ? { step: status.progress.total, total: status.progress.total } : null);
    setPill("Completed", "ok");
  }
  if (!cancelled) {
    try {
      const answer = await call("GET", run.responseUrl);
      if (run !== state.run) return;
      run.result = answer.body;
      showResult(run, answer, status);
    } catch (err) {
      if (run === state.run) showError("Could not fetch the result", err.message);
    }
  }
  loadHistory();
}

function showResult(run, answer, status) {
  const result = answer.body;
  ui.raw.textContent = prettyJson(result);
  ui.rawBox.hidden = false;
  if (!answer.ok) {
    if (!status.error) {
      setPill("Failed", "error");
      showError(`The result came back with HTTP ${answer.status}`, detailText(result), result && result.error_type);
    }
    ui.rawBox.open = true;
    return;
  }
  const times = {};
  if (run.submittedAt != null && !run.fromHistory) {
    times.total = (run.finishedAt - run.submittedAt) / 1000;
    if (run.startedAt != null) times.queued = (run.startedAt - run.submittedAt) / 1000;
  }
  const count = renderGallery(ui.gallery, result, { requestId: run.requestId, prompt: (run.input && run.input.prompt) || result.prompt || "" });
  renderMeta(ui.meta, result, status, times);
  // results without media (utility endpoints) are their JSON: show it open
  ui.rawBox.open = count === 0 || mediaOf(result).length === 0;
}

function showError(title, message, errorType = null, tone = "error", list = null) {
  ui.runView.hidden = false;
  ui.empty.hidden = true;
  ui.error.dataset.tone = tone;
  const children = [h("strong", { class: "error-title" }, title)];
  if (message) children.push(h("p", { class: "error-message" }, rich(message)));
  if (list && list.length) children.push(h("ul", { class: "error-list" }, list));
  if (errorType) children.push(h("code", { class: "error-type" }, errorType));
  ui.error.replaceChildren(...children);
  ui.error.hidden = false;
}

function failRun(run, pill, body, then) {
  if (run !== state.run) return;
  clearInterval(run.timer);
  ui.cancel.hidden = true;
  ui.progressWrap.hidden = true;
  setPill(pill, "error");
  showError(pill, detailText(body));
  then?.();
}

function stopCurrent() {
  const run = state.run;
  if (!run) return;
  run.abort.abort();
  clearInterval(run.timer);
}

function newRun(fields) {
  stopCurrent();
  const run = { abort: new AbortController(), logCount: 0, ...fields };
  state.run = run;
  return run;
}

async function submit() {
  if (!state.endpoint || !state.form) return;
  hideBanner();
  state.form.clearErrors();
  let input;
  try {
    input = state.form.collect();
  } catch (err) {
    if (err instanceof FieldError && state.form.showFieldError(err)) return;
    throw err;
  }
  const endpointId = state.endpoint.endpoint_id;
  const run = newRun({ endpointId, input, submittedAt: performance.now() });
  startView(run);
  setPill("Submitting…", "queued");
  ui.run.disabled = true;
  run.timer = setInterval(() => tick(run), 100);
  let answer;
  try {
    answer = await call("POST", `/${endpointId}`, input);
  } catch (err) {
    ui.run.disabled = false;
    return failRun(run, "Server unreachable", err.message);
  } finally {
    ui.run.disabled = false;
  }
  if (run !== state.run) return;
  if (!answer.ok) return submitFailed(run, answer);
  const body = answer.body;
  Object.assign(run, { requestId: body.request_id, statusUrl: body.status_url, responseUrl: body.response_url, cancelUrl: body.cancel_url });
  renderRequestLine(run);
  applyStatus(run, body);
  loadHistory();
  await follow(run);
}

function submitFailed(run, answer) {
  clearInterval(run.timer);
  run.finishedAt = performance.now();
  tick(run);
  ui.progressWrap.hidden = true;
  const body = answer.body;
  if (answer.status === 401) {
    setPill("Unauthorized", "error");
    showError("Unauthorized", detailText(body) || "This server needs an API key.", null);
    needKey(body);
    return;
  }
  if (answer.status === 422 && body && Array.isArray(body.detail)) {
    setPill("Invalid input", "error");
    const unplaced = state.form.showErrors(body.detail);
    const items = body.detail.map((d) => {
      const loc = (d.loc || []).filter((p, i) => !(i === 0 && p === "body")).join(".");
      return h("li", {}, [loc ? h("code", {}, loc) : null, loc ? " " : null, d.msg]);
    });
    const n = body.detail.length;
    showError(
      "The input was rejected",
      `${n} problem${n === 1 ? "" : "s"}${unplaced.length ? "" : ", marked in the form"}. Nothing was queued.`,
      null,
      "error",
      items,
    );
    ui.raw.textContent = prettyJson(body);
    ui.rawBox.hidden = false;
    return;
  }
  const titles = { 404: "Unknown endpoint", 413: "The input is too large", 429: "The queue is full" };
  setPill(`HTTP ${answer.status}`, "error");
  showError(titles[answer.status] || `The server answered HTTP ${answer.status}`, detailText(body), body && body.error_type);
}

async function cancel() {
  const run = state.run;
  if (!run || !run.cancelUrl) return;
  ui.cancel.disabled = true;
  run.cancelling = true;
  setPill("Cancelling…", "running");
  try {
    const answer = await call("PUT", run.cancelUrl);
    if (answer.status === 401) needKey(answer.body);
    else if (!answer.ok && answer.status !== 400) showError("Cancel failed", detailText(answer.body) || `HTTP ${answer.status}`);
  } catch (err) {
    showError("Cancel failed", err.message);
    ui.cancel.disabled = false;
  }
}

// ---- history ---------------------------------------------------------------------------

function historyLabel(item) {
  if (item.status !== "COMPLETED") return [STATUS_TEXT[item.status] || item.status, item.status === "IN_QUEUE" ? "queued" : "running"];
  if (!item.error) return ["Completed", "ok"];
  return /cancel/i.test(item.error) ? ["Cancelled", "neutral"] : ["Failed", "error"];
}

function ago(epochSeconds) {
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(epochSeconds * 1000).toLocaleDateString();
}

let historyLoading = null;

/** The key's requests; asked even without a key, as a server may run with auth off. */
async function loadHistory() {
  if (historyLoading) return historyLoading;
  historyLoading = (async () => {
    try {
      const answer = await call("GET", "/api/requests?limit=30");
      if (answer.ok) state.history = answer.body.items || [];
      else if (answer.status === 401) state.history = [];
    } catch {
      /* keep what we have */
    } finally {
      historyLoading = null;
    }
    renderHistory();
  })();
  return historyLoading;
}

function renderHistory() {
  ui.historyEmpty.hidden = state.history.length > 0;
  ui.historyEmpty.textContent = getKey() ? "No requests yet with this key." : "Requests made with your key appear here.";
  ui.history.replaceChildren(
    ...state.history.map((item) => {
      const [label, tone] = historyLabel(item);
      const when = new Date(item.created_at * 1000);
      const button = h("button", { type: "button", class: "history-item", "data-request-id": item.request_id }, [
        h("span", { class: "pill small", "data-tone": tone }, label),
        h("span", { class: "history-endpoint" }, item.endpoint_id),
        h("time", { datetime: when.toISOString(), title: when.toLocaleString() }, ago(item.created_at)),
        h("code", { class: "history-id" }, item.request_id.slice(0, 8)),
      ]);
      button.setAttribute("aria-label", `${item.endpoint_id}, ${label}, ${ago(item.created_at)}: show this request`);
      button.addEventListener("click", () => openFromHistory(item));
      return h("li", {}, button);
    }),
  );
  markHistory();
}

function markHistory() {
  const current = state.run && state.run.requestId;
  for (const button of ui.history.querySelectorAll(".history-item")) {
    if (button.dataset.requestId === current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

async function openFromHistory(item) {
  const run = newRun({
    endpointId: item.endpoint_id,
    requestId: item.request_id,
    statusUrl: item.status_url,
    responseUrl: item.response_url,
    cancelUrl: item.cancel_url,
    fromHistory: true,
  });
  startView(run);
  setPill("Loading…", "queued");
  let answer;
  try {
    answer = await call("GET", `${item.status_url}?logs=1`);
  } catch (err) {
    return failRun(run, "Server unreachable", err.message);
  }
  if (run !== state.run) return;
  if (answer.status === 401) return failRun(run, "Unauthorized", answer.body, () => needKey(answer.body));
  if (!answer.body || typeof answer.body !== "object" || !answer.body.status) return failRun(run, `HTTP ${answer.status}`, answer.body);
  applyStatus(run, answer.body, { fullLogs: true });
  if (answer.status === 200) return finish(run, answer.body);
  run.submittedAt = performance.now() - Math.max(0, Date.now() - item.created_at * 1000);
  run.timer = setInterval(() => tick(run), 100);
  return follow(run);
}

// ---- wiring ----------------------------------------------------------------------------

function initCopyButtons() {
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      setTimeout(() => (button.textContent = "Copy"), 1200);
    });
  }
}

function init() {
  if (/Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent)) ui.run.querySelector("kbd").textContent = "⌘ ⏎";
  initTheme();
  initKey();
  initCopyButtons();
  ui.endpoint.addEventListener("change", () => selectEndpoint(ui.endpoint.value));
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  ui.form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });
  ui.form.addEventListener("input", updatePreview);
  ui.form.addEventListener("change", updatePreview);
  $("#reset").addEventListener("click", () => {
    state.form?.reset();
    updatePreview();
  });
  ui.cancel.addEventListener("click", cancel);
  ui.logsBox.querySelector("summary").addEventListener("click", () => (ui.logsBox.dataset.touched = "1"));
  $("#history-refresh").addEventListener("click", loadHistory);
  window.addEventListener("hashchange", () => {
    const id = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    if (id && id !== state.endpoint?.endpoint_id) selectEndpoint(id);
  });
  loadMe().then(loadEndpoints);
  loadHistory();
}

init();
