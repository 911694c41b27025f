// A form generated from an endpoint's input JSON schema (pydantic's model_json_schema).
//
// Each property becomes a widget {name, root, get(), set(value), showError(msg), clear()};
// get() returns undefined to leave a field out of the request (the server's default
// applies) and throws FieldError for input it cannot even encode (bad JSON).

import { uploadFile } from "./api.js";
import { h } from "./dom.js";

/** Fields most people leave alone: folded under "More options". */
const ADVANCED = new Set([
  "seed", "sync_mode", "enable_safety_checker", "output_format", "acceleration",
  "safety_tolerance", "enhance_prompt", "negative_prompt", "fail_with",
]);

/** fal's image_size presets as fal's own playground names them, and their sizes. */
const SIZE_PRESETS = {
  square_hd: ["Square HD", "1024 × 1024"],
  square: ["Square", "512 × 512"],
  portrait_4_3: ["Portrait 3:4", "768 × 1024"],
  portrait_16_9: ["Portrait 9:16", "576 × 1024"],
  landscape_4_3: ["Landscape 4:3", "1024 × 768"],
  landscape_16_9: ["Landscape 16:9", "1024 × 576"],
};

/** A preset's label: "Landscape 4:3 · 1024 × 768"; an unknown one as its value. */
function presetLabel(value) {
  const preset = SIZE_PRESETS[value];
  return preset ? `${preset[0]} · ${preset[1]}` : value;
}

const WORDS = { url: "URL", urls: "URLs", num: "Number of", hd: "HD", id: "ID", loras: "LoRAs" };

export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

let uid = 0;
const nextId = (name) => `f-${name.replace(/[^a-z0-9_-]/gi, "")}-${++uid}`;

export function labelFor(name) {
  const words = name.split("_").map((w) => WORDS[w] || w);
  const text = words.join(" ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function resolve(schema, defs) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const { $ref, ...rest } = schema;
    return { ...(defs[name] || {}), ...rest };
  }
  return schema || {};
}

/** {schema, nullable}: an `anyOf [X, null]` seen as an optional X. */
function unwrap(schema, defs) {
  schema = resolve(schema, defs);
  if (Array.isArray(schema.anyOf)) {
    const members = schema.anyOf.map((s) => resolve(s, defs));
    const nonNull = members.filter((s) => s.type !== "null");
    const nullable = nonNull.length < members.length;
    if (nonNull.length === 1) {
      const { anyOf, ...outer } = schema;
      return { schema: { ...nonNull[0], ...outer, default: schema.default }, nullable };
    }
    return { schema: { ...schema, anyOf: nonNull }, nullable };
  }
  return { schema, nullable: false };
}

function isImageSize(schema) {
  if (!Array.isArray(schema.anyOf)) return false;
  const hasObject = schema.anyOf.some((s) => s.type === "object" && s.properties && s.properties.width && s.properties.height);
  const hasEnum = schema.anyOf.some((s) => Array.isArray(s.enum));
  return hasObject && hasEnum;
}

function isUrlField(name, schema) {
  return /(^|_)url$/.test(name) || /\burl\b/i.test(schema.description || "") || schema.format === "uri";
}

function rank(name) {
  if (name === "prompt") return 0;
  if (/_urls?$/.test(name)) return 1;
  if (name === "image_size" || name === "aspect_ratio") return 2;
  return 3;
}

/** The wrapper every widget shares: label, the control, a hint and an error line. */
function frame(name, schema, required, id, control, { inline = false, labelText = null } = {}) {
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  // the accessible name is the label alone; "required" is said by aria-required
  const label = h("div", { class: "field-head" }, [
    h("label", { for: id, class: "field-label" }, labelText ?? labelFor(name)),
    required ? h("span", { class: "req", "aria-hidden": "true" }, "required") : null,
    labelText ? null : h("code", { class: "field-name", "aria-hidden": "true" }, name),
  ]);
  const hintText = schema.description || rangeHint(schema);
  const hint = hintText ? h("p", { class: "hint", id: hintId }, hintText) : null;
  const error = h("p", { class: "field-error", id: errorId, hidden: true });
  const root = h("div", { class: `field${inline ? " inline" : ""}`, "data-field": name }, inline ? [control, label, hint, error] : [label, control, hint, error]);
  return { root, hint, error, describedBy: [hintText ? hintId : null, errorId].filter(Boolean).join(" ") };
}

