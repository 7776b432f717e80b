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
    Backend, Bootstrap, CallReport, CallSpec, ControlPlane, CsdsResource, HoldReport, HoldSpec,
    Oracle, OracleKind, Resource, ResourceType, Sut,
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

// ----- the clients of a scenario: the oracles and the library, one interface -----

/// One client of a scenario: an oracle (gRPC C-core or grpc-js-xds) or the library.
#[derive(Clone, Copy, Debug)]
pub enum Client<'a> {
    Oracle(&'a Oracle),
    Sut(&'a Sut),
}

impl Client<'_> {
    /// `grpcio (C-core)`, `grpc-js-xds` or `library`.
    pub fn name(&self) -> String {
        match self {
            Client::Oracle(o) => o.kind().to_string(),
            Client::Sut(_) => "library".to_string(),
        }
    }

    pub fn node_id(&self) -> &str {
        match self {
            Client::Oracle(o) => o.node_id(),
            Client::Sut(s) => s.node_id(),
        }
    }

    /// The oracle's kind; `None` for the library.
    pub fn kind(&self) -> Option<OracleKind> {
        match self {
            Client::Oracle(o) => Some(o.kind()),
            Client::Sut(_) => None,
        }
    }

    pub fn is_sut(&self) -> bool {
        matches!(self, Client::Sut(_))
    }

    /// Whether it is C-core or the library (which follows C-core).
    pub fn c_core_like(&self) -> bool {
        self.kind() != Some(OracleKind::Node)
    }

    pub async fn call(&self, spec: &CallSpec) -> anyhow::Result<CallReport> {
        match self {
            Client::Oracle(o) => Ok(o.call(spec).await?),
            Client::Sut(s) => Ok(s.call(spec).await?),
        }
    }

    pub async fn hold(&self, spec: &HoldSpec) -> anyhow::Result<HoldReport> {
        match self {
            Client::Oracle(o) => Ok(o.hold(spec).await?),
            Client::Sut(s) => Ok(s.hold(spec).await?),
        }
    }

    pub async fn release(&self, hold: u64) -> anyhow::Result<HoldReport> {
        match self {
            Client::Oracle(o) => Ok(o.release(hold).await?),
            Client::Sut(s) => Ok(s.release(hold).await),
        }
    }

    /// Drops the client's channel to `target` (its resources are unwatched).
    pub async fn close_channel(&self, target: &str) -> anyhow::Result<()> {
        match self {
            Client::Oracle(o) => Ok(o.close_channel(target).await?),
            Client::Sut(s) => {
                s.close_channel(target);
                Ok(())
            }
        }
    }

    pub async fn csds(&self) -> anyhow::Result<Vec<CsdsResource>> {
        match self {
            Client::Oracle(o) => Ok(o.csds().await?),
            Client::Sut(s) => Ok(s.csds()),
        }
    }

    /// The CSDS entry of `kind`/`name`, if any.
    pub async fn csds_of(
        &self,
        kind: ResourceType,
        name: &str,
    ) -> anyhow::Result<Option<CsdsResource>> {
        Ok(self
            .csds()
            .await?
            .into_iter()
            .find(|r| r.kind() == Some(kind) && r.name == name))
    }
}

/// The clients of a scenario: the oracles of `kinds` that could start (node ids
/// `{prefix}-py`, `{prefix}-js`) and the library (`{prefix}-sut`).
pub struct Clients {
    pub oracles: Vec<Oracle>,
    pub sut: Sut,
}

impl Clients {
    pub async fn start(
        cp: &ControlPlane,
        kinds: &[OracleKind],
        prefix: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(cp, kinds, prefix, |b| b, &[]).await
    }

    /// Like [`start`](Self::start), with every bootstrap changed by `f` (e.g. a server
    /// feature) and the oracles started with the environment variables `env`.
    pub async fn start_with(
        cp: &ControlPlane,
        kinds: &[OracleKind],
        prefix: &str,
        f: impl Fn(Bootstrap) -> Bootstrap,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let starts = kinds.iter().map(|&kind| {
            let bootstrap = f(cp.bootstrap(&format!("{prefix}-{}", short(kind))));
            async move { start_oracle(kind, &bootstrap, env).await }
        });
        let oracles = futures_util::future::join_all(starts)
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let sut = Sut::start(&f(cp.bootstrap(&format!("{prefix}-sut"))))?;
        Ok(Self { oracles, sut })
    }

