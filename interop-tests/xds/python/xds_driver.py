#!/usr/bin/env python3
"""An xDS client on gRPC C-core (PyPI grpcio), driven over stdin/stdout.

The oracle of the differential tests (see ../README.md and ../src/oracle/). The bootstrap
comes from GRPC_XDS_BOOTSTRAP. Protocol: one JSON object per line each way.

  first line out: {"hello": {"library": "grpcio", "version": ..., "runtime": ..., ...}}
  in:  {"id": N, "op": "call", "target": "xds:///svc", "method": "/pkg.Svc/M",
        "metadata": [["k", "v"]], "count": N, "timeout_ms": T, "concurrency": C,
        "wait_for_ready": false, "record": false}
  out: {"id": N, "ok": true, "result": {"by_peer": {...}, "by_status": {...},
        "failed_by_peer": {...}, "errors": [...], "elapsed_ms": ..., "calls": [...]}}
  in:  {"id": N, "op": "hold", ... "count": N, "interval_ms": I, "settle_ms": S}
                                                               -> calls kept in flight
  in:  {"id": N, "op": "release", "hold": H}                      -> cancels them
  in:  {"id": N, "op": "csds"}                                    -> per-resource states
  in:  {"id": N, "op": "close", "target": ...}                    -> drops that channel
  in:  {"id": N, "op": "quit"}
  errors: {"id": N, "ok": false, "error": "..."}

Commands run concurrently (one thread each); replies carry the command's id. The process
exits when stdin closes.
"""

import json
import os
import platform
import sys
import threading
import time
from importlib import metadata as importlib_metadata

import grpc
import grpc.experimental  # insecure_channel_credentials: the xDS credentials' fallback
from grpc._cython import cygrpc

# The config types, imported so that CSDS dumps can be turned into JSON (their Any
# payloads must be known to the descriptor pool).
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.service.status.v3 import csds_pb2
from google.protobuf import json_format

OUT_LOCK = threading.Lock()
CHANNELS = {}
CHANNELS_LOCK = threading.Lock()
HOLDS = {}
HOLDS_LOCK = threading.Lock()
NEXT_HOLD = [0]
MAX_ERROR_SAMPLES = 5


def emit(obj):
    line = json.dumps(obj, separators=(",", ":"))
    with OUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def channel(target):
    with CHANNELS_LOCK:
        ch = CHANNELS.get(target)
        if ch is None:
            if os.environ.get("XDS_DRIVER_XDS_CREDENTIALS") == "1":
                # gRFC A29: TLS clusters use the bootstrap's certificate providers; other
                # clusters fall back to plaintext.
                creds = grpc.xds_channel_credentials(
                    grpc.experimental.insecure_channel_credentials()
                )
                ch = grpc.secure_channel(target, creds)
            else:
                ch = grpc.insecure_channel(target)
            CHANNELS[target] = ch
        return ch


def metadata_value(md, key):
    for k, v in md or ():
        if k == key:
            return v
    return None


class Tally:
    """Outcomes of a batch of calls."""

    def __init__(self, record):
        self.lock = threading.Lock()
        self.by_peer = {}
        self.by_status = {}
        self.failed_by_peer = {}
        self.errors = []
        self.record = record
        self.calls = []

    def add(self, index, code, peer, message, ms):
        name = code.name
        with self.lock:
            self.by_status[name] = self.by_status.get(name, 0) + 1
            if peer is not None:
                bucket = self.by_peer if code == grpc.StatusCode.OK else self.failed_by_peer
                bucket[peer] = bucket.get(peer, 0) + 1
            if code != grpc.StatusCode.OK:
                sample = f"{name}: {message}"
                if len(self.errors) < MAX_ERROR_SAMPLES and sample not in self.errors:
                    self.errors.append(sample)
            if self.record:
                self.calls.append(
                    {"index": index, "peer": peer, "status": name, "ms": ms,
                     "message": message if code != grpc.StatusCode.OK else None})

    def result(self, elapsed_ms):
        out = {
            "by_peer": self.by_peer,
            "by_status": self.by_status,
            "failed_by_peer": self.failed_by_peer,
            "errors": self.errors,
            "elapsed_ms": elapsed_ms,
        }
        if self.record:
            out["calls"] = sorted(self.calls, key=lambda c: c["index"])
        return out


def outcome(future):
    """(code, peer, message) of a finished call future."""
    try:
        code = future.code()
        message = future.details()
    except grpc.FutureCancelledError:
        return grpc.StatusCode.CANCELLED, None, "cancelled"
    peer = None
    try:
        peer = metadata_value(future.initial_metadata(), "hostname")
        if peer is None:
            peer = metadata_value(future.trailing_metadata(), "hostname")
    except Exception:  # noqa: BLE001 - no metadata on some failures
        peer = None
    return code, peer, message


def start_call(cmd, callback):
    stub = channel(cmd["target"]).unary_unary(cmd["method"])
    # grpcio wants bytes for binary (`-bin`) metadata.
    md = [(k, v.encode() if k.endswith("-bin") else v) for k, v in cmd.get("metadata", [])]
    timeout_ms = cmd.get("timeout_ms", 10000)
    future = stub.future(
        b"",
        # 0: no deadline.
        timeout=timeout_ms / 1000.0 if timeout_ms else None,
        metadata=md,
        wait_for_ready=bool(cmd.get("wait_for_ready", False)),
    )
    future.add_done_callback(callback)
    return future