function rangeHint(schema) {
  const lo = schema.minimum ?? schema.exclusiveMinimum;
  const hi = schema.maximum ?? schema.exclusiveMaximum;
  if ((schema.type === "integer" || schema.type === "number") && lo !== undefined && hi !== undefined && hi - lo <= 1e6) {
    return `${lo} to ${hi}`;
  }
  return "";
}

function widget(frameParts, controls, get, set, onClear) {
  const { root, error } = frameParts;
  return {
    root,
    get,
    set,
    focus() {
      controls[0]?.focus();
    },
    showError(message) {
      error.textContent = message;
      error.hidden = false;
      root.classList.add("invalid");
      for (const c of controls) c.setAttribute("aria-invalid", "true");
    },
    clear() {
      error.textContent = "";
      error.hidden = true;
      root.classList.remove("invalid");
      for (const c of controls) c.removeAttribute("aria-invalid");
      onClear?.();
    },
  };
}

function describe(control, parts, required = false) {
  control.setAttribute("aria-describedby", parts.describedBy);
  if (required) control.setAttribute("aria-required", "true");
}

// ---- widgets -------------------------------------------------------------------------

function textWidget(name, schema, required, nullable) {
  const id = nextId(name);
  const long = /prompt/.test(name) || (schema.maxLength ?? 0) > 200 || String(schema.default ?? "").length > 60;
  const control = long
    ? h("textarea", { id, name, rows: name === "prompt" ? 4 : 3, spellcheck: "true" })
    : h("input", { id, name, type: "text" });
  if (nullable || !required) control.placeholder = schema.default == null ? "(not set)" : "";
  const parts = frame(name, schema, required, id, control);
  describe(control, parts, required);
  const set = (v) => {
    control.value = v == null ? "" : String(v);
  };
  set(schema.default);
  const get = () => {
    if (control.value === "" && (!required || nullable)) return undefined;
    return control.value;
  };
  return widget(parts, [control], get, set);
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** A URL input with a local file picker that fills it with a data: URI, and a thumbnail. */
function urlRow(name, id, labelText, onChange) {
  const input = h("input", { id, name, type: "url", inputmode: "url", placeholder: "https://… or pick a file", spellcheck: "false" });
  const file = h("input", { type: "file", accept: "image/*", class: "visually-hidden", id: `${id}-file`, "aria-label": `${labelText}: choose a local file` });
  const pick = h("label", { for: `${id}-file`, class: "button ghost small file-pick" }, "Choose file…");
  // the thumbnail box is always there, so nothing moves when an image appears
  const img = h("img", { alt: "", hidden: true });
  const thumb = h("div", { class: "thumb", "aria-hidden": "true" }, img);
  const note = h("span", { class: "file-note" });
  const refresh = () => {
    const v = input.value.trim();
    const looksImage = /^data:image\//.test(v) || /^https?:\/\/.+/.test(v);
    img.hidden = !looksImage;
    if (looksImage) img.src = v;
    else img.removeAttribute("src");
    if (!/^data:/.test(v)) note.textContent = "";
    onChange?.();
  };
  img.addEventListener("error", () => {
    img.hidden = true;
  });
  input.addEventListener("change", refresh);
  const fill = async (chosen) => {
    input.value = await readAsDataUrl(chosen);
    refresh();
    note.textContent = `${chosen.name} · ${formatBytes(chosen.size)} (sent inline as a data: URI)`;
    input.dispatchEvent(new Event("input", { bubbles: true }));
  };
  file.addEventListener("change", async () => {
    const chosen = file.files && file.files[0];
    if (chosen) await fill(chosen);
  });
  const row = h("div", { class: "url-row" }, [thumb, h("div", { class: "url-main" }, [h("div", { class: "url-controls" }, [input, pick, file]), note])]);
  return { row, input, file, fill, set: (v) => { input.value = v ?? ""; refresh(); } };
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function urlWidget(name, schema, required, nullable) {
  const id = nextId(name);
  const r = urlRow(name, id, labelFor(name));
  const parts = frame(name, schema, required, id, r.row);
  describe(r.input, parts, required);
  r.set(schema.default);
  const get = () => {
    const v = r.input.value.trim();
    if (v === "" && (!required || nullable)) return undefined;
    return v;
  };
  return widget(parts, [r.input], get, r.set);
}

function urlListWidget(name, schema, required) {
  const id = nextId(name);
  const min = Math.max(schema.minItems ?? 0, 1);
  const max = schema.maxItems ?? 16;
  const list = h("ol", { class: "url-list" });
  const add = h("button", { type: "button", class: "ghost small add-row" }, "+ Add URL");
  const container = h("div", { class: "url-list-wrap", role: "group", id, tabindex: "-1" }, [list, add]);
  const rows = [];
  const sync = () => {
    add.disabled = rows.length >= max;
    rows.forEach((r, i) => {
      r.remove.disabled = rows.length <= min;
      r.input.setAttribute("aria-label", `${labelFor(name)} ${i + 1}`);
      r.file.setAttribute("aria-label", `${labelFor(name)} ${i + 1}: choose a local file`);
      r.remove.setAttribute("aria-label", `Remove ${labelFor(name)} ${i + 1}`);
    });
  };
  const addRow = (value = "") => {
    const rowId = `${id}-${rows.length}-${++uid}`;
    const r = urlRow(name, rowId, labelFor(name));
    const remove = h("button", { type: "button", class: "ghost small icon remove-row" }, "×");
    const li = h("li", {}, [r.row, remove]);
    const entry = { ...r, li, remove };
    // several files picked at once: this row takes the first, the next rows (empty ones,
    // then new ones up to maxItems) the others, in the order chosen
    r.file.multiple = true;
    r.file.addEventListener("change", async () => {
      const extra = Array.from(r.file.files || []).slice(1);
      let at = rows.indexOf(entry) + 1;
      for (const chosen of extra) {
        while (at < rows.length && rows[at].input.value.trim() !== "") at += 1;
        if (at >= rows.length && rows.length >= max) break;
        const target = at < rows.length ? rows[at] : addRow();
        at += 1;
        await target.fill(chosen);
      }
    });
    remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(entry), 1);
      li.remove();
      sync();
      container.dispatchEvent(new Event("input", { bubbles: true }));
    });
    rows.push(entry);
    list.append(li);
    r.set(value);
    sync();
    return entry;
  };
  add.addEventListener("click", () => {
    addRow().input.focus();
    container.dispatchEvent(new Event("input", { bubbles: true }));
  });
  const set = (values) => {
    rows.splice(0).forEach((r) => r.li.remove());
    const vs = Array.isArray(values) ? values : [];
    for (const v of vs) addRow(v);
    while (rows.length < min) addRow();
  };
  set(schema.default);
  const parts = frame(name, schema, required, id, container);
  parts.root.querySelector("label.field-label").setAttribute("for", `${id}-first`);
  const relabel = () => rows[0] && parts.root.querySelector("label.field-label").setAttribute("for", rows[0].input.id);
  relabel();
  const get = () => {
    const values = rows.map((r) => r.input.value.trim()).filter((v) => v !== "");
    if (values.length === 0 && !required) return undefined;
    return values;
  };
  const w = widget(parts, [container], get, (v) => { set(v); relabel(); });
  w.focus = () => rows[0]?.input.focus();
  return w;
}

