//! The system under test: `grpcroute-client`'s xDS channels, driven with the same
//! [`CallSpec`]/[`CallReport`] as the oracles, so that a scenario can run both and compare.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use grpcroute_client::{Channel, Mesh, code_name};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt as _, Full};
use tokio::time::Instant;
use tonic::body::Body;
use tower::ServiceExt as _;

use crate::{
    Bootstrap, CallReport, CallSpec, CsdsResource, HoldReport, HoldSpec, ResourceType,
    backend::HOSTNAME_HEADER, oracle::CallRecord,
};

/// A mesh whose `xds:` channels follow the control plane of `bootstrap`.
#[derive(Debug)]
pub struct Sut {
    mesh: Mesh,
    node_id: String,
    channels: Mutex<HashMap<String, Channel>>,
    holds: Mutex<HashMap<u64, Hold>>,
    next_hold: std::sync::atomic::AtomicU64,
}

/// Calls kept in flight by [`Sut::hold`]: their tasks and the outcomes of those that
/// ended.
#[derive(Debug)]
struct Hold {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    records: Arc<Mutex<Vec<CallRecord>>>,
}

/// Why the system under test could not do something.
#[derive(Debug, thiserror::Error)]
pub enum SutError {
    /// The bootstrap was refused.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    /// The target was refused.
    #[error("target: {0}")]
    Target(String),
}

