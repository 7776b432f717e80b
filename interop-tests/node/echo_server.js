'use strict';
/*
 * A gRPC echo backend on @grpc/grpc-js (pure JavaScript over Node's http2 module), for the
 * interop tests of grpcroute-client. The Node counterpart of ../python/echo_server.py.
 *
 * grpc-js has no catch-all handler (an unregistered path is answered UNIMPLEMENTED), so it
 * answers the method paths given with --method (at least one), with no generated code:
 * each is registered with server.register() as a unary method whose (de)serializers are
 * the identity on Buffers, so the handler gets and returns raw bytes.
 *
 * - the response message is the request message, unchanged (empty in, empty out);
 * - initial metadata `x-echo-backend: <name>`, `x-echo-method: <path>` and
 *   `x-echo-request-<key>: <value>` for every request metadata key grpc-js passes to the
 *   handler (its values joined with `,`; `-bin` keys are skipped), like the Python server.
 *   Node's http2 module has already joined repeated header fields into one value with
 *   `, ` (RFC 9110 list syntax) before grpc-js sees them, so two fields `x-multi: a` and
 *   `x-multi: b` arrive as the single value `a, b`;
 * - request metadata `x-echo-status: <code>` makes it fail with that gRPC status code,
 *   details `node says <x-echo-message> ✓` (non-ASCII on purpose: grpc-js percent-encodes
 *   grpc-message with encodeURI) and trailing metadata `x-echo-trailer: from-node`.
 *
 * Usage: `node echo_server.js --name NAME --method /pkg.Service/Method [--method ...]`.
 * It binds 127.0.0.1 on a free port, prints `PORT <n> grpc-js <version>` on stdout, and
 * serves until killed or until its stdin closes (so it never outlives the test that
 * started it).
 *
 * TCP_NODELAY: nothing to set. grpc-js itself calls setNoDelay() only on the sockets its
 * client connects (build/src/transport.js); its server passes no `noDelay` to
 * http2.createServer (build/src/server.js, `commonServerOptions`) and has no option for
 * it. But Node's http2 module does it for every session, server side included: the
 * Http2Session constructor (lib/internal/http2/core.js, "Do not use nagle's algorithm")
 * calls socket.setNoDelay(). Checked with strace on node v20.20.2 and grpc-js 1.14.7:
 * `setsockopt(fd, SOL_TCP, TCP_NODELAY, [1])` right after each accept4.
 */

const grpc = require('@grpc/grpc-js');
const grpcVersion = require('@grpc/grpc-js/package.json').version;

function parseArgs(argv) {
  const args = { name: null, methods: [] };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    if (argv[i] === '--name' && value !== undefined) {
      args.name = value;
      i++;
    } else if (argv[i] === '--method' && value !== undefined) {
      args.methods.push(value);
      i++;
    } else {
      throw new Error(`unexpected argument ${JSON.stringify(argv[i])}`);
    }
  }
  if (args.name === null || args.methods.length === 0) {
    throw new Error('usage: echo_server.js --name NAME --method PATH [--method PATH ...]');
  }
  return args;
}

function identity(buffer) {
  return buffer;
}

function echoHandler(name) {
  return (call, callback) => {
    const path = call.getPath();
    const joined = groupedMetadata(call.metadata);
    const initial = new grpc.Metadata();
    initial.set('x-echo-backend', name);
    initial.set('x-echo-method', path);
    for (const [key, values] of joined) {
      initial.set('x-echo-request-' + key, values.join(','));
    }
    call.sendMetadata(initial);
    if (joined.has('x-echo-status')) {
      const trailer = new grpc.Metadata();
      trailer.set('x-echo-trailer', 'from-node');
      const message = (joined.get('x-echo-message') || []).join(',');
      callback({
        code: Number.parseInt(joined.get('x-echo-status')[0], 10),
        details: 'node says ' + message + ' \u2713',
        metadata: trailer,
      });
      return;
    }
    callback(null, call.request);
  };
}

/* Every value of every non-binary key, in the order grpc-js holds them. */
function groupedMetadata(metadata) {
  const out = new Map();
  for (const key of Object.keys(metadata.toJSON())) {
    if (key.endsWith('-bin')) {
      continue;
    }
    out.set(key, metadata.get(key).map(String));
  }
  return out;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const server = new grpc.Server();
  for (const method of args.methods) {
    if (!server.register(method, echoHandler(args.name), identity, identity, 'unary')) {
      throw new Error(`method ${method} registered twice`);
    }
  }
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err || port === 0) {
      console.error(`cannot bind 127.0.0.1: ${err ? err.message : 'port 0'}`);
      process.exit(1);
    }
    process.stdout.write(`PORT ${port} grpc-js ${grpcVersion}\n`);
  });

  // Exit when stdin closes: the test process that started us is gone or done with us.
  process.stdin.on('end', () => {
    server.forceShutdown();
    process.exit(0);
  });
  process.stdin.resume();
}

main();
