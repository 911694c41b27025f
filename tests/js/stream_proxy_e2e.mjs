// Drives the calls of the official @fal-ai/client 1.10.1 that tests/js/client_e2e.mjs does
// not: fal.stream, GET runs and proxy mode (proxyUrl, no middleware), against openfal.
// Usage: OPENFAL_URL=http://127.0.0.1:PORT FAL_KEY=id:secret node stream_proxy_e2e.mjs
import { createFalClient } from "@fal-ai/client";

const base = process.env.OPENFAL_URL;
const credentials = process.env.FAL_KEY;
const viaMiddleware = createFalClient({
  credentials,
  requestMiddleware: async (req) => ({
    ...req,
    url: req.url
      .replace(/^https:\/\/queue\.fal\.run/, base)
      .replace(/^https:\/\/rest\.fal\.ai/, base)
      .replace(/^https:\/\/fal\.run/, `${base}/run`),
  }),
});
// connectionMode "client" (browsers): a token from /tokens/, then the stream URL called
// directly with ?fal_jwt_token= and no Authorization; the client's documented `fetch`
// option points fal's hosts at openfal
const rewrite = (url) => String(url)
  .replace(/^https:\/\/queue\.fal\.run/, base)
  .replace(/^https:\/\/rest\.fal\.ai/, base)
  .replace(/^https:\/\/fal\.run/, `${base}/run`);
const viaFetch = createFalClient({ credentials, fetch: (url, init) => fetch(rewrite(url), init) });
// proxy mode: every call goes to openfal's proxy route with x-fal-target-url; no middleware
const viaProxy = createFalClient({ credentials, proxyUrl: { url: `${base}/fal/proxy`, when: "always" } });

const out = {};
const tiny = { prompt: "a lighthouse", image_size: { width: 64, height: 64 }, num_inference_steps: 3, seed: 5 };

async function streamed(fal, id, input) {
  const stream = await fal.stream(id, { input });
  // the client rejects done() as soon as an error arrives: hold it from the start, or
  // Node reports the rejection as unhandled while the loop below is still waiting
  const finished = stream.done();
  finished.catch(() => {});
  const events = [];
  for await (const event of stream) events.push(event);
  const done = await finished;
  return { events, done, requestId: Boolean(stream.requestId) };
}

async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (e) {
    return { error: { name: e.constructor.name, status: e.status, message: e.message, fields: (e.fieldErrors ?? []).map((f) => f.loc.join(".")) } };
  }
}

// fal.stream: SSE of partial outputs, done() resolves with the final one
out.stream = await streamed(viaMiddleware, "fal-ai/flux-1/schnell", tiny);
out.streamError = await outcome(streamed(viaMiddleware, "openfal/utils/sleep", { steps: 0 }));
out.streamFailure = await outcome(streamed(viaMiddleware, "openfal/utils/sleep", { seconds: 0.3, steps: 3, fail_with: "boom" }));

const warn = console.warn;
console.warn = () => {}; // the client warns that its default token provider is deprecated
out.clientMode = await outcome((async () => {
  const stream = await viaFetch.stream("openfal/utils/sleep", { input: { seconds: 0.2, steps: 2 }, connectionMode: "client" });
  return await stream.done();
})());
out.statusClientMode = await outcome((async () => {
  const { request_id } = await viaFetch.queue.submit("openfal/utils/sleep", { input: { seconds: 0.2, steps: 2 } });
  const stream = await viaFetch.queue.streamStatus("openfal/utils/sleep", { requestId: request_id, connectionMode: "client" });
  return (await stream.done()).status;
})());
console.warn = warn;

// fal.run with GET: the input travels in the query string
out.runGet = (await viaMiddleware.run("openfal/utils/echo", { input: { a: "1" }, method: "get" })).data;

// proxy mode, every kind of call
const polled = await viaProxy.subscribe("openfal/utils/sleep", { input: { seconds: 0.2, steps: 2 }, logs: true, mode: "polling", pollInterval: 50 });
let proxiedLogs = [];
const streamedStatus = await viaProxy.subscribe("openfal/utils/sleep", {
  input: { seconds: 0.2, steps: 2 },
  logs: true,
  mode: "streaming",
  onQueueUpdate: (u) => { proxiedLogs = (u.logs ?? []).map((l) => l.message); },
});
const queued = await viaProxy.queue.submit("openfal/utils/echo", { input: { n: 3 } });
await viaProxy.queue.subscribeToStatus("openfal/utils/echo", { requestId: queued.request_id, mode: "polling", pollInterval: 50 });
const queuedResult = await viaProxy.queue.result("openfal/utils/echo", { requestId: queued.request_id });
const uploaded = await viaProxy.storage.upload(new Blob([new Uint8Array([1, 2, 3])], { type: "image/png" }));
out.proxy = {
  polling: polled.data,
  streaming: { data: streamedStatus.data, logs: proxiedLogs },
  queue: queuedResult.data,
  upload: uploaded,
  uploadBytes: Array.from(new Uint8Array(await (await fetch(uploaded)).arrayBuffer())),
  run: (await viaProxy.run("openfal/utils/echo", { input: { proxied: true } })).data,
  stream: await streamed(viaProxy, "openfal/utils/sleep", { seconds: 0.2, steps: 2 }),
  validation: await outcome(viaProxy.queue.submit("fal-ai/flux-1/dev", { input: { num_images: 99 } })),
};

console.log(JSON.stringify(out));
