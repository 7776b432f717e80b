//! A client app for a real cluster: the mesh follows the Kubernetes API (GRPCRoutes,
//! Services, EndpointSlices, ReferenceGrants) and routes this program's calls to the seed's
//! services. It calls them in a loop and logs which backend served each one, so the effect
//! of `kubectl apply`/`edit` on a GRPCRoute shows in `kubectl logs` within milliseconds.
//!
//! It serves the mesh's Prometheus metrics on `METRICS_ADDR` (default `0.0.0.0:9090`) at
//! `/metrics`, for the PodMonitor and alerts of `examples/kubernetes/prometheus-rule.yaml`.
//!
//! ```text
//! # inside the cluster (see examples/kubernetes/), or locally against your kubeconfig:
//! POD_NAMESPACE=app cargo run --example kube_client
//! curl -s localhost:9090/metrics | grep grpcroute_client_calls_total
//! ```
//!
//! TLS to the backends (see `examples/kubernetes/mtls/`), by environment variable; unset,
//! the mesh's default (`TlsMode::Policy`: TLS only where a BackendTLSPolicy asks):
//! - `GRPCROUTE_TLS`: `plaintext`, `policy` or `mutual` (`TlsMode::Mutual`: mutual TLS to
//!   every backend);
//! - the client's SVID, for `mutual`: `GRPCROUTE_CREDENTIALS_DIR` (files in
//!   csi-driver-spiffe's layout: `tls.crt`, `tls.key`, `ca.crt`), or, when that is unset
//!   and `SPIFFE_ENDPOINT_SOCKET` is set, the SPIFFE Workload API (SPIRE).

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use grpcroute_client::{
    Mesh, MeshBuilder,
    identity::{CredentialFiles, Identity, WorkloadApi},
    serve_metrics,
    source::KubeSource,
    tls::TlsMode,
};
use grpcroute_echo::BACKEND_HEADER;
use grpcroute_examples::{
    order::v1::{PlaceOrderRequest, order_service_client::OrderServiceClient},
    recommendation::v1::{
        RecommendRequest, recommendation_service_client::RecommendationServiceClient,
    },
    user::v1::{GetUserRequest, user_service_client::UserServiceClient},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // The client's namespace comes from POD_NAMESPACE (downward API), else the service
    // account's namespace file, else `default`.
    let mesh = tls(Mesh::builder())
        .await?
        .build_with_source(KubeSource::new());
    let metrics_addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "0.0.0.0:9090".into())
        .parse()?;
    let mut registry = grpcroute_client::prometheus_client::registry::Registry::default();
    mesh.metrics().register(&mut registry);
    let listener = tokio::net::TcpListener::bind(metrics_addr).await?;
    tracing::info!(%metrics_addr, "serving Prometheus metrics on /metrics");
    tokio::spawn(serve_metrics(listener, Arc::new(registry)));
    tokio::time::timeout(Duration::from_secs(30), mesh.ready())
        .await
        .map_err(|_| anyhow::anyhow!("the mesh did not sync with the Kubernetes API in 30 s"))?;
    tracing::info!(namespace = mesh.namespace(), "mesh synced");

    let mut users = UserServiceClient::new(mesh.channel("user-service.app:50051")?);
    let mut recommendations =
        RecommendationServiceClient::new(mesh.channel("recommendation-service.app:50051")?);
    let mut orders = OrderServiceClient::new(mesh.channel("order-service.app:50051")?);

    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut report = tokio::time::interval(Duration::from_secs(10));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = report.tick() => {
                tracing::info!(?tally, health = ?mesh.source_health(), "calls by backend over the last 10 s");
                tally.clear();
            }
            _ = tick.tick() => {
                let mut ab = tonic::Request::new(RecommendRequest::default());
                ab.metadata_mut().insert("x-experiment-group", "treatment-a".parse()?);
                let results = [
                    backend(users.get_user(GetUserRequest::default()).await.map(|r| r.metadata().clone())),
                    backend(recommendations.recommend(ab).await.map(|r| r.metadata().clone())),
                    backend(orders.place_order(PlaceOrderRequest::default()).await.map(|r| r.metadata().clone())),
                ];
                for b in results {
                    *tally.entry(b).or_default() += 1;
                }
            }
        }
    }
    Ok(())
}

/// The TLS mode and identity the environment asks for (see the module docs); the builder
/// unchanged when `GRPCROUTE_TLS` is unset.
async fn tls(builder: MeshBuilder) -> anyhow::Result<MeshBuilder> {
    let Ok(mode) = std::env::var("GRPCROUTE_TLS") else {
        return Ok(builder);
    };
    let mode = match mode.as_str() {
        "plaintext" => TlsMode::Plaintext,
        "policy" => TlsMode::Policy,
        "mutual" => TlsMode::Mutual,
        other => anyhow::bail!("GRPCROUTE_TLS={other:?}: expected plaintext, policy or mutual"),
    };
    let identity = if let Some(dir) = std::env::var_os("GRPCROUTE_CREDENTIALS_DIR") {
        // Watched, and re-read periodically: csi-driver-spiffe renews the SVID in place.
        let identity = Identity::from_files(CredentialFiles::csi_driver_spiffe(dir))?;
        tokio::time::timeout(Duration::from_secs(30), identity.ready())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no SVID in {} within 30 s: {:?}",
                    identity.source(),
                    identity.last_error()
                )
            })?;
        Some(identity)
    } else if std::env::var_os("SPIFFE_ENDPOINT_SOCKET").is_some() {
        Some(Identity::from_workload_api(WorkloadApi::from_env()).await?)
    } else {
        None
    };
    if let Some(id) = identity.as_ref().and_then(Identity::spiffe_id) {
        tracing::info!(?mode, spiffe_id = %id, "TLS to the backends");
    } else if mode == TlsMode::Mutual {
        anyhow::bail!(
            "GRPCROUTE_TLS=mutual needs an identity: GRPCROUTE_CREDENTIALS_DIR or SPIFFE_ENDPOINT_SOCKET"
        );
    }
    let builder = builder.tls(mode);
    Ok(match identity {
        Some(identity) => builder.identity(identity),
        None => builder,
    })
}

/// The backend that answered, or the status code of a failed call.
fn backend(result: Result<tonic::metadata::MetadataMap, tonic::Status>) -> String {
    match result {
        Ok(meta) => meta
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
            // Pod names end in a replica suffix; the Deployment is what the routes choose.
            .map(|pod| pod.rsplit_once('-').map_or(pod, |(d, _)| d).to_string())
            .unwrap_or_else(|| "(no backend header)".into()),
        Err(status) => format!("{:?}", status.code()),
    }
}
