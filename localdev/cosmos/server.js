#!/usr/bin/env node
// Local Cosmos DB NoSQL server for dev/CI: @vercel/cosmosdb-server plus a working
// latest-version change feed. Everything is patched at require time from this file so
// a fresh `npm ci` (node_modules is not committed) gives a working server.
//
// Usage: node localdev/cosmos/server.js [--port 8081] [--host 127.0.0.1] [--https]
// Prints "READY <port>" on stdout once listening (--port 0 picks a free port).
"use strict";

const path = require("path");

const PKG = path.dirname(require.resolve("@vercel/cosmosdb-server/package.json"));
const lib = (p) => require(path.join(PKG, "lib", p));

const cosmosServer = lib("index");
const routesModule = lib("routes");
const Items = lib("account/items").default;
const Documents = lib("account/documents").default;
const readDocuments = lib("handler/read-documents").default;
const readDocument = lib("handler/read-document").default;
const readMeta = lib("handler/read-meta").default;
const { parsePartitionKey } = lib("utils/get-partition-from-header");

// @azure/cosmos's package "exports" hides its hashing module; an absolute path bypasses
// that. This is the same EPK hashing the SDKs use to build feed ranges.
const { hashPartitionKey } = require(
  path.join(path.dirname(require.resolve("@azure/cosmos")), "utils", "hashing", "hash.js")
);

