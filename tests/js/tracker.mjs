// A tracker made with socket.io-client 4 from npm, driven by tests/e2e/test_js_client.py.
// Usage: node tracker.mjs URL PATH PEER_ID SESSION_INFO_JSON TRANSPORT
// Prints one JSON line per step on stdout; exits when stdin closes.
import { io } from "socket.io-client";

const [url, path, peerId, sessionInfo, transport] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(url, {
  path,
  transports: [transport || "websocket"],
  reconnection: false,
  query: { identity: "session", peerId, sessionInfo },
  extraHeaders: {
    "User-Agent":
      "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/103.0.0.0 Safari/537.36",
  },
});

socket.on("connect_error", (err) => {
  say({ step: "connect_error", message: err.message, data: err.data ?? null });
  process.exit(1);
});

socket.on("ERROR", (payload) => say({ step: "ERROR", payload }));

socket.on("connect", async () => {
  say({ step: "connected", id: socket.id });
  const ack = await socket
    .timeout(5000)
    .emitWithAck("UPDATE_SESSION", { pageTitle: "Checkout", metadata: { plan: "trial" } });
  say({ step: "update_ack", ack });
  const bad = await socket.timeout(5000).emitWithAck("UPDATE_SESSION", "not an object");
  say({ step: "bad_ack", ack: bad });
});

process.stdin.on("end", () => {
  socket.close();
  say({ step: "closed" });
  process.exit(0);
});
process.stdin.resume();
