#!/usr/bin/env node
// An xDS client on @grpc/grpc-js-xds, driven over stdin/stdout: the second oracle of the
// differential tests. Same protocol as ../python/xds_driver.py (see its docstring and
// ../README.md). The bootstrap comes from GRPC_XDS_BOOTSTRAP.
//
// CSDS: grpc-js-xds registers a CSDS admin service (csds.js) but exposes no function that
// returns the dump, so the driver serves the admin services on 127.0.0.1:0 and calls its
// own FetchClientStatus.
'use strict';

const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const grpcXds = require('@grpc/grpc-js-xds');
const protoLoader = require('@grpc/proto-loader');

grpcXds.register();

const MAX_ERROR_SAMPLES = 5;
const channels = new Map();
const holds = new Map();
let nextHold = 0;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function packageVersion(name) {
  // Read package.json from disk: packages with an "exports" map refuse the subpath.
  const main = require.resolve(name);
  let dir = path.dirname(main);
  while (dir !== path.dirname(dir)) {
    const candidate = path.join(dir, 'package.json');
    try {
      const pkg = require(candidate);
      if (pkg.name === name) return pkg.version;
    } catch (e) {
      // keep looking upwards
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}

function client(target) {
  let c = channels.get(target);
  if (!c) {
    c = new grpc.Client(target, grpc.credentials.createInsecure());
    channels.set(target, c);
  }
  return c;
}

const codeNames = {};
for (const [name, code] of Object.entries(grpc.status)) {
  if (typeof code === 'number') codeNames[code] = name;
}

class Tally {
  constructor(record) {
    this.byPeer = {};
    this.byStatus = {};
    this.failedByPeer = {};
    this.errors = [];
    this.record = record;
    this.calls = [];
  }

  add(index, code, peer, message, ms) {
    const name = codeNames[code] || String(code);
    this.byStatus[name] = (this.byStatus[name] || 0) + 1;
    if (peer !== null) {
      const bucket = code === grpc.status.OK ? this.byPeer : this.failedByPeer;
      bucket[peer] = (bucket[peer] || 0) + 1;
    }
    if (code !== grpc.status.OK) {
      const sample = `${name}: ${message}`;
      if (this.errors.length < MAX_ERROR_SAMPLES && !this.errors.includes(sample)) {
        this.errors.push(sample);
      }
    }
    if (this.record) {
      this.calls.push({index, peer, status: name, ms,
                       message: code === grpc.status.OK ? null : message});
    }
  }

  result(elapsedMs) {
    const out = {
      by_peer: this.byPeer,
      by_status: this.byStatus,
      failed_by_peer: this.failedByPeer,
      errors: this.errors,
      elapsed_ms: elapsedMs,
    };
    if (this.record) out.calls = [...this.calls].sort((a, b) => a.index - b.index);
    return out;
  }
}

function firstValue(md, key) {
  if (!md) return null;
  const v = md.get(key);
  return v.length > 0 ? String(v[0]) : null;
}

// Starts one call; `done(code, peer, message)` runs once when it ends.
function startCall(cmd, done) {
  const md = new grpc.Metadata();
  // grpc-js wants Buffers for binary (`-bin`) metadata.
  for (const [k, v] of cmd.metadata || []) md.add(k, k.endsWith('-bin') ? Buffer.from(v) : v);
  // 0: no deadline.
  const timeoutMs = cmd.timeout_ms ?? 10000;
  const deadline = timeoutMs === 0 ? Infinity : new Date(Date.now() + timeoutMs);
  let peer = null;
  const call = client(cmd.target).makeUnaryRequest(
    cmd.method, (b) => b, (b) => b, Buffer.alloc(0), md,
    {deadline, waitForReady: !!cmd.wait_for_ready},
    (err) => {
      if (err) {
        if (peer === null) peer = firstValue(err.metadata, 'hostname');
        done(err.code, peer, err.details);
      } else {
        done(grpc.status.OK, peer, '');
      }
    });
  call.on('metadata', (m) => {
    const h = firstValue(m, 'hostname');
    if (h !== null) peer = h;
  });
  return call;
}

function opCall(cmd) {
  const count = cmd.count ?? 1;
  const concurrency = Math.max(1, cmd.concurrency ?? 1);
  const tally = new Tally(!!cmd.record);
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    let next = 0;
    let finished = 0;
    const launch = () => {
      if (next >= count) return;
      const index = next++;
      const t0 = process.hrtime.bigint();
      startCall(cmd, (code, peer, message) => {
        tally.add(index, code, peer, message, Number(process.hrtime.bigint() - t0) / 1e6);
        finished++;
        if (finished === count) {
          resolve(tally.result(Number(process.hrtime.bigint() - started) / 1e6));
        } else {
          launch();
        }
      });
    };
    if (count === 0) {
      resolve(tally.result(0));
      return;
    }
    for (let i = 0; i < Math.min(concurrency, count); i++) launch();
  });
}

