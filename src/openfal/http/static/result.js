// Rendering a request's result: the media gallery, its facts, logs and the raw JSON.

import { fromHtml, h } from "./dom.js";
import { formatBytes } from "./form.js";

const EXT = { "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "video/mp4": "mp4", "video/webm": "webm" };

const DOWNLOAD_ICON =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 4v11m0 0-4.5-4.5M12 15l4.5-4.5M5 19h14" fill="none" stroke="currentColor" stroke-width="1.9" stroke-linecap="round" stroke-linejoin="round"/></svg>';

function extension(file, fallback) {
  if (file.file_name && file.file_name.includes(".")) return file.file_name.split(".").pop();
  if (EXT[file.content_type]) return EXT[file.content_type];
  const m = /^data:([^;,]+)/.exec(file.url || "");
  if (m && EXT[m[1]]) return EXT[m[1]];
  const path = /\.([a-z0-9]{2,5})(?:\?|$)/i.exec(file.url || "");
  return path ? path[1] : fallback;
}

function typeLabel(file, fallback) {
  const type = file.content_type || (/^data:([^;,]+)/.exec(file.url || "") || [])[1];
  return type ? type.split("/").pop().toUpperCase() : fallback;
}

/** Media files in a result: fal's `images`, `image`, `video`, `videos`. */
export function mediaOf(result) {
  if (!result || typeof result !== "object") return [];
  const files = [];
  const add = (f, kind) => {
    if (f && typeof f === "object" && typeof f.url === "string") files.push({ ...f, kind });
  };
  if (Array.isArray(result.images)) result.images.forEach((f) => add(f, "image"));
  add(result.image, "image");
  add(result.video, "video");
  if (Array.isArray(result.videos)) result.videos.forEach((f) => add(f, "video"));
  return files;
}

export function renderGallery(container, result, { requestId = "", prompt = "" } = {}) {
  const files = mediaOf(result);
  container.replaceChildren();
  container.classList.toggle("single", files.length === 1);
  files.forEach((file, i) => {
    const n = files.length > 1 ? ` ${i + 1} of ${files.length}` : "";
    const name = `openfal-${requestId.slice(0, 8) || "result"}-${i + 1}.${extension(file, file.kind === "video" ? "mp4" : "jpg")}`;
    let media;
    if (file.kind === "video") {
      media = h("video", { src: file.url, controls: true, loop: true, muted: true, playsinline: true, preload: "metadata", "aria-label": `Result video${n}` });
    } else {
      media = h("a", { href: file.url, target: "_blank", rel: "noopener", class: "media-link", title: "Open full size" }, [
        h("img", { src: file.url, alt: `Result image${n}${prompt ? `: ${prompt.slice(0, 120)}` : ""}`, decoding: "async" }),
      ]);
    }
    const facts = [];
    if (file.width && file.height) facts.push(`${file.width} × ${file.height}`);
    facts.push(typeLabel(file, file.kind === "video" ? "video" : "image"));
    if (file.file_size) facts.push(formatBytes(file.file_size));
    const download = h("a", { href: file.url, download: name, class: "button ghost small" }, [fromHtml(DOWNLOAD_ICON), "Download"]);
    download.setAttribute("aria-label", `Download ${file.kind}${n}`);
    const dims = h("span", { class: "dims" }, facts.join(" · "));
    if (file.kind === "video" && !(file.width && file.height)) {
      // fal's video File has no size: read it from the stream
      media.addEventListener("loadedmetadata", () => {
        if (media.videoWidth) dims.textContent = [`${media.videoWidth} × ${media.videoHeight}`, `${media.duration.toFixed(1)} s`, ...facts].join(" · ");
      });
    }
    const figure = h("figure", { class: `result-media ${file.kind}` }, [media, h("figcaption", {}, [dims, download])]);
    container.append(figure);
  });
  return files.length;
}

function seconds(value) {
  if (typeof value !== "number") return String(value);
  return value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`;
}

/** Facts about a finished request: seed, sizes, timings, safety flags. */
export function renderMeta(dl, result, status, clientTimes) {
  const rows = [];
  if (result && typeof result === "object") {
    if (result.seed !== undefined) rows.push(["Seed", String(result.seed)]);
    const files = mediaOf(result);
    const sizes = [...new Set(files.filter((f) => f.width && f.height).map((f) => `${f.width} × ${f.height}`))];
    if (sizes.length) rows.push([sizes.length > 1 ? "Sizes" : "Size", sizes.join(", ")]);
    if (files.length > 1) rows.push(["Outputs", String(files.length)]);
    if (result.timings && typeof result.timings === "object") {
      for (const [k, v] of Object.entries(result.timings)) rows.push([k === "inference" ? "Inference" : `Time: ${k.replace(/_/g, " ")}`, seconds(v)]);
    }
    if (Array.isArray(result.has_nsfw_concepts) && result.has_nsfw_concepts.some(Boolean)) {
      rows.push(["Safety", `${result.has_nsfw_concepts.filter(Boolean).length} flagged`]);
    }
  }
  const inference = status && status.metrics && status.metrics.inference_time;
  if (typeof inference === "number" && !(result && result.timings)) rows.push(["Inference", seconds(inference)]);
  if (clientTimes && clientTimes.total != null) rows.push(["Round trip", seconds(clientTimes.total)]);
  if (clientTimes && clientTimes.queued != null) rows.push(["In queue", seconds(clientTimes.queued)]);
  dl.replaceChildren(...rows.flatMap(([k, v]) => [h("div", { class: "meta-item" }, [h("dt", {}, k), h("dd", {}, v)])]));
  dl.hidden = rows.length === 0;
}

/** JSON with long data: URIs shortened for display. */
export function prettyJson(value) {
  return JSON.stringify(
    value,
    (k, v) => (typeof v === "string" && v.startsWith("data:") && v.length > 160 ? `${v.slice(0, 80)}… (${formatBytes(v.length)} data URI)` : v),
    2,
  );
}

export function logLine(entry) {
  const when = entry.timestamp ? new Date(entry.timestamp) : null;
  const time = when && !Number.isNaN(when.getTime()) ? when.toLocaleTimeString([], { hour12: false }) : "";
  const level = (entry.level || "INFO").toUpperCase();
  return h("li", { class: `log ${level.toLowerCase()}` }, [
    h("time", { datetime: entry.timestamp || "" }, time),
    h("span", { class: "level" }, level),
    h("span", { class: "msg" }, entry.message ?? JSON.stringify(entry)),
  ]);
}
