//! The demo's "pods": one grpcroute-echo server per replica, on the fixed loopback ports
//! that `manifests/20-endpointslices.yaml` gives them.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
};

use anyhow::bail;
use grpcroute_echo::{EchoConfig, EchoServer, StartError};

/// A Deployment of the seed scenario: its Service (same name), the pod-template hash in its
/// pod names, and the port of its first replica (the next replica takes the next port).
pub(crate) struct Deployment {
    pub(crate) name: &'static str,
    hash: &'static str,
    first_port: u16,
}

/// Replicas per Deployment.
pub(crate) const REPLICAS: u16 = 2;

/// Must agree with `manifests/20-endpointslices.yaml`; the demo checks that it does.
pub(crate) const DEPLOYMENTS: [Deployment; 6] = [
    Deployment {
        name: "user-service-reader",
        hash: "7d9f",
        first_port: 47101,
    },
    Deployment {
        name: "user-service-writer",
        hash: "5c8b",
        first_port: 47111,
    },
    Deployment {
        name: "recommendation-v1",
        hash: "6f4d",
        first_port: 47121,
    },
    Deployment {
        name: "recommendation-v2",
        hash: "8a2e",
        first_port: 47131,
    },
    Deployment {
        name: "order-service-stable",
        hash: "9b1c",
        first_port: 47141,
    },
    Deployment {
        name: "order-service-canary",
        hash: "4e7a",
        first_port: 47151,
    },
];

/// One replica.
pub(crate) struct Pod {
    pub(crate) name: String,
    pub(crate) deployment: &'static str,
    pub(crate) addr: SocketAddr,
}

/// Every pod of every Deployment.
pub(crate) fn all() -> Vec<Pod> {
    DEPLOYMENTS
        .iter()
        .flat_map(|d| {
            (0..REPLICAS).map(move |i| Pod {
                name: format!("{}-{}-{i}", d.name, d.hash),
                deployment: d.name,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, d.first_port + i)),
            })
        })
        .collect()
}

/// The pods' addresses by Deployment (= backend Service), as `ip:port` strings.
pub(crate) fn addresses_by_deployment(pods: &[Pod]) -> BTreeMap<&'static str, Vec<String>> {
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for p in pods {
        out.entry(p.deployment)
            .or_default()
            .push(p.addr.to_string());
    }
    out
}

/// The Deployment a pod name belongs to: the name without `-<hash>-<n>`.
pub(crate) fn deployment_of(pod: &str) -> &str {
    pod.rsplitn(3, '-').nth(2).unwrap_or(pod)
}

/// Starts an echo server for each pod, named after it.
///
/// # Errors
///
/// A port that is taken is reported in one line, naming the port and the pod it is for.
pub(crate) async fn start(pods: &[Pod]) -> anyhow::Result<Vec<EchoServer>> {
    let mut servers = Vec::with_capacity(pods.len());
    for pod in pods {
        let config = EchoConfig::new(&pod.name)
            .namespace("app")
            .pod(&pod.name)
            .service(pod.deployment)
            .listen(pod.addr);
        match EchoServer::start(config).await {
            Ok(server) => servers.push(server),
            Err(e) => {
                if let StartError::Bind { source, .. } = &e
                    && source.kind() == std::io::ErrorKind::AddrInUse
                {
                    bail!(
                        "port {} is already in use (the manifests give it to pod {}); \
                         stop whatever listens there and run the demo again",
                        pod.addr,
                        pod.name
                    );
                }
                bail!("cannot start pod {} on {}: {e}", pod.name, pod.addr);
            }
        }
    }
    Ok(servers)
}
