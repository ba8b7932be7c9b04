// Connects to the notification Socket.IO server with the official socket.io-client and prints,
// one JSON object per line on stdout: {"type":"connected"} once connected, then each event
// named on the command line as {"type":"event","event":...,"payload":...}; exits 0 after
// `count` events, 2 on connect_error (printed as {"type":"connect_error",...}), 3 on timeout.
//
// usage: node client.mjs <url> <token|-> <transport: websocket|polling|default> <count> <event>...
import { io } from "socket.io-client";

const [url, token, transport, countArg, ...events] = process.argv.slice(2);
const expected = Number(countArg);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const options = { reconnection: false, timeout: 10000 };
if (token !== "-") options.auth = { token };
if (transport !== "default") options.transports = [transport];

const socket = io(url, options);
let received = 0;

const timer = setTimeout(() => {
  print({ type: "timeout", received });
  socket.close();
  process.exit(3);
}, 20000);

socket.on("connect", () => {
  print({ type: "connected", id: socket.id, transport: socket.io.engine.transport.name });
});

socket.on("connect_error", (err) => {
  print({ type: "connect_error", message: err.message, data: err.data ?? null });
  clearTimeout(timer);
  socket.close();
  process.exit(2);
});

for (const event of events) {
  socket.on(event, (payload) => {
    print({ type: "event", event, payload });
    received += 1;
    if (received >= expected) {
      clearTimeout(timer);
      socket.close();
      process.exit(0);
    }
  });
}