function holdReport(hold, entry) {
  const result = entry.tally.result(Number(process.hrtime.bigint() - entry.started) / 1e6);
  result.hold = hold;
  result.in_flight = entry.pending.size;
  return result;
}

async function opHold(cmd) {
  const count = cmd.count ?? 1;
  const entry = {tally: new Tally(false), pending: new Map(), started: process.hrtime.bigint()};
  const hold = ++nextHold;
  holds.set(hold, entry);
  for (let i = 0; i < count; i++) {
    if (i > 0 && (cmd.interval_ms ?? 0) > 0) {
      await new Promise((r) => setTimeout(r, cmd.interval_ms));
    }
    const t0 = process.hrtime.bigint();
    const call = startCall(cmd, (code, peer, message) => {
      entry.pending.delete(i);
      entry.tally.add(i, code, peer, message, Number(process.hrtime.bigint() - t0) / 1e6);
    });
    entry.pending.set(i, call);
  }
  await new Promise((r) => setTimeout(r, cmd.settle_ms ?? 1000));
  return holdReport(hold, entry);
}

async function opRelease(cmd) {
  const entry = holds.get(cmd.hold);
  if (!entry) throw new Error(`no hold ${cmd.hold}`);
  holds.delete(cmd.hold);
  for (const call of entry.pending.values()) call.cancel();
  const until = Date.now() + 10000;
  while (entry.pending.size > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 10));
  }
  return holdReport(cmd.hold, entry);
}

let csdsClient = null;
async function csds() {
  if (!csdsClient) {
    const server = new grpc.Server();
    grpc.addAdminServicesToServer(server);
    const port = await new Promise((resolve, reject) => {
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
                       (err, p) => (err ? reject(err) : resolve(p)));
    });
    const deps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds')), '..', '..', 'deps');
    const definition = protoLoader.loadSync('envoy/service/status/v3/csds.proto', {
      keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
      includeDirs: ['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis']
        .map((d) => path.join(deps, d)),
    });
    const pkg = grpc.loadPackageDefinition(definition);
    const Service = pkg.envoy.service.status.v3.ClientStatusDiscoveryService;
    csdsClient = new Service(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }
  return new Promise((resolve, reject) => {
    csdsClient.FetchClientStatus({}, {deadline: new Date(Date.now() + 10000)},
                                 (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function opCsds() {
  const response = await csds();
  const resources = [];
  for (const config of response.config || []) {
    for (const g of config.generic_xds_configs || []) {
      resources.push({
        client_scope: config.client_scope || '',
        type_url: g.type_url,
        name: g.name,
        version: g.version_info,
        status: g.client_status,
        error: g.error_state ? g.error_state.details : null,
        error_version: g.error_state ? g.error_state.version_info : null,
        config: null,
      });
    }
  }
  return {resources};
}

function opClose(cmd) {
  const c = channels.get(cmd.target);
  if (c) {
    channels.delete(cmd.target);
    c.close();
  }
  return {};
}

const ops = {call: opCall, hold: opHold, release: opRelease, csds: opCsds, close: opClose};

async function run(cmd) {
  try {
    const op = ops[cmd.op];
    if (!op) throw new Error(`unknown op ${cmd.op}`);
    const result = await op(cmd);
    emit({id: cmd.id, ok: true, result});
  } catch (e) {
    emit({id: cmd.id, ok: false, error: String(e && e.stack ? e.message : e)});
  }
}

function main() {
  emit({hello: {
    library: '@grpc/grpc-js-xds',
    version: packageVersion('@grpc/grpc-js-xds'),
    runtime: `Node ${process.version}`,
    grpc_js: packageVersion('@grpc/grpc-js'),
  }});
  const running = new Set();
  const rl = readline.createInterface({input: process.stdin});
  const quit = async () => {
    // Let commands sent before "quit" answer (bounded: calls have deadlines).
    await Promise.race([Promise.all(running), new Promise((r) => setTimeout(r, 5000))]);
    process.exit(0);
  };
  rl.on('line', (line) => {
    line = line.trim();
    if (!line) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      emit({id: null, ok: false, error: `bad command: ${e.message}`});
      return;
    }
    if (cmd.op === 'quit') {
      emit({id: cmd.id, ok: true, result: {}});
      quit();
      return;
    }
    const p = run(cmd).finally(() => running.delete(p));
    running.add(p);
  });
  rl.on('close', quit);
}

main();
