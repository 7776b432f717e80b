//! A loopback "cluster": one echo server per pod of every Deployment of some manifests,
//! and the EndpointSlices Kubernetes would have made for the Services that select them,
//! delivered to the meshes by a [`Feed`] (directly, or through a Kubernetes API server).

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::Context as _;
use grpcroute_client::{Mesh, Resources, build::endpoints};
use grpcroute_echo::{EchoConfig, EchoServer};
use k8s_openapi::api::core::v1::Service;

use crate::{
    delivery::{Delivery, Feed},
    manifests::{Deployment, Manifests},
};

/// The address every pod of the cluster listens on.
pub const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// One replica of a Deployment: an echo server whose backend name is the pod name.
#[derive(Debug)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// The Deployment it belongs to.
    pub deployment: String,
    /// `<deployment>-<i>`; also the backend name its responses carry.
    pub name: String,
    /// The pod's labels (the Deployment's template labels).
    pub labels: BTreeMap<String, String>,
    /// The server.
    pub server: EchoServer,
}

/// Running pods plus the configuration that routes to them.
#[derive(Debug)]
pub struct Cluster {
    pods: Vec<Pod>,
    feed: Feed,
}

impl Cluster {
    /// Starts every Deployment of `manifests`; the configuration is delivered as
    /// `delivery` says.
    ///
    /// # Errors
    ///
    /// A server that cannot start, or an object that does not fit its schema (or that the
    /// API server refuses).
    pub async fn start(delivery: Delivery, manifests: &Manifests) -> anyhow::Result<Self> {
        Self::start_some(delivery, manifests, |_| true).await
    }

    /// Starts the Deployments `wanted` selects; Services that select only pods left out
    /// get no endpoints.
    ///
    /// # Errors
    ///
    /// As [`Cluster::start`].
    pub async fn start_some(
        delivery: Delivery,
        manifests: &Manifests,
        wanted: impl Fn(&Deployment) -> bool,
    ) -> anyhow::Result<Self> {
        let mut pods = Vec::new();
        for d in manifests.deployments().into_iter().filter(|d| wanted(d)) {
            for i in 0..d.replicas {
                let name = format!("{}-{i}", d.name);
                let server = EchoServer::start(
                    EchoConfig::new(name.clone())
                        .namespace(d.namespace.clone())
                        .pod(name.clone()),
                )
                .await
                .with_context(|| format!("starting pod {}/{name}", d.namespace))?;
                pods.push(Pod {
                    namespace: d.namespace.clone(),
                    deployment: d.name.clone(),
                    name,
                    labels: d.labels.clone(),
                    server,
                });
            }
        }
        let mut resources = manifests.resources()?;
        let slices: Vec<_> = resources
            .services
            .iter()
            .flat_map(|svc| endpoint_slices(svc, &pods))
            .collect();
        for slice in slices {
            resources.push(slice);
        }
        let feed = Feed::with(delivery, resources).await?;
        Ok(Self { pods, feed })
    }

    /// The configuration: the manifests' objects plus the synthesized EndpointSlices.
    pub fn resources(&self) -> Resources {
        self.feed.resources()
    }

    /// The feed that delivers the configuration: to change it, or to reach the API server.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// A mesh for clients in `namespace`, seeded for reproducible picks, configured with
    /// [`Cluster::resources`] (see [`Feed::mesh`]).
    ///
    /// # Errors
    ///
    /// If the mesh rejects any object (every conformance object must be valid), or never
    /// syncs.
    pub async fn mesh(&self, namespace: &str, seed: u64) -> anyhow::Result<Mesh> {
        self.feed
            .mesh(Mesh::builder().namespace(namespace).seed(seed))
            .await
    }

    /// Every pod.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The pod called `name`, in any namespace.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// Calls answered by the pods of `namespace` whose name starts with `prefix`.
    pub fn calls(&self, namespace: &str, prefix: &str) -> u64 {
        self.pods
            .iter()
            .filter(|p| p.namespace == namespace && p.name.starts_with(prefix))
            .map(|p| p.server.calls())
            .sum()
    }

    /// Calls answered by every pod.
    pub fn total_calls(&self) -> u64 {
        self.pods.iter().map(|p| p.server.calls()).sum()
    }

    /// Stops every server gracefully, and the API server if there is one.
    pub async fn shutdown(self) {
        for pod in self.pods {
            pod.server.shutdown().await;
        }
        self.feed.shutdown().await;
    }
}

/// One EndpointSlice per selected pod (each pod has its own port on 127.0.0.1), mapping
/// every port of the Service to that pod's server.
fn endpoint_slices(svc: &Service, pods: &[Pod]) -> Vec<grpcroute_client::Object> {
    let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
    let Some(name) = svc.metadata.name.as_deref() else {
        return Vec::new();
    };
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        return Vec::new();
    }
    pods.iter()
        .filter(|p| p.namespace == namespace)
        .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
        .map(|pod| {
            let mut slice = endpoints(namespace, name).name(&format!("{name}-{}", pod.name));
            for port in spec.ports.iter().flatten() {
                slice = slice.port(
                    port.name.as_deref().unwrap_or_default(),
                    pod.server.addr().port(),
                );
            }
            slice.ready(LOOPBACK).into()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mesh_manifests_become_pods_and_slices() {
        let m = Manifests::conformance(&["v1.6.1/mesh/manifests.yaml"]).unwrap();
        for delivery in Delivery::ALL {
            let cluster = Cluster::start(delivery, &m).await.unwrap();
            // echo-v1 and echo-v2 in the mesh namespace, echo-v1 in the consumer namespace.
            assert_eq!(cluster.pods().len(), 6);
            // echo: 4 pods; echo-v1: 2; echo-v2: 2. The consumer namespace has no Services.
            assert_eq!(cluster.resources().endpoint_slices.len(), 8);
            assert!(
                cluster
                    .pod("gateway-conformance-mesh", "echo-v2-1")
                    .is_some()
            );
            cluster.mesh("gateway-conformance-mesh", 1).await.unwrap();
            cluster.shutdown().await;
        }
    }
}