/** Array items that are LoRA weights ({path, scale}). */
function isLoraList(items) {
  return items && items.type === "object" && items.properties && items.properties.path && items.properties.scale;
}

/**
 * The LoRA list editor: rows of URL (or an uploaded file, or an installed LoRA's name)
 * and scale, added and removed freely; files are uploaded through the storage API
 * rather than inlined (LoRAs are tens of megabytes).
 */
function loraListWidget(name, schema, items, required) {
  const id = nextId(name);
  const max = schema.maxItems ?? 8;
  const scaleSchema = items.properties.scale;
  const list = h("ol", { class: "url-list lora-list" });
  const add = h("button", { type: "button", class: "ghost small add-row" }, "+ Add LoRA");
  const container = h("div", { class: "url-list-wrap", role: "group", id, tabindex: "-1" }, [list, add]);
  const rows = [];
  const sync = () => {
    add.disabled = rows.length >= max;
    rows.forEach((r, i) => {
      r.path.setAttribute("aria-label", `LoRA ${i + 1}: URL or name`);
      r.scale.setAttribute("aria-label", `LoRA ${i + 1}: scale`);
      r.file.setAttribute("aria-label", `LoRA ${i + 1}: upload a .safetensors file`);
      r.remove.setAttribute("aria-label", `Remove LoRA ${i + 1}`);
    });
  };
  const addRow = (value = {}) => {
    const rowId = `${id}-${++uid}`;
    const path = h("input", { id: rowId, type: "text", placeholder: "https://…/style.safetensors, an upload, or an installed name", spellcheck: "false" });
    const scale = h("input", { type: "number", step: "0.05", min: String(scaleSchema.minimum ?? -10), max: String(scaleSchema.maximum ?? 10), class: "lora-scale" });
    const file = h("input", { type: "file", accept: ".safetensors", class: "visually-hidden", id: `${rowId}-file` });
    const pick = h("label", { for: `${rowId}-file`, class: "button ghost small file-pick" }, "Upload…");
    const note = h("span", { class: "file-note" });
    const remove = h("button", { type: "button", class: "ghost small icon remove-row" }, "×");
    file.addEventListener("change", async () => {
      const chosen = file.files && file.files[0];
      if (!chosen) return;
      note.textContent = `uploading ${chosen.name} · ${formatBytes(chosen.size)}…`;
      try {
        path.value = await uploadFile(chosen);
        note.textContent = `${chosen.name} · ${formatBytes(chosen.size)} uploaded`;
      } catch (err) {
        note.textContent = `upload failed: ${err.message}`;
      }
      path.dispatchEvent(new Event("input", { bubbles: true }));
    });
    const li = h("li", {}, [h("div", { class: "url-row lora-row" }, [h("div", { class: "url-main" }, [h("div", { class: "url-controls" }, [path, pick, file, scale]), note])]), remove]);
    const entry = { li, path, scale, file, remove };
    remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(entry), 1);
      li.remove();
      sync();
      container.dispatchEvent(new Event("input", { bubbles: true }));
    });
    path.value = value.path ?? "";
    scale.value = String(value.scale ?? scaleSchema.default ?? 1);
    rows.push(entry);
    list.append(li);
    sync();
    return entry;
  };
  add.addEventListener("click", () => {
    addRow().path.focus();
    container.dispatchEvent(new Event("input", { bubbles: true }));
  });
  const set = (values) => {
    rows.splice(0).forEach((r) => r.li.remove());
    for (const v of Array.isArray(values) ? values : []) addRow(v);
    sync();
  };
  set(schema.default);
  const parts = frame(name, { ...schema, description: schema.description || "LoRAs merged into the model for this image" }, required, id, container);
  const get = () => {
    const values = rows
      .filter((r) => r.path.value.trim() !== "")
      .map((r) => ({ path: r.path.value.trim(), scale: r.scale.value.trim() === "" ? 1 : Number(r.scale.value) }));
    if (values.length === 0 && !required) return undefined;
    return values;
  };
  const w = widget(parts, [container], get, set);
  w.focus = () => (rows[0] ? rows[0].path.focus() : add.focus());
  return w;
}

