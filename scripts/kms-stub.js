// A KMS endpoint that answers only Encrypt, at once, with a random
// ciphertext blob: enough to drive the broker's AWS SDK path (signing,
// HTTP, JSON) at millions of calls for scripts/memory-soak, where moto
// answers a hundred or so a second. Not a KMS: it checks nothing.
// Usage: node scripts/kms-stub.js PORT
const http = require("http");
const crypto = require("crypto");
const port = Number(process.argv[2]);
const arn = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000";
http
  .createServer((req, res) => {
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
      res.writeHead(200, { "content-type": "application/x-amz-json-1.1", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  })
  .listen(port, "127.0.0.1");
