// A live-feed subscriber made with socket.io-client 4 from npm, driven by
// tests/e2e/test_js_cluster.py. Usage: node subscriber.mjs URL PATH AUTH_JSON
// Connects to the /live namespace; prints one JSON line per thing that happens
// ({"event": name, "args": [...]}, "connect", "connect_error", "disconnect"); reads commands on
// stdin, one JSON object a line: {"emit": "SUBSCRIBE", "payload": {...}} (its ack is printed as
// {"ack": "SUBSCRIBE", "reply": ...}). Exits when stdin closes.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const [url, path, auth] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(url + "/live", {
  path,
  transports: ["websocket"],
  reconnection: false,
  auth: JSON.parse(auth),
});

socket.on("connect", () => say({ event: "connect", id: socket.id }));
socket.on("connect_error", (err) => say({ event: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => say({ event: "disconnect", reason }));
socket.onAny((event, ...args) => say({ event, args }));

createInterface({ input: process.stdin }).on("line", async (line) => {
  const command = JSON.parse(line);
  const reply = await socket.timeout(5000).emitWithAck(command.emit, command.payload);
  say({ ack: command.emit, reply });
});
process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
