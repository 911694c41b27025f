// Drives the official `openai` npm package against openfal's /v1 Images API.
// Usage: OPENFAL_URL=http://127.0.0.1:PORT FAL_KEY=id:secret node openai_e2e.mjs
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: `${process.env.OPENFAL_URL}/v1`, apiKey: process.env.FAL_KEY, maxRetries: 0 });
const out = {};

const generated = await client.images.generate({ model: "fal-ai/flux-1/schnell", prompt: "a red fox", size: "64x48", response_format: "b64_json" });
const bytes = Buffer.from(generated.data[0].b64_json, "base64");
out.generate = { count: generated.data.length, jpeg: bytes[0] === 0xff && bytes[1] === 0xd8, created: generated.created > 0 };

const edited = await client.images.edit({
  model: "fal-ai/flux-1/dev/image-to-image",
  image: await toFile(bytes, "in.jpg", { type: "image/jpeg" }),
  prompt: "a painting of a fox",
});
out.edit = { url: edited.data[0].url };

try {
  await client.images.generate({ model: "fal-ai/flux-1/schnell", prompt: "x", n: 9, size: "64x64" });
  out.error = "no error";
} catch (e) {
  out.error = { name: e.constructor.name, status: e.status, param: e.param, type: e.type };
}

out.models = [];
for await (const model of client.models.list()) out.models.push(model.id);

console.log(JSON.stringify(out));