    /// The oracles in the order given, then the library.
    pub fn all(&self) -> Vec<Client<'_>> {
        let mut v: Vec<Client<'_>> = self.oracles.iter().map(Client::Oracle).collect();
        v.push(Client::Sut(&self.sut));
        v
    }

    /// The oracle of `kind`, if it started.
    pub fn oracle(&self, kind: OracleKind) -> Option<Client<'_>> {
        self.oracles
            .iter()
            .find(|o| o.kind() == kind)
            .map(Client::Oracle)
    }

    pub fn sut(&self) -> Client<'_> {
        Client::Sut(&self.sut)
    }
}

pub fn short(kind: OracleKind) -> &'static str {
    match kind {
        OracleKind::Python => "py",
        OracleKind::Node => "js",
    }
}

/// Starts an oracle with `bootstrap` and `env`; `None` when its runtime is missing outside
/// CI (said on stderr), an error under `CI=true`.
pub async fn start_oracle(
    kind: OracleKind,
    bootstrap: &Bootstrap,
    env: &[(&str, &str)],
) -> anyhow::Result<Option<Oracle>> {
    match Oracle::start(kind, bootstrap, env).await {
        Ok(o) => {
            println!("oracle {kind}: {} (node id {:?})", o.info(), o.node_id());
            Ok(Some(o))
        }
        Err(e) if e.is_missing_tool() && std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED oracle {kind} (not under CI=true): {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

// ----- waiting and statistics -----

/// Retries `f` every `interval` until it succeeds or `limit` passes (then its last error).
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    interval: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= until => {
                return Err(e.context(format!("{what}: not within {limit:?}")));
            }
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}

/// Calls `target` until every one of `peers` answered and a whole batch succeeded (the
/// endpoints connect lazily, and gRPC's round robin only uses READY ones).
pub async fn warm_up(client: Client<'_>, target: &str, peers: &[&str]) -> anyhow::Result<()> {
    warm_up_on(client, target, UNARY, peers).await
}

/// [`warm_up`] with calls of `method`.
pub async fn warm_up_on(
    client: Client<'_>,
    target: &str,
    method: &str,
    peers: &[&str],
) -> anyhow::Result<()> {
    let spec = CallSpec::new(target, method)
        .count(20)
        .wait_for_ready(true)
        .timeout(Duration::from_secs(5));
    eventually(
        &format!("{}: warm-up of {target}", client.name()),
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || {
            let r = client.call(&spec).await?;
            anyhow::ensure!(r.failures() == 0, "{r:?}");
            for p in peers {
                anyhow::ensure!(r.peer(p) > 0, "{p} not reached: {r:?}");
            }
            Ok(())
        },
    )
    .await
}

/// Fails unless `got` of `n` is within `sigmas` binomial standard deviations of `n * p`.
pub fn within_binomial(what: &str, got: u64, n: u64, p: f64, sigmas: f64) -> anyhow::Result<()> {
    let (n_f, got_f) = (n as f64, got as f64);
    let sigma = (n_f * p * (1.0 - p)).sqrt();
    let bound = if sigma == 0.0 { 0.0 } else { sigmas * sigma };
    anyhow::ensure!(
        (got_f - n_f * p).abs() <= bound,
        "{what}: {got} of {n}, expected {:.0} ± {bound:.1} ({sigmas}σ)",
        n_f * p
    );
    Ok(())
}

/// The two-sample z statistic of proportions `a/n_a` and `b/n_b` (0 when both are 0 or
/// 1).
pub fn two_sample_z(a: u64, n_a: u64, b: u64, n_b: u64) -> f64 {
    let (a, n_a, b, n_b) = (a as f64, n_a as f64, b as f64, n_b as f64);
    let pooled = (a + b) / (n_a + n_b);
    let se = (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt();
    if se == 0.0 {
        0.0
    } else {
        (a / n_a - b / n_b) / se
    }
}

/// Pearson's chi-square statistic of homogeneity between two count vectors over the same
/// categories (categories empty in both are left out), and its degrees of freedom.
pub fn chi_square_homogeneity(a: &[u64], b: &[u64]) -> (f64, usize) {
    let (na, nb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    let total = na + nb;
    let mut chi = 0.0;
    let mut categories = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        let col = (x + y) as f64;
        if col == 0.0 {
            continue;
        }
        categories += 1;
        for (obs, row) in [(x as f64, na), (y as f64, nb)] {
            let expected = row * col / total;
            chi += (obs - expected).powi(2) / expected;
        }
    }
    (chi, categories.saturating_sub(1))
}

/// The chi-square critical value at p = 0.001 for 1..=4 degrees of freedom.
pub fn chi_square_critical_0_001(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1 => 10.828,
        2 => 13.816,
        3 => 16.266,
        _ => 18.467,
    }
}
