// Drives the official @fal-ai/client, unchanged, against openfal.
// Usage: OPENFAL_URL=http://127.0.0.1:PORT FAL_KEY=id:secret node client_e2e.mjs
import { createFalClient } from "@fal-ai/client";

const base = process.env.OPENFAL_URL;
const fal = createFalClient({
  credentials: process.env.FAL_KEY,
  // the documented way to point the JS client elsewhere: rewrite every dispatched URL
  requestMiddleware: async (req) => ({
    ...req,
    url: req.url
      .replace(/^https:\/\/queue\.fal\.run/, base)
      .replace(/^https:\/\/rest\.fal\.ai/, base)
      .replace(/^https:\/\/fal\.run/, `${base}/run`),
  }),
});

const out = {};

// subscribe, polling mode, with logs and queue updates
const pollingUpdates = [];
const polled = await fal.subscribe("openfal/utils/sleep", {
  input: { seconds: 0.4, steps: 4 },
  logs: true,
  mode: "polling",
  pollInterval: 50,
  onQueueUpdate: (u) => pollingUpdates.push(u.status),
});
out.polling = { data: polled.data, requestId: polled.requestId, statuses: [...new Set(pollingUpdates)] };

// subscribe, streaming mode (SSE)
let streamLogs = [];
const streamed = await fal.subscribe("openfal/utils/sleep", {
  input: { seconds: 0.4, steps: 4 },
  logs: true,
  mode: "streaming",
  // the client accumulates the logs of every event; the last update holds them all
  onQueueUpdate: (u) => { streamLogs = (u.logs ?? []).map((l) => l.message); },
});
out.streaming = { data: streamed.data, logs: streamLogs };

// queue.* calls
const { request_id } = await fal.queue.submit("openfal/utils/echo", { input: { n: 7 }, priority: "low" });
const status = await fal.queue.subscribeToStatus("openfal/utils/echo", { requestId: request_id, mode: "polling", pollInterval: 50 });
const result = await fal.queue.result("openfal/utils/echo", { requestId: request_id });
out.queue = { status: status.status, data: result.data, requestId: result.requestId === request_id };

// cancel a running request
const long = await fal.queue.submit("openfal/utils/sleep", { input: { seconds: 10, steps: 100 } });
while ((await fal.queue.status("openfal/utils/sleep", { requestId: long.request_id })).status === "IN_QUEUE") {
  await new Promise((r) => setTimeout(r, 50));
}
await fal.queue.cancel("openfal/utils/sleep", { requestId: long.request_id });
const cancelled = await fal.queue.subscribeToStatus("openfal/utils/sleep", { requestId: long.request_id, mode: "polling", pollInterval: 50 });
out.cancel = { status: cancelled.status, error_type: cancelled.error_type };

// storage.upload and automatic upload of a Blob inside the input
const blob = new Blob([new Uint8Array([137, 80, 78, 71, 1, 2, 3])], { type: "image/png" });
const url = await fal.storage.upload(blob);
const fetched = new Uint8Array(await (await fetch(url)).arrayBuffer());
const echoed = await fal.subscribe("openfal/utils/echo", { input: { image_url: blob }, mode: "polling", pollInterval: 50 });
out.storage = { url, bytes: Array.from(fetched), autoUploaded: echoed.data.echo.image_url };

// a file over the client's 90 MB threshold goes up in 10 MB multipart parts
const big = new Uint8Array(91 * 1024 * 1024);
for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) % 251;
const bigUrl = await fal.storage.upload(new Blob([big], { type: "video/mp4" }));
const bigBack = new Uint8Array(await (await fetch(bigUrl)).arrayBuffer());
const digest = async (bytes) => Buffer.from(await crypto.subtle.digest("SHA-256", bytes)).toString("hex");
out.multipart = { url: bigUrl, size: bigBack.length, same: (await digest(big)) === (await digest(bigBack)) };

// validation errors surface as ValidationError with fal's detail list
try {
  await fal.queue.submit("fal-ai/flux-1/dev", { input: { num_images: 99 } });
  out.validation = "no error";
} catch (e) {
  out.validation = { name: e.constructor.name, status: e.status, fields: (e.fieldErrors ?? []).map((f) => f.loc.join(".")) };
}

// synchronous run
out.run = (await fal.run("openfal/utils/echo", { input: { sync: true } })).data;

console.log(JSON.stringify(out));
