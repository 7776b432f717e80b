//! Examples for [`grpcroute_client`], and the generated clients they share.
//!
//! | example | run | shows |
//! |---|---|---|
//! | `demo` | `cargo run --release --example demo` | the whole story on loopback: manifests, method routing, A/B by header, a 90/10 canary, `explain`, a hot reload to 50/50 |
//! | `in_code` | `cargo run --example in_code` | the same A/B test and canary built in Rust, changed at run time with [`Mesh::update`](grpcroute_client::Mesh::update) |
//! | `layer` | `cargo run --example layer` | the mesh as a tower layer in front of an ordinary channel, with `Client::with_origin` |
//! | `xds` | `cargo run --example xds` | `xds:///NAME` channels routed by an xDS control plane: its own on loopback (a header route and a 90/10 split moved to 50/50), or yours from `GRPC_XDS_BOOTSTRAP` |
//!
//! The protos are in `examples/proto/`: `user.v1`, `recommendation.v1` and `order.v1`, the
//! services of the seed article's scenario. Only clients are generated; the backends are
//! [`grpcroute_echo`] servers, which answer every method with an empty message (the
//! default value of any response type) and name themselves in `x-echo-backend`.

/// Logs to stderr as `RUST_LOG` says, when it is set (the examples print their own output
/// on stdout and stay quiet otherwise).
pub fn log_to_stderr() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// `user.v1`: `UserService` (GetUser, ListUsers, CreateUser, UpdateUser, DeleteUser,
/// ExportUsers).
pub mod user {
    /// Version 1.
    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        rust_2018_idioms,
        missing_debug_implementations
    )]
    pub mod v1 {
        tonic::include_proto!("user.v1");
    }
}

/// `recommendation.v1`: `RecommendationService` (Recommend).
pub mod recommendation {
    /// Version 1.
    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        rust_2018_idioms,
        missing_debug_implementations
    )]
    pub mod v1 {
        tonic::include_proto!("recommendation.v1");
    }
}

/// `order.v1`: `OrderService` (PlaceOrder, GetOrder).
pub mod order {
    /// Version 1.
    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        rust_2018_idioms,
        missing_debug_implementations
    )]
    pub mod v1 {
        tonic::include_proto!("order.v1");
    }
}
