// An assist agent made with socket.io-client 4 from npm, driven by tests/e2e/test_js_cluster.py.
// Usage: node agent.mjs URL PATH PEER_ID AGENT_INFO_JSON AUTH_JSON
// Prints one JSON line per thing that happens ({"event": name, "args": [...]}, "connect",
// "connect_error", "disconnect"); reads commands, one JSON object a line, on stdin:
//   {"emit": EVENT, "payload": ..., "ack": true}  -> prints {"ack": EVENT, "reply": ...}
// Exits when stdin closes.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const [url, path, peerId, agentInfo, auth] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(url, {
  path,
  transports: ["websocket"],
  reconnection: false,
  query: { identity: "agent", peerId, agentInfo },
  auth: JSON.parse(auth),
});

socket.on("connect", () => say({ event: "connect", id: socket.id }));
socket.on("connect_error", (err) => say({ event: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => say({ event: "disconnect", reason }));
socket.onAny((event, ...args) => say({ event, args }));

createInterface({ input: process.stdin }).on("line", async (line) => {
  const command = JSON.parse(line);
  if (command.ack) {
    const reply = await socket.timeout(5000).emitWithAck(command.emit, command.payload);
    say({ ack: command.emit, reply });
  } else {
    socket.emit(command.emit, command.payload);
  }
});
process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
