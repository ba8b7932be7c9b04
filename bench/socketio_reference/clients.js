// The clients of bench/socket_fanout.py (against either server): N socket.io-client sockets over websocket.
// argv: url, count, token (or "-"). Prints "connected" once all are, then for each notification:new
// received by all of them {"first": ms, "last": ms} (epoch ms of the first and last arrival).
const { io } = require("socket.io-client");

const [url, countArg, token] = process.argv.slice(2);
const count = Number(countArg);
let connected = 0;
const arrivals = new Map();

function open(i) {
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: ["websocket"], reconnection: false, forceNew: true, timeout: 60000,
      auth: token && token !== "-" ? { token } : undefined,
    });
    socket.on("connect", () => { connected++; resolve(); });
    socket.on("connect_error", (err) => { console.error(`client ${i}: ${err.message}`); resolve(); });
    socket.on("notification:new", (message) => {
      const now = performance.timeOrigin + performance.now();
      let seen = arrivals.get(message.id);
      if (!seen) { seen = { first: now, last: now, n: 0 }; arrivals.set(message.id, seen); }
      seen.last = now;
      if (++seen.n === count) console.log(JSON.stringify({ id: message.id, first: seen.first, last: seen.last }));
    });
  });
}

(async () => {
  for (let i = 0; i < count; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - i) }, (_, k) => open(i + k)));
  }
  console.log(connected === count ? "connected" : `only ${connected} of ${count} connected`);
})();
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
