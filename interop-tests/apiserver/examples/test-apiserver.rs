//! Runs the test apiserver until Ctrl-C, for poking at it with kubectl or curl.
//!
//! ```text
//! cargo run -p grpcroute-test-apiserver --example test-apiserver -- \
//!     [--port 8080] [--kubeconfig /tmp/kubeconfig] [--reference-grants both|v1|v1beta1]
//! KUBECONFIG=/tmp/kubeconfig kubectl get grpcroutes -A
//! ```
//! `RUST_LOG=grpcroute_test_apiserver=debug` logs every request.

use std::time::Duration;

use anyhow::{Context, bail};
use grpcroute_test_apiserver::{ApiServer, ReferenceGrantVersions};
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .init();
    let mut builder = ApiServer::builder();
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => builder = builder.port(value()?.parse().context("--port")?),
            "--kubeconfig" => kubeconfig = Some(value()?),
            "--bookmark-interval-ms" => {
                let ms = value()?.parse().context("--bookmark-interval-ms")?;
                builder = builder.bookmark_interval(Duration::from_millis(ms));
            }
            "--reference-grants" => {
                builder = builder.reference_grant_versions(match value()?.as_str() {
                    "both" => ReferenceGrantVersions::Both,
                    "v1" => ReferenceGrantVersions::V1Only,
                    "v1beta1" => ReferenceGrantVersions::V1Beta1Only,
                    other => bail!("--reference-grants: unknown value {other:?}"),
                });
            }
            "-h" | "--help" => {
                println!(
                    "usage: test-apiserver [--port N] [--kubeconfig PATH] [--bookmark-interval-ms MS] [--reference-grants both|v1|v1beta1]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let server = builder
        .start()
        .await
        .context("starting the test apiserver")?;
    println!("{}", server.url());
    if let Some(path) = kubeconfig {
        std::fs::write(&path, server.kubeconfig()).with_context(|| format!("writing {path}"))?;
        println!("kubeconfig written to {path}");
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.shutdown().await;
    Ok(())
}
