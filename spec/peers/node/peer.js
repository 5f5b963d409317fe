// Node ws peer for spec/interop_deflate_spec.lua: permessage-deflate with the options
// the spec gives (ws's perMessageDeflate object, JSON; false: none).
//
// usage: node peer.js server OPTIONS [--tls CERT KEY]
//          listens on 127.0.0.1 (port chosen by the system; with --tls over TLS, wss://,
//          with that certificate and key), prints the port on the
//          first line, then for each connection "EXTENSIONS <its answer>" and echoes every
//          message with its type; messages of a size in BIG_SIZES are checked against the
//          shared payload ("RECEIVED <text|binary> <size> ok" or "MISMATCH ...").
//        node peer.js client URL RESULT MODE OPTIONS [--cafile CA]
//          (a wss:// URL verified against CA with --cafile) sends the shared messages (MODE "messages": 0 B to 1 MiB; "big": 16 MiB),
//          each text and binary, reads each echo and writes to RESULT the lines
//          "extensions <the server's answer>", "echo <text|binary> <size> ok|MISMATCH ...", "END"
//          (or "error ..." before END), as spec/peers/py_client.py does.
"use strict";
const fs = require("fs");
const https = require("https");
const path = require("path");
const WebSocket = require(path.join(__dirname, "node_modules", "ws"));

const SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1048576];
const BIG_SIZES = [16 << 20];
const UNIT = Buffer.from("ab\u20ac\u00e9\u{1F600}-0123", "utf8"); // 16 bytes

function text(n) {
  const b = Buffer.alloc(n, "x");
  for (let i = 0; i + 16 <= n; i += 16) UNIT.copy(b, i);
  return b;
}

function binary(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + (i >> 8) * 17 + 7) & 255;
  return b;
}

function compare(isBinary, got, wantBinary, want) {
  if (isBinary !== wantBinary) return "MISMATCH type";
  if (got.length !== want.length) return "MISMATCH length " + got.length;
  const i = got.findIndex((v, k) => v !== want[k]);
  return i < 0 ? "ok" : "MISMATCH at byte " + i;
}

function server(options, tls) {
  let wss;
  if (tls) {
    const https_server = https.createServer({ cert: fs.readFileSync(tls[0]), key: fs.readFileSync(tls[1]) });
    wss = new WebSocket.Server({ server: https_server, perMessageDeflate: options, maxPayload: 0 });
    https_server.listen(0, "127.0.0.1", () => console.log(String(https_server.address().port)));
  } else {
    wss = new WebSocket.Server({ host: "127.0.0.1", port: 0, perMessageDeflate: options,
      maxPayload: 0 });
    wss.on("listening", () => console.log(String(wss.address().port)));
  }
  wss.on("headers", (headers) => {
    const ext = headers.find((h) => /^sec-websocket-extensions:/i.test(h));
    console.log("EXTENSIONS " + (ext ? ext.replace(/^[^:]*:\s*/, "") : "none"));
  });
  wss.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => {
      if (BIG_SIZES.includes(data.length)) {
        const want = isBinary ? binary(data.length) : text(data.length);
        console.log(`RECEIVED ${isBinary ? "binary" : "text"} ${data.length} ${compare(isBinary, data, isBinary, want)}`);
      }
      ws.send(data, { binary: isBinary });
    });
  });
}

function client(url, result, mode, options, cafile) {
  const lines = [];
  const finish = (err) => {
    if (err) lines.push("error " + err);
    lines.push("END");
    fs.writeFileSync(result + ".tmp", lines.join("\n") + "\n");
    fs.renameSync(result + ".tmp", result);
    process.exit(0);
  };
  setTimeout(() => finish("timed out"), 60000).unref();
  const ws = new WebSocket(url, { perMessageDeflate: options, maxPayload: 0,
    ca: cafile ? fs.readFileSync(cafile) : undefined });
  const script = [];
  for (const n of mode === "big" ? BIG_SIZES : SIZES) {
    script.push(["text", n, false, text(n)], ["binary", n, true, binary(n)]);
  }
  let at = 0;
  const next = () => {
    if (at === script.length) {
      ws.close(1000, "bye from node");
      return;
    }
    const [, , isBinary, payload] = script[at];
    ws.send(payload, { binary: isBinary });
  };
  ws.on("upgrade", (res) => {
    lines.push("extensions " + (res.headers["sec-websocket-extensions"] || "none"));
  });
  ws.on("open", next);
  ws.on("message", (data, isBinary) => {
    const [kind, n, wantBinary, payload] = script[at];
    lines.push(`echo ${kind} ${n} ${compare(isBinary, data, wantBinary, payload)}`);
    at++;
    next();
  });
  ws.on("close", (code, reason) => {
    lines.push(`close ${code} ${reason}`);
    finish();
  });
  ws.on("error", (err) => finish(err.message));
}

const [role, ...args] = process.argv.slice(2);
if (role === "server") server(JSON.parse(args[0]), args[1] === "--tls" ? args.slice(2, 4) : null);
else client(args[0], args[1], args[2], JSON.parse(args[3]), args[4] === "--cafile" ? args[5] : null);