function enumWidget(name, schema, required, nullable) {
  const id = nextId(name);
  const options = [];
  if (nullable || (!required && schema.default === undefined)) {
    options.push(h("option", { value: "" }, schema.default == null ? "(not set)" : "(default)"));
  }
  for (const v of schema.enum) options.push(h("option", { value: String(v) }, String(v)));
  const control = h("select", { id, name }, options);
  const parts = frame(name, schema, required, id, control);
  describe(control, parts);
  const set = (v) => {
    control.value = v == null ? "" : String(v);
  };
  set(schema.default);
  const get = () => {
    if (control.value === "") return undefined;
    const match = schema.enum.find((v) => String(v) === control.value);
    return match === undefined ? control.value : match;
  };
  return widget(parts, [control], get, set);
}

function numberWidget(name, schema, required, nullable) {
  const id = nextId(name);
  const integer = schema.type === "integer";
  const lo = schema.minimum ?? schema.exclusiveMinimum;
  const hi = schema.maximum ?? schema.exclusiveMaximum;
  const bounded = lo !== undefined && hi !== undefined && hi - lo <= 10000;
  const step = integer ? 1 : bounded && hi - lo <= 2 ? 0.01 : 0.1;
  const control = h("input", { id, name, type: "number", step: integer ? "1" : "any", inputmode: integer ? "numeric" : "decimal" });
  if (name === "seed") control.placeholder = "random";
  else if (schema.default == null) control.placeholder = "(not set)";
  let slider = null;
  const controls = [control];
  if (bounded) {
    slider = h("input", { type: "range", min: String(lo), max: String(hi), step: String(step), tabindex: "-1", "aria-hidden": "true", class: "slider" });
    slider.addEventListener("input", () => {
      control.value = slider.value;
      control.dispatchEvent(new Event("input", { bubbles: true }));
    });
    control.addEventListener("input", () => {
      if (control.value !== "") slider.value = control.value;
    });
  }
  const body = slider ? h("div", { class: "number-row" }, [slider, control]) : control;
  const parts = frame(name, schema, required, id, body);
  describe(control, parts, required);
  const set = (v) => {
    control.value = v == null ? "" : String(v);
    if (slider && v != null) slider.value = String(v);
  };
  set(schema.default);
  const get = () => {
    const raw = control.value.trim();
    if (raw === "") {
      if (!required || nullable) return undefined;
      return null; // let the server say it is required
    }
    const n = Number(raw);
    return Number.isNaN(n) ? raw : n;
  };
  return widget(parts, controls, get, set);
}