function parseArgs(argv) {
  const opts = { port: 8081, host: "127.0.0.1", https: false };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const [flag, inline] = a.includes("=") ? a.split(/=(.*)/s) : [a, undefined];
    const value = () => (inline !== undefined ? inline : argv[++i]);
    if (flag === "--port") opts.port = parseInt(value(), 10);
    else if (flag === "--host") opts.host = value();
    else if (flag === "--https") opts.https = true;
    else if (flag === "--http") opts.https = false;
    else {
      process.stderr.write(`unknown argument: ${a}\n`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    process.stderr.write("invalid --port\n");
    process.exit(2);
  }
  return opts;
}

// ---------------------------------------------------------------------------
// Change feed log
// ---------------------------------------------------------------------------

// One sequence for the whole account, like an LSN: continuations stay comparable
// across partition-key and feed-range scopes.
let globalLsn = 0;

const NOT_FOUND = {
  code: "NotFound",
  message: "Entity with the specified id does not exist in the system.",
};

function getPath(doc, pkPath) {
  let v = doc;
  for (const seg of pkPath.slice(1).split("/")) {
    if (v === null || typeof v !== "object") return undefined;
    v = v[seg];
  }
  return v;
}

function pkDefinition(documents) {
  const coll = documents._parent.read();
  return (coll && coll.partitionKey) || { paths: ["/id"], kind: "Hash" };
}

function epkOf(def, values) {
  try {
    return hashPartitionKey(values, def);
  } catch (err) {
    // Values the hasher rejects (e.g. missing key): only full-range reads see the doc.
    return null;
  }
}

// Append-only per-collection log of (lsn, rid, epk, write time). LSNs are appended in
// increasing order, so a continuation is a binary search; entries superseded by a later
// write or a delete are skipped on read and dropped by compaction.
class FeedLog {
  constructor() {
    this.lsn = [];
    this.rid = [];
    this.epk = [];
    this.tms = [];
  }

  append(lsn, rid, epk, tms) {
    this.lsn.push(lsn);
    this.rid.push(rid);
    this.epk.push(epk);
    this.tms.push(tms);
  }

  firstAfter(lsn) {
    let lo = 0;
    let hi = this.lsn.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.lsn[mid] <= lsn) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  compact(data) {
    const keep = new FeedLog();
    for (let i = 0; i < this.lsn.length; i += 1) {
      const item = data.get(this.rid[i]);
      if (item && item.read()._lsn === this.lsn[i]) {
        keep.append(this.lsn[i], this.rid[i], this.epk[i], this.tms[i]);
      }
    }
    Object.assign(this, keep);
  }
}

function feedLog(documents) {
  if (!documents._feedLog) documents._feedLog = new FeedLog();
  return documents._feedLog;
}

// Every document write (create, replace, upsert, patch, batch) ends in Items#_set with
// a fresh object, so stamping _lsn here covers them all.
Documents.prototype._set = function setWithLsn(data) {
  globalLsn += 1;
  data._lsn = globalLsn;
  const result = Items.prototype._set.call(this, data);
  const def = pkDefinition(this);
  const log = feedLog(this);
  log.append(globalLsn, data._rid, epkOf(def, def.paths.map((p) => getPath(data, p))), Date.now());
  if (log.lsn.length > 1024 && log.lsn.length > 2 * this._data.size) log.compact(this._data);
  return result;
};

function header(req, name) {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function badRequest(res, message) {
  res.statusCode = 400;
  return { code: "BadRequest", message };
}

// Scope filter from the request: one partition key (x-ms-documentdb-partitionkey) or an
// EPK range (x-ms-start-epk/x-ms-end-epk; equal bounds mean a single key's point range).
function scopeFilter(req, documents) {
  const pkHeader = header(req, "x-ms-documentdb-partitionkey");
  if (pkHeader && pkHeader !== "[{}]" && pkHeader !== "[]") {
    let values;
    try {
      values = JSON.parse(pkHeader);
    } catch (err) {
      return { error: `invalid x-ms-documentdb-partitionkey: ${pkHeader}` };
    }
    if (!Array.isArray(values)) values = [values];
    const target = epkOf(pkDefinition(documents), values);
    return { match: (epk) => epk === target };
  }
  const min = header(req, "x-ms-start-epk");
  const max = header(req, "x-ms-end-epk");
  if (min === undefined && max === undefined) return { match: null };
  const lo = min || "";
  const hi = max === undefined ? "FF" : max;
  if (lo === hi) return { match: (epk) => epk === lo };
  if (lo === "" && hi === "FF") return { match: null };
  return { match: (epk) => epk !== null && epk >= lo && epk < hi };
}

function changeFeedHandler(account, req, res, { dbId, collId }) {
  // The package's response wrapper rewrites any 200 carrying A-IM into a stub 304 with
  // etag "1"; dropping the header after routing keeps our answer intact.
  const aim = header(req, "a-im");
  delete req.headers["a-im"];

  const collection = account.database(dbId).collection(collId);
  if (!collection.read()) {
    res.statusCode = 404;
    return { ...NOT_FOUND };
  }
  if (!/^incremental feed$/i.test(aim || "")) {
    return badRequest(res, `change feed mode '${aim}' is not supported (only LatestVersion)`);
  }

  const documents = collection.documents;
  const log = feedLog(documents);

  let after = 0;
  const ifNoneMatch = header(req, "if-none-match");
  if (ifNoneMatch === "*") {
    after = globalLsn;
  } else if (ifNoneMatch) {
    after = Number(ifNoneMatch.replace(/^W\//, "").replace(/"/g, ""));
    if (!Number.isSafeInteger(after) || after < 0) {
      return badRequest(res, `invalid change feed continuation: ${ifNoneMatch}`);
    }
  }
  let sinceMs = null;
  const ims = header(req, "if-modified-since");
  if (ims) {
    sinceMs = Date.parse(ims);
    if (Number.isNaN(sinceMs)) return badRequest(res, `invalid If-Modified-Since: ${ims}`);
  }
  const scope = scopeFilter(req, documents);
  if (scope.error) return badRequest(res, scope.error);

  let max = parseInt(header(req, "x-ms-max-item-count") || "100", 10);
  if (!Number.isInteger(max) || max <= 0) max = Infinity;

  const out = [];
  let continuation = globalLsn;
  for (let i = log.firstAfter(after); i < log.lsn.length; i += 1) {
    const item = documents._data.get(log.rid[i]);
    const doc = item && item.read();
    // Only the newest version of a document is in the feed; deleted ones are gone.
    if (!doc || doc._lsn !== log.lsn[i]) continue;
    if (sinceMs !== null && log.tms[i] < sinceMs) continue;
    if (scope.match && !scope.match(log.epk[i])) continue;
    out.push(doc);
    if (out.length >= max) {
      continuation = log.lsn[i];
      break;
    }
  }

  const etag = `"${continuation}"`;
  res.setHeader("etag", etag);
  res.setHeader("lsn", String(continuation));
  res.setHeader("x-ms-item-count", String(out.length));
  if (out.length === 0) {
    res.statusCode = 304;
    return {};
  }
  res.statusCode = 200;
  return { _rid: collection.read()._rid, Documents: out, _count: out.length };
}

// The stock handler answers 500 (TypeError) for a missing document; Cosmos says 404.
function readDocumentHandler(account, req, res, params) {
  const collection = account.database(params.dbId).collection(params.collId);
  const pk = header(req, "x-ms-documentdb-partitionkey");
  if (collection.read() && pk) {
    let doc;
    try {
      doc = collection.document(params.docId, parsePartitionKey(pk, params.docId)).read();
    } catch (err) {
      doc = null;
    }
    if (!doc) {
      res.statusCode = 404;
      return { ...NOT_FOUND };
    }
  }
  return readDocument(account, req, res, params);
}

function makeReadMeta(scheme) {
  // The stock account metadata always advertises https:// endpoints.
  return (account) => {
    const meta = readMeta(account);
    if (scheme === "https") return meta;
    const fix = (locs) =>
      (locs || []).map((l) => ({
        ...l,
        databaseAccountEndpoint: l.databaseAccountEndpoint.replace(/^https:/, "http:"),
      }));
    return { ...meta, writableLocations: fix(meta.writableLocations), readableLocations: fix(meta.readableLocations) };
  };
}

function installRoutes(scheme) {
  const route = routesModule.default;
  const metaHandler = makeReadMeta(scheme);
  // index.js looks up routes_1.default at request time, so replacing it here takes effect.
  routesModule.default = (req) => {
    const found = route(req);
    if (!found) return found;
    const [params, handler] = found;
    if (handler === readDocuments && req.headers["a-im"]) return [params, changeFeedHandler];
    if (handler === readDocument) return [params, readDocumentHandler];
    if (handler === readMeta) return [params, metaHandler];
    return found;
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  installRoutes(opts.https ? "https" : "http");
  const server = opts.https
    ? cosmosServer.createHttpsServer({ keepAlive: true })
    : cosmosServer.createHttpServer({ keepAlive: true });
  // Longer than client pool idle times, so clients rarely reuse a socket we just closed.
  server.keepAliveTimeout = 120000;
  server.headersTimeout = 121000;

  const sockets = new Set();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("error", (err) => {
    process.stderr.write(`cosmos server error: ${err.stack || err}\n`);
    process.exit(1);
  });
  server.listen(opts.port, opts.host, () => {
    process.stdout.write(`READY ${server.address().port}\n`);
  });

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    server.close(() => process.exit(0));
    // Keep-alive sockets would hold close() open; drop them.
    for (const s of sockets) s.destroy();
    setTimeout(() => process.exit(0), 2000).unref();
    process.stderr.write(`cosmos server stopping (${signal})\n`);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

if (require.main === module) main();

module.exports = { parseArgs };
