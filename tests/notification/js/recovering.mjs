// A socket.io-client 4 that asks for connection state recovery and reconnects on its own.
// Prints one JSON object per line on stdout: {"type":"connected","recovered":bool} on every
// (re)connection, {"type":"event","payload":...,"offset":...} for each notification:new, and
// {"type":"disconnected","reason":...}, each with "at" (ms, the client's clock). Runs until its stdin closes.
//
// usage: node recovering.mjs <url> <token>
import { io } from "socket.io-client";

const [url, token] = process.argv.slice(2);
const print = (obj) => process.stdout.write(JSON.stringify({ ...obj, at: performance.now() }) + "\n");

const socket = io(url, {
  transports: ["websocket"],
  auth: { token, recovery: true },
  reconnectionDelay: 100,
  reconnectionDelayMax: 300,
  randomizationFactor: 0,
});

socket.on("connect", () => print({ type: "connected", recovered: Boolean(socket.recovered) }));
socket.on("disconnect", (reason) => print({ type: "disconnected", reason }));
socket.on("connect_error", (err) => print({ type: "connect_error", message: err.message }));
socket.on("notification:new", (payload, offset) => print({ type: "event", payload, offset: offset ?? null }));

process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
process.stdin.resume();
