//! Wire interop with another independent gRPC implementation: backends served by Node
//! `@grpc/grpc-js` (pure JavaScript over Node's `http2` module, pinned in
//! `node/package-lock.json`) behind the mesh. Header routing, a weighted split, request
//! filters, metadata, message bodies and non-OK statuses must all cross unchanged. Node and
//! npm are required: without them this test fails.
//!
//! The scenario is shared with `interop_python.rs`: see `src/interop.rs`.

use grpcroute_interop_tests::interop::{Implementation, backends_behind_the_mesh};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grpc_js_backends_behind_the_mesh() -> anyhow::Result<()> {
    backends_behind_the_mesh(Implementation::NodeGrpcJs).await
}
