// The queue API from the browser: the key in localStorage, JSON calls, and a
// fetch-based reader for the status stream (EventSource cannot send Authorization).

const KEY_STORAGE = "openfal.playground.key";

let apiKey = localStorage.getItem(KEY_STORAGE) || "";

export function getKey() {
  return apiKey;
}

export function saveKey(key) {
  apiKey = key.trim();
  if (apiKey) localStorage.setItem(KEY_STORAGE, apiKey);
  else localStorage.removeItem(KEY_STORAGE);
}

/** An answer that was not 2xx; `body` is the parsed JSON (or text) the server sent. */
export class ApiError extends Error {
  constructor(status, body) {
    super(detailText(body) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** The human part of an error body: fal's `detail` as a string, or the first entry of a list. */
export function detailText(body) {
  if (body == null) return "";
  if (typeof body === "string") return body;
  const detail = body.detail ?? body.error ?? body.message;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => (typeof d === "string" ? d : d.msg || JSON.stringify(d))).join("; ");
  }
  return detail ? JSON.stringify(detail) : "";
}

/**
 * URLs the server hands out carry its public base URL; when the page was reached on
 * another host name for the same server, call it on the page's own origin instead.
 */
export function local(url) {
  const parsed = new URL(url, location.href);
  if (parsed.origin === location.origin) return parsed.href;
  return location.origin + parsed.pathname + parsed.search;
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  if (apiKey) h.Authorization = `Key ${apiKey}`;
  return h;
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** {status, ok, body, headers} for any answer; throws only when the server is unreachable. */
export async function call(method, url, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(local(url), init);
  return { status: response.status, ok: response.ok, body: await parse(response), headers: response.headers };
}

/**
 * Uploads `file` through fal's storage API (a ticket, then a PUT of the bytes) and
 * returns its URL on this server: large inputs (LoRA files) travel once, by reference.
 */
export async function uploadFile(file) {
  const ticket = await json("POST", "/storage/upload/initiate", {
    content_type: file.type || "application/octet-stream",
    file_name: file.name,
  });
  const put = await fetch(local(ticket.upload_url), { method: "PUT", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
  if (!put.ok) throw new ApiError(put.status, await parse(put));
  return ticket.file_url;
}

/** The body of a 2xx answer, else an ApiError. */
export async function json(method, url, body) {
  const answer = await call(method, url, body);
  if (!answer.ok) throw new ApiError(answer.status, answer.body);
  return answer.body;
}

/**
 * Server-sent events from `url` as parsed JSON objects, until the server closes the
 * stream or `signal` aborts. Comments (keep-alives) are skipped.
 */
export async function* events(url, signal) {
  const response = await fetch(local(url), { headers: headers({ Accept: "text/event-stream" }), signal, cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, await parse(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
