//! What the test binaries share: a raw-bytes gRPC client, an ADS client stream, oracle
//! start-up with the CI rule, and the ping-pong resources.
#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use bytes::{Buf as _, BufMut as _, Bytes};
use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::rpc::Status as RpcStatus,
};
use grpcroute_xds_control_plane::{
    Backend, ControlPlane, Oracle, OracleKind, Resource, ResourceType,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder, load_assignment, route_configuration,
        virtual_host,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Status, Streaming,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::Channel,
};

pub const UNARY: &str = "/grpc.testing.TestService/UnaryCall";
pub const EMPTY: &str = "/grpc.testing.TestService/EmptyCall";

/// Bounds a test step in time, naming it in the error.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .with_context(|| format!("{what}: did not finish within {limit:?}"))?
}

// ----- oracles -----

/// Starts an oracle; `None` (test skipped, said on stderr) when python3/node/npm is
/// missing outside CI. Under `CI=true` a missing tool fails the test.
pub async fn oracle(
    kind: OracleKind,
    cp: &ControlPlane,
    node_id: &str,
) -> anyhow::Result<Option<Oracle>> {
    match Oracle::start(kind, &cp.bootstrap(node_id), &[]).await {
        Ok(o) => {
            println!("oracle {kind}: {} (node id {node_id:?})", o.info());
            Ok(Some(o))
        }
        Err(e) if e.is_missing_tool() && std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED (not under CI=true): {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

// ----- resources -----

/// Listener `svc` → RouteConfiguration `{svc}-rc` (vhost `*`, prefix `/`) → Cluster
/// `{svc}-c` → its endpoints.
pub fn ping_pong(svc: &str, addrs: &[SocketAddr]) -> Vec<Resource> {
    let rc = format!("{svc}-rc");
    let cluster = format!("{svc}-c");
    vec![
        ApiListener::rds(svc, &rc).build().into(),
        route_configuration(
            &rc,
            vec![virtual_host(
                "vh",
                &["*"],
                vec![RouteBuilder::prefix("/").cluster(&cluster).build()],
            )],
        )
        .into(),
        ClusterBuilder::eds(&cluster).build().into(),
        load_assignment(&cluster, addrs.iter().copied()).into(),
    ]
}

pub fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(Backend::addr).collect()
}

// ----- a raw-bytes gRPC client -----

#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        *self
    }
    fn decoder(&mut self) -> RawCodec {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

pub async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// One unary call; the response metadata on success.
pub async fn unary(
    channel: &Channel,
    method: &'static str,
    metadata: &[(&'static str, &str)],
    timeout: Duration,
) -> Result<MetadataMap, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(Bytes::new());
    request.set_timeout(timeout);
    for (k, v) in metadata {
        request
            .metadata_mut()
            .append(*k, v.parse().map_err(|_| Status::internal("bad value"))?);
    }
    let response = grpc
        .unary(
            request,
            http::uri::PathAndQuery::from_static(method),
            RawCodec,
        )
        .await?;
    Ok(response.metadata().clone())
}

// ----- an ADS client stream -----

pub struct AdsStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl AdsStream {
    pub async fn open(cp: &ControlPlane, node_id: &str) -> Result<Self, Status> {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", cp.addr()))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            tx,
            rx,
            node: Some(Node {
                id: node_id.to_string(),
                ..Default::default()
            }),
        })
    }

    /// Sends a request (the node only on the first one, as gRPC does).
    pub async fn send(
        &mut self,
        kind: ResourceType,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        self.tx
            .send(DiscoveryRequest {
                version_info: version.to_string(),
                node: self.node.take(),
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                type_url: kind.type_url().to_string(),
                response_nonce: nonce.to_string(),
                error_detail: error.map(|m| RpcStatus {
                    code: 3,
                    message: m.to_string(),
                    details: vec![],
                }),
                ..Default::default()
            })
            .await
            .context("the request stream is closed")
    }

    pub async fn subscribe(&mut self, kind: ResourceType, names: &[&str]) -> anyhow::Result<()> {
        self.send(kind, names, "", "", None).await
    }

    /// The next response (within 5 s).
    pub async fn next(&mut self) -> anyhow::Result<DiscoveryResponse> {
        match tokio::time::timeout(Duration::from_secs(5), self.rx.message()).await {
            Err(_) => bail!("no response within 5 s"),
            Ok(Err(status)) => bail!("stream failed: {status}"),
            Ok(Ok(None)) => bail!("stream ended"),
            Ok(Ok(Some(r))) => Ok(r),
        }
    }

    /// The status the stream ends with (within 5 s).
    pub async fn end(&mut self) -> anyhow::Result<Status> {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.rx.message()).await {
                Err(_) => bail!("the stream did not end within 5 s"),
                Ok(Err(status)) => return Ok(status),
                Ok(Ok(None)) => return Ok(Status::ok("")),
                Ok(Ok(Some(_))) => {}
            }
        }
    }

    /// Asserts that nothing arrives for `d`.
    pub async fn silent_for(&mut self, d: Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(d, self.rx.message()).await {
            Err(_) => Ok(()),
            Ok(r) => bail!("expected silence, got {r:?}"),
        }
    }

    /// ACKs a response.
    pub async fn ack(&mut self, r: &DiscoveryResponse, names: &[&str]) -> anyhow::Result<()> {
        let kind = ResourceType::from_type_url(&r.type_url).context("unknown type")?;
        self.send(kind, names, &r.version_info, &r.nonce, None)
            .await
    }
}

/// The names of the resources in a response.
pub fn names(r: &DiscoveryResponse) -> Vec<String> {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    use prost::Message as _;
    let mut out: Vec<String> = r
        .resources
        .iter()
        .map(|a| {
            let b = a.value.as_slice();
            match ResourceType::from_type_url(&a.type_url) {
                Some(ResourceType::Listener) => Listener::decode(b).map(|m| m.name),
                Some(ResourceType::RouteConfiguration) => {
                    RouteConfiguration::decode(b).map(|m| m.name)
                }
                Some(ResourceType::Cluster) => Cluster::decode(b).map(|m| m.name),
                Some(ResourceType::ClusterLoadAssignment) => {
                    ClusterLoadAssignment::decode(b).map(|m| m.cluster_name)
                }
                None => Ok(format!("<{}>", a.type_url)),
            }
            .unwrap_or_else(|_| "<undecodable>".to_string())
        })
        .collect();
    out.sort();
    out
}
