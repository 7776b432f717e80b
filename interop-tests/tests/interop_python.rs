//! Wire interop with an independent gRPC implementation: backends served by Python `grpcio`
//! (gRPC C-core, pinned in `python/requirements.txt`) behind the mesh. Header routing, a
//! weighted split, request filters, metadata, message bodies and non-OK statuses must all
//! cross unchanged. Python and pip are required: without them this test fails.
//!
//! The scenario is shared with `interop_node.rs`: see `src/interop.rs`.

use grpcroute_interop_tests::interop::{Implementation, backends_behind_the_mesh};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_backends_behind_the_mesh() -> anyhow::Result<()> {
    backends_behind_the_mesh(Implementation::PythonGrpcio).await
}
