"""A gRPC echo backend on grpcio (gRPC C-core), for the interop tests of grpcroute-client.

It answers every method (no generated code: a generic handler, raw bytes in and out):

- the response message is the request message, unchanged (empty in, empty out);
- initial metadata ``x-echo-backend: <name>``, ``x-echo-method: <path>`` and
  ``x-echo-request-<key>: <value>`` for every request metadata key (repeated keys joined
  with ``,``; ``-bin`` keys are skipped), like the Rust echo server;
- request metadata ``x-echo-status: <code>`` makes it fail with that gRPC status code,
  details ``python says <x-echo-message> ✓`` (non-ASCII on purpose: grpc-message is
  percent-encoded on the wire) and trailing metadata ``x-echo-trailer: from-python``.

Usage: ``python echo_server.py --name NAME``. It binds 127.0.0.1 on a free port, prints
``PORT <n>`` on stdout, and serves until killed or until its stdin closes (so it never
outlives the test that started it). gRPC C-core sets TCP_NODELAY on every TCP socket it
creates or accepts, so no option is needed for that.
"""

import argparse
import sys
import threading
from concurrent import futures

import grpc


def status_code(value):
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


class AnyMethod(grpc.GenericRpcHandler):
    def __init__(self, name):
        self.name = name

    def service(self, handler_call_details):
        method = handler_call_details.method

        def handle(request, context):
            joined = {}
            for key, value in context.invocation_metadata():
                if key.endswith("-bin"):
                    continue
                joined.setdefault(key, []).append(value)
            initial = [("x-echo-backend", self.name), ("x-echo-method", method)]
            for key, values in joined.items():
                initial.append(("x-echo-request-" + key, ",".join(values)))
            context.send_initial_metadata(initial)
            if "x-echo-status" in joined:
                code = status_code(int(joined["x-echo-status"][0]))
                message = ",".join(joined.get("x-echo-message", []))
                context.set_trailing_metadata([("x-echo-trailer", "from-python")])
                context.abort(code, "python says " + message + " \u2713")
            return request

        # No (de)serializers: the handler gets and returns bytes.
        return grpc.unary_unary_rpc_method_handler(handle)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    args = parser.parse_args()

    # No SO_REUSEPORT: the port is this server's alone.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((AnyMethod(args.name),))
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        print("cannot bind 127.0.0.1", file=sys.stderr)
        sys.exit(1)
    server.start()
    print(f"PORT {port} grpcio {grpc.__version__}", flush=True)

    def stop_when_stdin_closes():
        sys.stdin.read()
        server.stop(0)

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
