"""A gRPC echo backend on grpcio (gRPC C-core) over mutual TLS, for the TLS interop test of
grpcroute-client.

It serves with ``grpc.ssl_server_credentials(..., require_client_auth=True)``: the client
must present a certificate signed by the given CA. Every method answers with the request
message unchanged and initial metadata

- ``x-echo-backend: <name>``;
- ``x-caller: <SPIFFE ID>``: the caller's identity as C-core's auth context reports it
  (``peer_spiffe_id`` when C-core sets it, else the certificate's first ``spiffe://``
  subject alternative name);
- ``x-transport-security: <type>`` from the auth context (``ssl`` for TLS).

A caller whose SPIFFE ID is not ``--allow`` (when given) gets PERMISSION_DENIED, with
details naming the ID: what a server authorizing callers by SPIFFE ID does.

Usage: ``python tls_echo_server.py --name NAME --cert CHAIN --key KEY --ca CA [--allow ID]``.
It binds 127.0.0.1 on a free port, prints ``PORT <n> grpcio <version>`` on stdout, and
serves until its stdin closes.
"""

import argparse
import sys
import threading
from concurrent import futures

import grpc


def caller_id(context):
    auth = context.auth_context()
    for value in auth.get("peer_spiffe_id", []):
        return value.decode()
    for value in auth.get("x509_subject_alternative_name", []):
        if value.startswith(b"spiffe://"):
            return value.decode()
    return "none"


class AnyMethod(grpc.GenericRpcHandler):
    def __init__(self, name, allow):
        self.name = name
        self.allow = allow

    def service(self, handler_call_details):
        def handle(request, context):
            caller = caller_id(context)
            security = b",".join(
                context.auth_context().get("transport_security_type", [])
            ).decode()
            context.send_initial_metadata(
                [
                    ("x-echo-backend", self.name),
                    ("x-caller", caller),
                    ("x-transport-security", security),
                ]
            )
            if self.allow is not None and caller != self.allow:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, caller + " may not call")
            return request

        return grpc.unary_unary_rpc_method_handler(handle)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--allow")
    args = parser.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_server_credentials(
        [(read(args.key), read(args.cert))],
        root_certificates=read(args.ca),
        require_client_auth=True,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((AnyMethod(args.name, args.allow),))
    port = server.add_secure_port("127.0.0.1:0", credentials)
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
