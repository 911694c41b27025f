// Drives @fal-ai/client 1.10.1's fal.realtime.connect against openfal. Its WebSocket URL
// is the literal wss://fal.run/...; a user points that name at openfal with DNS (or a
// hosts entry) and a certificate. Here the same redirection is done by a WebSocket
// subclass that rewrites that one host, standing in for DNS; the client is unchanged.
// OPENFAL_REALTIME_PREFIX=/run sends it under /run/ instead (a reverse proxy mapping fal.run there).
// Usage: OPENFAL_URL=http://127.0.0.1:PORT FAL_KEY=id:secret node --experimental-websocket realtime_e2e.mjs
import { createFalClient } from "@fal-ai/client";

const base = process.env.OPENFAL_URL;
const prefix = process.env.OPENFAL_REALTIME_PREFIX ?? "";
const NativeWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    super(String(url).replace(/^wss:\/\/fal\.run\//, `${base.replace(/^http/, "ws")}${prefix}/`), protocols);
  }
};

const fal = createFalClient({
  credentials: process.env.FAL_KEY,
  requestMiddleware: async (req) => ({ ...req, url: req.url.replace(/^https:\/\/rest\.fal\.ai/, base) }),
});
console.warn = () => {}; // the client warns that its default token provider is deprecated

function session(app, inputs) {
  // one message at a time: the client keeps only the latest message while it connects
  return new Promise((resolve) => {
    const results = [];
    const errors = [];
    let connection;
    let finished = false;
    const next = () => {
      if (results.length + errors.length === inputs.length) {
        // closing from the client ends with code 1005, which the client itself reports
        // through onError: stop listening first
        finished = true;
        connection.close();
        resolve({ results, errors });
      } else {
        connection.send(inputs[results.length + errors.length]);
      }
    };
    connection = fal.realtime.connect(app, {
      throttleInterval: 0,
      onResult: (result) => { if (!finished) { results.push(result); next(); } },
      onError: (error) => { if (!finished) { errors.push({ status: error.status, message: error.message, body: error.body }); next(); } },
    });
    next();
  });
}

const tiny = { prompt: "a lighthouse", image_size: { width: 64, height: 64 }, num_inference_steps: 2 };
const out = {};
out.flux = await session("fal-ai/flux-1/schnell", [{ ...tiny, seed: 1 }, { ...tiny, seed: 2 }]);
out.invalid = await session("openfal/utils/sleep", [{ steps: 0 }, { seconds: 0, steps: 1 }]);
console.log(JSON.stringify(out));
process.exit(0);