function boolWidget(name, schema, required) {
  const id = nextId(name);
  const control = h("input", { id, name, type: "checkbox", class: "switch", role: "switch" });
  const parts = frame(name, schema, required, id, control, { inline: true });
  describe(control, parts);
  const set = (v) => {
    control.checked = Boolean(v);
  };
  set(schema.default);
  return widget(parts, [control], () => control.checked, set);
}

/** A size preset or a custom width x height; an optional size (``nullable``: absent means
 * "the input image's size", as on edit endpoints) offers "auto" first and then sends nothing. */
function imageSizeWidget(name, schema, required, defs, nullable = false) {
  const id = nextId(name);
  const members = schema.anyOf.map((s) => resolve(s, defs));
  // enum presets, and one-value literals (Z-Image image-to-image's "auto")
  const presets = members.flatMap((s) => (Array.isArray(s.enum) ? s.enum : s.const !== undefined ? [s.const] : []));
  const custom = members.find((s) => s.type === "object");
  const select = h("select", { id, name }, [
    ...(nullable ? [h("option", { value: "" }, "auto · from the input image")] : []),
    ...presets.map((p) => h("option", { value: p }, presetLabel(p))),
    h("option", { value: "custom" }, "Custom…"),
  ]);
  const dim = (axis) => {
    const s = custom.properties[axis];
    const input = h("input", { id: `${id}-${axis}`, type: "number", step: "16", min: String(s.minimum ?? 16), max: String(s.maximum ?? 14142), inputmode: "numeric" });
    input.value = String(s.default ?? 512);
    return { input, label: h("label", { for: input.id }, labelFor(axis)) };
  };
  const w = dim("width");
  const hgt = dim("height");
  const customBox = h("div", { class: "custom-size", hidden: true }, [
    h("div", {}, [w.label, w.input]),
    h("span", { class: "times", "aria-hidden": "true" }, "×"),
    h("div", {}, [hgt.label, hgt.input]),
  ]);
  const parts = frame(name, { ...schema, description: schema.description || "a preset, or a custom width × height (multiples of 16)" }, required, id, h("div", { class: "size-wrap" }, [select, customBox]));
  describe(select, parts);
  const toggle = () => {
    customBox.hidden = select.value !== "custom";
  };
  select.addEventListener("change", toggle);
  const set = (v) => {
    if (v && typeof v === "object") {
      select.value = "custom";
      w.input.value = String(v.width ?? 512);
      hgt.input.value = String(v.height ?? 512);
    } else {
      select.value = v ?? (nullable ? "" : presets[0]);
    }
    toggle();
  };
  set(schema.default);
  const num = (input) => (input.value.trim() === "" ? null : Number(input.value));
  const get = () => {
    if (select.value === "custom") return { width: num(w.input), height: num(hgt.input) };
    return select.value === "" ? undefined : select.value;
  };
  return widget(parts, [select, w.input, hgt.input], get, set);
}

function jsonWidget(name, schema, required, label = null) {
  const id = nextId(name);
  const control = h("textarea", { id, name, rows: 8, spellcheck: "false", class: "mono" });
  const parts = frame(name, schema, required, id, control, { labelText: label });
  describe(control, parts);
  const set = (v) => {
    control.value = v === undefined ? (label ? "{}" : "") : JSON.stringify(v, null, 2);
  };
  set(schema.default);
  const get = () => {
    const raw = control.value.trim();
    if (raw === "") return undefined;
    try {
      return JSON.parse(raw);
    } catch (err) {
      throw new FieldError(name, `Not valid JSON: ${err.message}`);
    }
  };
  return widget(parts, [control], get, set);
}

