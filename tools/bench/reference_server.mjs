// The course author's reference server, for docs/capacity.md's step table: one Node.js
// process, http.createServer and node-redis INCR, nothing else. Not part of the service
// (no checks of the id, no limit, no metrics): what the bare platform serves per core.
//
//   node tools/bench/reference_server.mjs --port 7099 --redis redis://127.0.0.1:6379
import http from "node:http";
import { parseArgs } from "node:util";
import { createClient } from "redis";

const { values } = parseArgs({
  options: { port: { type: "string", default: "7099" }, host: { type: "string", default: "127.0.0.1" },
             redis: { type: "string", default: "redis://127.0.0.1:6379" } },
});
const redis = createClient({ url: values.redis });
await redis.connect();

http.createServer(async (request, response) => {
  const id = request.url.slice("/turno/".length);
  try {
    const turno = await redis.incr(`turno:${id}`);
    response.writeHead(200, { "Content-Type": "application/json" });
    response.end(JSON.stringify({ id, turno }));
  } catch (error) {
    response.writeHead(503, { "Content-Type": "application/json" });
    response.end(JSON.stringify({ error: "store_unavailable", message: String(error) }));
  }
}).listen(Number(values.port), values.host, () => console.error(`serving on http://${values.host}:${values.port}`));
