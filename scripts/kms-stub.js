// A KMS endpoint that answers only Encrypt, with a random ciphertext blob:
// enough to drive the broker's AWS SDK path (signing, HTTP, JSON) at
// millions of calls for scripts/memory-soak, where moto answers a hundred
// or so a second, and to stand in for a distant KMS in benchmarks. Not a
// KMS: it checks nothing.
// Usage: node scripts/kms-stub.js PORT [--latency-ms N] [--control-port P]
//   --latency-ms N    answer every call N ms after its request arrived (a
//                     KMS round trip; default 0)
//   --control-port P  a second listener: GET /down?ms=M makes KMS
//                     unreachable for M ms (open connections are destroyed,
//                     new ones refused), GET /up ends it at once; both
//                     answer 200 when done
const http = require("http");
const crypto = require("crypto");
const port = Number(process.argv[2]);
const option = (name, fallback) => {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const latencyMs = option("--latency-ms", 0);
const controlPort = option("--control-port", 0);
const arn = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000";
const sockets = new Set();
let down = false;
let upTimer = null;
const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    if (req.headers["x-amz-target"] !== "TrentService.Encrypt") {
      res.writeHead(400, { "content-type": "application/x-amz-json-1.1" });
      res.end(JSON.stringify({ __type: "UnsupportedOperationException", message: "Encrypt only" }));
      return;
    }
    const body = JSON.stringify({
      CiphertextBlob: crypto.randomBytes(184).toString("base64"),
      KeyId: arn,
      EncryptionAlgorithm: "SYMMETRIC_DEFAULT",
    });
    const answer = () => {
      if (res.destroyed) return;
      res.writeHead(200, { "content-type": "application/x-amz-json-1.1", "content-length": Buffer.byteLength(body) });
      res.end(body);
    };
    if (latencyMs > 0) setTimeout(answer, latencyMs);
    else answer();
  });
});
server.on("connection", (socket) => {
  if (down) {
    socket.destroy();
    return;
  }
  sockets.add(socket);
  socket.on("close", () => sockets.delete(socket));
});
server.listen(port, "127.0.0.1");

function goDown() {
  down = true;
  server.close();
  for (const socket of sockets) socket.destroy();
  sockets.clear();
}
function goUp() {
  if (upTimer) clearTimeout(upTimer);
  upTimer = null;
  if (!down) return;
  down = false;
  server.listen(port, "127.0.0.1");
}
if (controlPort > 0) {
  http
    .createServer((req, res) => {
      const url = new URL(req.url, "http://control");
      if (url.pathname === "/down") {
        goDown();
        const ms = Number(url.searchParams.get("ms") || 0);
        if (ms > 0) upTimer = setTimeout(goUp, ms);
      } else if (url.pathname === "/up") {
        goUp();
      } else {
        res.writeHead(404);
        res.end();
        return;
      }
      res.writeHead(200);
      res.end(down ? "down\n" : "up\n");
    })
    .listen(controlPort, "127.0.0.1");
}