// ---- the form --------------------------------------------------------------------------

function makeWidget(name, raw, required, defs) {
  const { schema, nullable } = unwrap(raw, defs);
  if (isImageSize(schema)) return imageSizeWidget(name, schema, required, defs, nullable);
  if (Array.isArray(schema.enum)) return enumWidget(name, schema, required, nullable);
  switch (schema.type) {
    case "boolean":
      return boolWidget(name, schema, required);
    case "integer":
    case "number":
      return numberWidget(name, schema, required, nullable);
    case "string":
      return isUrlField(name, schema) ? urlWidget(name, schema, required, nullable) : textWidget(name, schema, required, nullable);
    case "array": {
      const items = resolve(schema.items, defs);
      if (items.type === "string") return urlListWidget(name, { ...schema, description: schema.description || items.description }, required);
      if (isLoraList(items)) return loraListWidget(name, schema, items, required);
      return jsonWidget(name, schema, required);
    }
    default:
      return jsonWidget(name, schema, required);
  }
}

/**
 * Builds the widgets for `schema` into `main` and `advanced` (a container inside a
 * <details>), returning {collect, showErrors, clearErrors, reset, hasAdvanced}.
 */
export function buildForm(schema, main, advanced) {
  const defs = schema.$defs || schema.definitions || {};
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  main.replaceChildren();
  advanced.replaceChildren();
  const widgets = new Map();
  let wholeBody = null;

  const names = Object.keys(props);
  if (names.length === 0) {
    // free-form input (openfal/utils/echo): the whole body as JSON
    wholeBody = jsonWidget("body", { description: "The request body as a JSON object." }, true, "Input JSON");
    wholeBody.set({ hello: "world" });
    main.append(wholeBody.root);
    widgets.set("body", wholeBody);
  } else {
    const ordered = names
      .map((n, i) => ({ n, i }))
      .sort((a, b) => rank(a.n) - rank(b.n) || a.i - b.i)
      .map((x) => x.n);
    for (const name of ordered) {
      const w = makeWidget(name, props[name], required.has(name), defs);
      widgets.set(name, w);
      (ADVANCED.has(name) && !required.has(name) ? advanced : main).append(w.root);
    }
  }

  return {
    hasAdvanced: advanced.children.length > 0,
    /** The request body; throws FieldError for input that cannot be encoded. */
    collect() {
      if (wholeBody) {
        const v = wholeBody.get();
        if (v !== undefined && (typeof v !== "object" || v === null || Array.isArray(v))) {
          throw new FieldError("body", "The input must be a JSON object.");
        }
        return v ?? {};
      }
      const body = {};
      for (const [name, w] of widgets) {
        const v = w.get();
        if (v !== undefined) body[name] = v;
      }
      return body;
    },
    /** Shows fal's 422 entries next to their fields; returns the entries no field took. */
    showErrors(detail) {
      const unplaced = [];
      let first = null;
      for (const item of detail) {
        const loc = (item.loc || []).filter((p, i) => !(i === 0 && p === "body"));
        const name = wholeBody ? "body" : String(loc[0] ?? "");
        const w = widgets.get(name);
        if (!w) {
          unplaced.push(item);
          continue;
        }
        const sub = (wholeBody ? loc : loc.slice(1)).map((p) => (typeof p === "number" ? `#${p + 1}` : labelFor(String(p)).toLowerCase()));
        const message = (sub.length ? `${sub.join(" › ")}: ` : "") + item.msg;
        w.showError(w.root.classList.contains("invalid") ? `${w.root.querySelector(".field-error").textContent}; ${message}` : message);
        if (w.root.closest("details")) w.root.closest("details").open = true;
        first = first || w;
      }
      first?.focus();
      return unplaced;
    },
    showFieldError(err) {
      const w = widgets.get(err.field);
      if (!w) return false;
      w.showError(err.message);
      if (w.root.closest("details")) w.root.closest("details").open = true;
      w.focus();
      return true;
    },
    clearErrors() {
      for (const w of widgets.values()) w.clear();
    },
    reset() {
      for (const [name, w] of widgets) {
        if (w === wholeBody) w.set({ hello: "world" });
        else {
          const { schema: s } = unwrap(props[name], defs);
          w.set(s.default);
        }
        w.clear();
      }
    },
  };
}
