//! Hand-made backends for scenarios the conformance manifests do not cover: a Service
//! backed by echo servers on 127.0.0.1, with its EndpointSlices built in code so a test can
//! mark endpoints ready, terminating or not ready, or swap them.

use grpcroute_client::{
    Object,
    build::{EndpointsBuilder, ServiceBuilder, endpoints, service},
};
use grpcroute_echo::{EchoConfig, EchoServer};

use crate::cluster::LOOPBACK;

/// The Service port every hand-made Service uses, named `grpc`.
pub const GRPC_PORT: u16 = 7070;

/// The state an endpoint is published in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// Ready: takes calls.
    Ready,
    /// Shutting down but still serving: takes calls only if nothing is ready.
    Terminating,
    /// Neither: takes no calls.
    NotReady,
}

/// A Service `namespace/name` (port `grpc` 7070) and the echo servers behind it, named
/// `<name>-<i>`.
#[derive(Debug)]
pub struct EchoService {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The servers, one per pod.
    pub servers: Vec<EchoServer>,
}

impl EchoService {
    /// Starts `replicas` servers.
    ///
    /// # Errors
    ///
    /// A server that cannot start.
    pub async fn start(namespace: &str, name: &str, replicas: usize) -> anyhow::Result<Self> {
        Self::start_with(namespace, name, replicas, |c| c).await
    }

    /// Starts `replicas` servers, each configured by `configure` (e.g. a delay).
    ///
    /// # Errors
    ///
    /// A server that cannot start.
    pub async fn start_with(
        namespace: &str,
        name: &str,
        replicas: usize,
        configure: impl Fn(EchoConfig) -> EchoConfig,
    ) -> anyhow::Result<Self> {
        let mut servers = Vec::with_capacity(replicas);
        for i in 0..replicas {
            let pod = format!("{name}-{i}");
            let config = EchoConfig::new(pod.clone()).namespace(namespace).pod(pod);
            servers.push(EchoServer::start(configure(config)).await?);
        }
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
            servers,
        })
    }

    /// The Service object (no ClusterIP).
    pub fn service(&self) -> ServiceBuilder {
        service(&self.namespace, &self.name).port("grpc", GRPC_PORT)
    }

    /// The EndpointSlice publishing server `i` in `state` (one slice per server, since each
    /// has its own port).
    pub fn slice(&self, i: usize, state: EndpointState) -> Option<EndpointsBuilder> {
        let server = self.servers.get(i)?;
        let slice = endpoints(&self.namespace, &self.name)
            .name(&format!("{}-{i}", self.name))
            .port("grpc", server.addr().port());
        Some(match state {
            EndpointState::Ready => slice.ready(LOOPBACK),
            EndpointState::Terminating => slice.terminating(LOOPBACK),
            EndpointState::NotReady => slice.not_ready(LOOPBACK),
        })
    }

    /// The Service and a ready slice per server.
    pub fn objects(&self) -> Vec<Object> {
        let mut out = vec![self.service().into()];
        out.extend(
            (0..self.servers.len())
                .filter_map(|i| self.slice(i, EndpointState::Ready))
                .map(Object::from),
        );
        out
    }

    /// `name.namespace:7070`, the target that reaches this Service from any namespace.
    pub fn target(&self) -> String {
        format!("{}.{}:{GRPC_PORT}", self.name, self.namespace)
    }

    /// Calls answered by all its servers.
    pub fn calls(&self) -> u64 {
        self.servers.iter().map(EchoServer::calls).sum()
    }

    /// The requests all its servers received (method, path, headers).
    pub fn received(&self) -> Vec<grpcroute_echo::Received> {
        self.servers.iter().flat_map(EchoServer::received).collect()
    }

    /// Stops every server gracefully.
    pub async fn shutdown(self) {
        for server in self.servers {
            server.shutdown().await;
        }
    }
}

/// Adds every object to `resources`.
pub fn add_all(resources: &mut grpcroute_client::Resources, objects: Vec<Object>) {
    for o in objects {
        resources.push(o);
    }
}
