// The reference server of bench/socket_fanout.py: the official Socket.IO server, every client in one room.
// Reads commands on stdin: "broadcast <n>" emits one notification:new to the room and prints the emit's
// start (epoch ms) and how long the emit call held the event loop.
const { createServer } = require("http");
const { Server } = require("socket.io");
const readline = require("readline");

const port = Number(process.argv[2]);
const room = "workspace:bench";
const httpServer = createServer();
const io = new Server(httpServer, { transports: ["websocket"], serveClient: false });
io.on("connection", (socket) => {
  socket.join(room);
});
httpServer.listen(port, "127.0.0.1", () => console.log("ready"));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, n] = line.trim().split(" ");
  if (command === "broadcast") {
    const started = performance.timeOrigin + performance.now();
    io.to(room).emit("notification:new", payload(Number(n)));
    const held = performance.timeOrigin + performance.now() - started;
    console.log(JSON.stringify({ started, held }));
  } else if (command === "memory") {
    global.gc && global.gc();
    console.log(JSON.stringify({ rss: process.memoryUsage().rss, clients: io.engine.clientsCount }));
  }
});
process.stdin.on("end", () => process.exit(0));

function payload(n) {
  return {
    id: `bench-${n}`, category: "news", title: "Nouvelle page publiée", body: "Les horaires du restaurant changent lundi.",
    data: { pageId: "8f0c3c0e-6c1e-4d55-9a7e-3a4c2f0e9d11", workspaceId: "bench" }, createdAt: new Date().toISOString(),
  };
}