def op_call(cmd):
    count = int(cmd.get("count", 1))
    concurrency = max(1, int(cmd.get("concurrency", 1)))
    tally = Tally(bool(cmd.get("record", False)))
    slots = threading.Semaphore(concurrency)
    all_done = threading.Semaphore(0)
    started = time.monotonic()

    for i in range(count):
        slots.acquire()
        t0 = time.monotonic()

        def done(f, i=i, t0=t0):
            code, peer, message = outcome(f)
            tally.add(i, code, peer, message, (time.monotonic() - t0) * 1000.0)
            slots.release()
            all_done.release()

        start_call(cmd, done)
    for _ in range(count):
        all_done.acquire()
    return tally.result((time.monotonic() - started) * 1000.0)


def op_hold(cmd):
    count = int(cmd.get("count", 1))
    tally = Tally(False)
    futures = []
    started = time.monotonic()
    interval = int(cmd.get("interval_ms", 0)) / 1000.0
    for i in range(count):
        if i > 0 and interval > 0:
            time.sleep(interval)
        t0 = time.monotonic()

        def done(f, i=i, t0=t0):
            code, peer, message = outcome(f)
            tally.add(i, code, peer, message, (time.monotonic() - t0) * 1000.0)

        futures.append(start_call(cmd, done))
    time.sleep(int(cmd.get("settle_ms", 1000)) / 1000.0)
    with HOLDS_LOCK:
        NEXT_HOLD[0] += 1
        hold = NEXT_HOLD[0]
        HOLDS[hold] = (futures, tally, started)
    return hold_report(hold, futures, tally, started)


def hold_report(hold, futures, tally, started):
    in_flight = sum(1 for f in futures if not f.done())
    with tally.lock:
        result = tally.result((time.monotonic() - started) * 1000.0)
    result["hold"] = hold
    result["in_flight"] = in_flight
    return result


def op_release(cmd):
    hold = int(cmd["hold"])
    with HOLDS_LOCK:
        futures, tally, started = HOLDS.pop(hold)
    for f in futures:
        f.cancel()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        time.sleep(0.01)
    time.sleep(0.05)  # let the done-callbacks run
    return hold_report(hold, futures, tally, started)


def enum_name(message, field):
    """The name of an enum field's value (the enum lives in another module)."""
    enum = message.DESCRIPTOR.fields_by_name[field].enum_type
    value = enum.values_by_number.get(getattr(message, field))
    return value.name if value is not None else str(getattr(message, field))


def op_csds(cmd):
    dump = csds_pb2.ClientStatusResponse.FromString(cygrpc.dump_xds_configs())
    resources = []
    for config in dump.config:
        for g in config.generic_xds_configs:
            entry = {
                "client_scope": config.client_scope,
                "type_url": g.type_url,
                "name": g.name,
                "version": g.version_info,
                "status": enum_name(g, "client_status"),
                "error": None,
                "error_version": None,
                "config": None,
            }
            if g.HasField("error_state"):
                entry["error"] = g.error_state.details
                entry["error_version"] = g.error_state.version_info
            if cmd.get("configs") and g.HasField("xds_config"):
                try:
                    entry["config"] = json_format.MessageToDict(g.xds_config)
                except Exception as e:  # noqa: BLE001 - unknown nested Any types
                    entry["config"] = {"undecodable": str(e)}
            resources.append(entry)
    return {"resources": resources}


def op_close(cmd):
    with CHANNELS_LOCK:
        ch = CHANNELS.pop(cmd["target"], None)
    if ch is not None:
        ch.close()
    return {}


OPS = {
    "call": op_call,
    "hold": op_hold,
    "release": op_release,
    "csds": op_csds,
    "close": op_close,
}


def run(cmd):
    cid = cmd.get("id")
    try:
        result = OPS[cmd["op"]](cmd)
        emit({"id": cid, "ok": True, "result": result})
    except Exception as e:  # noqa: BLE001 - every failure goes back to the test
        emit({"id": cid, "ok": False, "error": f"{type(e).__name__}: {e}"})


def main():
    emit({"hello": {
        "library": "grpcio",
        "version": grpc.__version__,
        "runtime": f"Python {platform.python_version()}",
        "xds_protos": importlib_metadata.version("xds-protos"),
        "protobuf": importlib_metadata.version("protobuf"),
    }})
    workers = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit({"id": None, "ok": False, "error": f"bad command: {e}"})
            continue
        if cmd.get("op") == "quit":
            emit({"id": cmd.get("id"), "ok": True, "result": {}})
            break
        worker = threading.Thread(target=run, args=(cmd,), daemon=True)
        worker.start()
        workers.append(worker)
    # Let commands sent before "quit" answer (bounded: calls have deadlines).
    deadline = time.monotonic() + 5
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    with CHANNELS_LOCK:
        for ch in CHANNELS.values():
            ch.close()
    sys.stdout.flush()
    # Daemon threads with calls in flight must not keep the process alive.
    import os
    os._exit(0)


if __name__ == "__main__":
    main()