impl Sut {
    /// A mesh with `bootstrap` (its node id identifies it in the control plane's log).
    ///
    /// # Errors
    ///
    /// When the library refuses the bootstrap.
    pub fn start(bootstrap: &Bootstrap) -> Result<Self, SutError> {
        let json = bootstrap.to_json();
        let node_id = json["node"]["id"].as_str().unwrap_or_default().to_string();
        let parsed = grpcroute_client::xds::Bootstrap::from_json(&json.to_string())
            .map_err(|e| SutError::Bootstrap(e.to_string()))?;
        let mesh = Mesh::builder()
            .namespace("default")
            .xds_bootstrap(parsed)
            .build();
        Ok(Self {
            mesh,
            node_id,
            channels: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            next_hold: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The mesh.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Its node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The channel to `target`, made once (as an application keeps its channel).
    ///
    /// # Errors
    ///
    /// When the library refuses the target.
    pub fn channel(&self, target: &str) -> Result<Channel, SutError> {
        let mut channels = crate::lock(&self.channels);
        if let Some(c) = channels.get(target) {
            return Ok(c.clone());
        }
        let c = self
            .mesh
            .channel(target)
            .map_err(|e| SutError::Target(e.to_string()))?;
        channels.insert(target.to_string(), c.clone());
        Ok(c)
    }

    /// Forgets the channel to `target` (its listener is unwatched once no channel holds it).
    pub fn close_channel(&self, target: &str) {
        crate::lock(&self.channels).remove(target);
    }

    /// Makes `spec.count` calls, `spec.concurrency` at a time, and tallies them as the
    /// oracles do.
    ///
    /// # Errors
    ///
    /// When the library refuses the target.
    pub async fn call(&self, spec: &CallSpec) -> Result<CallReport, SutError> {
        let channel = self.channel(&spec.target)?;
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let records = Arc::new(Mutex::new(Vec::new()));
        let workers = spec.concurrency.max(1);
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (channel, next, records, spec) =
                (channel.clone(), next.clone(), records.clone(), spec.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if index >= u64::from(spec.count) {
                        return;
                    }
                    let record = one_call(&channel, &spec, index).await;
                    crate::lock(&records).push(record);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let mut calls = std::mem::take(&mut *crate::lock(&records));
        calls.sort_by_key(|r| r.index);
        Ok(report(calls, started.elapsed(), spec.record))
    }
}

impl Sut {
    /// Starts `spec.call.count` calls (`spec.interval_ms` apart) and keeps them in flight
    /// (typically with `rpc-behavior: keep-open`), reporting `spec.settle_ms` after the
    /// last one started: how many are still open, and how the others ended. The oracles'
    /// `hold` op, for circuit breaking.
    ///
    /// # Errors
    ///
    /// When the library refuses the target.
    pub async fn hold(&self, spec: &HoldSpec) -> Result<HoldReport, SutError> {
        let channel = self.channel(&spec.call.target)?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for index in 0..u64::from(spec.call.count) {
            if index > 0 && spec.interval_ms > 0 {
                tokio::time::sleep(Duration::from_millis(spec.interval_ms)).await;
            }
            let (channel, records, call) = (channel.clone(), records.clone(), spec.call.clone());
            tasks.push(tokio::spawn(async move {
                let record = one_call(&channel, &call, index).await;
                crate::lock(&records).push(record);
            }));
        }
        tokio::time::sleep(Duration::from_millis(spec.settle_ms)).await;
        let hold = self
            .next_hold
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let report = hold_report(hold, tasks.len(), &records);
        crate::lock(&self.holds).insert(hold, Hold { tasks, records });
        Ok(report)
    }

    /// Cancels the calls of `hold` that are still open (each counts as `CANCELLED`), and
    /// reports the hold's final state. An unknown hold reports nothing.
    pub async fn release(&self, hold: u64) -> HoldReport {
        let Some(Hold { tasks, records }) = crate::lock(&self.holds).remove(&hold) else {
            return hold_report(hold, 0, &Arc::new(Mutex::new(Vec::new())));
        };
        let count = tasks.len();
        for (index, task) in tasks.into_iter().enumerate() {
            if task.is_finished() {
                continue;
            }
            // Dropping the call's future resets its stream: the backend sees it end.
            task.abort();
            if task.await.is_err_and(|e| e.is_cancelled()) {
                crate::lock(&records).push(CallRecord {
                    index: index as u64,
                    peer: None,
                    status: "CANCELLED".to_string(),
                    ms: 0.0,
                    message: Some("released by the test".to_string()),
                });
            }
        }
        hold_report(hold, count, &records)
    }

    /// The mesh's xDS resources in the oracles' CSDS shape (`type_url` in full, `status`
    /// `REQUESTED`/`DOES_NOT_EXIST`/`ACKED`/`NACKED`, the last error and rejected
    /// version); empty before the first `xds:` channel.
    pub fn csds(&self) -> Vec<CsdsResource> {
        let Some(dump) = self.mesh.xds_config() else {
            return Vec::new();
        };
        dump.resources
            .into_iter()
            .map(|r| CsdsResource {
                client_scope: String::new(),
                type_url: ResourceType::from_short_name(r.resource_type)
                    .map_or_else(|| r.resource_type.to_string(), |t| t.type_url().to_string()),
                name: r.name,
                version: r.version,
                status: r.state.to_string(),
                error: r.last_error,
                error_version: r.rejected_version,
                config: None,
            })
            .collect()
    }

    /// Whether the mesh's ADS stream is up.
    pub fn connected(&self) -> bool {
        self.mesh.xds_config().is_some_and(|d| d.connected)
    }
}

fn hold_report(hold: u64, started: usize, records: &Mutex<Vec<CallRecord>>) -> HoldReport {
    let records = crate::lock(records);
    let tally = report(records.clone(), Duration::ZERO, false);
    HoldReport {
        hold,
        in_flight: (started - records.len().min(started)) as u64,
        by_status: tally.by_status,
        by_peer: tally.by_peer,
        errors: tally.errors,
    }
}

/// One call: its status, the backend that answered (`hostname`), and its duration.
async fn one_call(channel: &Channel, spec: &CallSpec, index: u64) -> CallRecord {
    let started = Instant::now();
    let mut req = Request::builder()
        .method("POST")
        .uri(spec.method.as_str())
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in &spec.metadata {
        req = req.header(k.as_str(), v.as_str());
    }
    if spec.timeout_ms > 0 {
        req = req.header("grpc-timeout", format!("{}m", spec.timeout_ms));
    }
    let req = req
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap_or_default();
    // A generous bound of the harness's own: the call's timeout plus 30 s.
    let bound = Duration::from_millis(spec.timeout_ms.max(1)) + Duration::from_secs(30);
    let outcome = tokio::time::timeout(bound, async {
        let response = channel
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let peer = hostname(response.headers());
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            return (status, peer);
        }
        let status = match response.into_body().collect().await {
            Ok(body) => body
                .trailers()
                .and_then(tonic::Status::from_header_map)
                .unwrap_or_else(|| tonic::Status::unknown("no grpc-status")),
            Err(status) => status,
        };
        (status, peer)
    })
    .await;
    let (status, peer) = outcome.unwrap_or_else(|_| {
        (
            tonic::Status::deadline_exceeded("the harness's own bound passed"),
            None,
        )
    });
    CallRecord {
        index,
        peer,
        status: code_name(status.code()).to_string(),
        ms: started.elapsed().as_secs_f64() * 1000.0,
        message: (status.code() != tonic::Code::Ok).then(|| status.message().to_string()),
    }
}

fn hostname(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HOSTNAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn report(calls: Vec<CallRecord>, elapsed: Duration, keep: bool) -> CallReport {
    let mut by_peer = BTreeMap::new();
    let mut by_status = BTreeMap::new();
    let mut failed_by_peer = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    for c in &calls {
        *by_status.entry(c.status.clone()).or_insert(0) += 1;
        match (&c.peer, c.status.as_str()) {
            (Some(p), "OK") => *by_peer.entry(p.clone()).or_insert(0) += 1,
            (Some(p), _) => *failed_by_peer.entry(p.clone()).or_insert(0) += 1,
            _ => {}
        }
        if c.status != "OK" {
            let sample = format!("{}: {}", c.status, c.message.as_deref().unwrap_or(""));
            if errors.len() < 5 && !errors.contains(&sample) {
                errors.push(sample);
            }
        }
    }
    CallReport {
        by_peer,
        by_status,
        failed_by_peer,
        errors,
        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        calls: if keep { calls } else { Vec::new() },
    }
}
