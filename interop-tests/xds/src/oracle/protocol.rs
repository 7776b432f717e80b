//! The driver protocol's commands and results.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ResourceType;

/// A batch of unary calls with an empty request message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSpec {
    /// `xds:///NAME`.
    pub target: String,
    /// `/pkg.Service/Method`.
    pub method: String,
    /// Request metadata, in order (repeated keys allowed).
    pub metadata: Vec<(String, String)>,
    /// How many calls (default 1).
    pub count: u32,
    /// Each call's deadline in milliseconds (default 10 000; 0: none, bounded only by the
    /// harness's own 30 s hang detector).
    pub timeout_ms: u64,
    /// Calls in flight at once (default 1: one after the other).
    pub concurrency: u32,
    /// gRPC `wait_for_ready` (default false: fail fast while the channel is failing).
    pub wait_for_ready: bool,
    /// Return every call's outcome in [`CallReport::calls`] (default false).
    pub record: bool,
}

impl CallSpec {
    /// One call of `method` to `target`.
    pub fn new(target: &str, method: &str) -> Self {
        Self {
            target: target.to_string(),
            method: method.to_string(),
            metadata: Vec::new(),
            count: 1,
            timeout_ms: 10_000,
            concurrency: 1,
            wait_for_ready: false,
            record: false,
        }
    }

    /// Adds request metadata.
    #[must_use]
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets the number of calls.
    #[must_use]
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// Sets each call's deadline.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets how many calls are in flight at once.
    #[must_use]
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sets `wait_for_ready`.
    #[must_use]
    pub fn wait_for_ready(mut self, wait_for_ready: bool) -> Self {
        self.wait_for_ready = wait_for_ready;
        self
    }

    /// Asks for every call's outcome.
    #[must_use]
    pub fn record(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "method": self.method,
            "metadata": self.metadata,
            "count": self.count,
            "timeout_ms": self.timeout_ms,
            "concurrency": self.concurrency,
            "wait_for_ready": self.wait_for_ready,
            "record": self.record,
        })
    }
}

/// One call's outcome (with [`CallSpec::record`]).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CallRecord {
    /// Its position in the batch.
    pub index: u64,
    /// The `hostname` the backend answered with, if any.
    pub peer: Option<String>,
    /// The status name (`OK`, `UNAVAILABLE`, …).
    pub status: String,
    /// How long it took.
    pub ms: f64,
    /// The status message of a failed call.
    pub message: Option<String>,
}

/// The tally of a batch of calls.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CallReport {
    /// Successful calls per backend (`hostname` initial metadata).
    pub by_peer: BTreeMap<String, u64>,
    /// Calls per final status name.
    pub by_status: BTreeMap<String, u64>,
    /// Failed calls that still named a backend (e.g. `error-code-N` answers).
    #[serde(default)]
    pub failed_by_peer: BTreeMap<String, u64>,
    /// Up to five distinct `STATUS: message` samples of failures.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Wall time of the batch.
    pub elapsed_ms: f64,
    /// Every call, in batch order, when recorded.
    #[serde(default)]
    pub calls: Vec<CallRecord>,
}

impl CallReport {
    /// Calls that ended with status `name`.
    pub fn status(&self, name: &str) -> u64 {
        self.by_status.get(name).copied().unwrap_or(0)
    }

    /// Successful calls.
    pub fn ok(&self) -> u64 {
        self.status("OK")
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Calls that did not succeed.
    pub fn failures(&self) -> u64 {
        self.total() - self.ok()
    }

    /// Successful calls answered by `peer`.
    pub fn peer(&self, peer: &str) -> u64 {
        self.by_peer.get(peer).copied().unwrap_or(0)
    }
}

/// Calls started together and kept in flight (circuit breaking).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldSpec {
    /// The calls (`count`, `metadata` — typically `rpc-behavior: keep-open` — and deadline).
    pub call: CallSpec,
    /// Time between two call starts (0: all at once). grpc-js counts a call against
    /// `max_requests` only once it has started, so calls picked in the same event-loop
    /// tick all pass the breaker: space them (psm sends at a fixed QPS).
    pub interval_ms: u64,
    /// How long to wait after starting the last one before reporting.
    pub settle_ms: u64,
}

impl HoldSpec {
    /// `call.count` calls at once, reported `settle` after the last one started.
    pub fn new(call: CallSpec, settle: Duration) -> Self {
        Self {
            call,
            interval_ms: 0,
            settle_ms: u64::try_from(settle.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Starts the calls `interval` apart.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut v = self.call.to_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("settle_ms".to_string(), json!(self.settle_ms));
            o.insert("interval_ms".to_string(), json!(self.interval_ms));
        }
        v
    }
}

/// The state of held calls.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct HoldReport {
    /// The hold's id, for [`Oracle::release`](super::Oracle::release).
    pub hold: u64,
    /// Calls still open.
    pub in_flight: u64,
    /// How the others ended, per status name.
    pub by_status: BTreeMap<String, u64>,
    /// Successful ones per backend.
    pub by_peer: BTreeMap<String, u64>,
    /// Failure samples.
    #[serde(default)]
    pub errors: Vec<String>,
}

impl HoldReport {
    /// Ended calls with status `name`.
    pub fn status(&self, name: &str) -> u64 {
        self.by_status.get(name).copied().unwrap_or(0)
    }
}

/// One resource of a CSDS dump.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CsdsResource {
    /// The XdsClient's scope (C-core: the channel target, e.g. `xds:/svc`).
    #[serde(default)]
    pub client_scope: String,
    /// The resource's type, as the client reports it: C-core gives the full type url,
    /// grpc-js-xds the message name without `type.googleapis.com/`.
    pub type_url: String,
    /// Its name.
    pub name: String,
    /// The version of the accepted copy (empty if none).
    #[serde(default)]
    pub version: String,
    /// `REQUESTED`, `DOES_NOT_EXIST`, `ACKED`, `NACKED`, `RECEIVED_ERROR`, `TIMEOUT`, …
    pub status: String,
    /// The last error (the NACK's reason).
    #[serde(default)]
    pub error: Option<String>,
    /// The version that was rejected.
    #[serde(default)]
    pub error_version: Option<String>,
    /// The accepted resource as JSON (Python with `csds_with(true)`).
    #[serde(default)]
    pub config: Option<Value>,
}

impl CsdsResource {
    /// Its type, if one of the four (with or without the `type.googleapis.com/` prefix).
    pub fn kind(&self) -> Option<ResourceType> {
        ResourceType::from_type_url(&self.type_url).or_else(|| {
            ResourceType::ALL
                .into_iter()
                .find(|t| t.type_url().strip_prefix("type.googleapis.com/") == Some(&self.type_url))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_spec_json_is_what_the_drivers_read() {
        let spec = CallSpec::new("xds:///svc", "/a.B/C")
            .metadata("k", "v")
            .count(10)
            .timeout(Duration::from_millis(1500))
            .concurrency(0)
            .wait_for_ready(true)
            .record(true);
        let j = spec.to_json();
        assert_eq!(j["metadata"], json!([["k", "v"]]));
        assert_eq!(j["timeout_ms"], 1500);
        assert_eq!(j["concurrency"], 1);
        assert_eq!(j["wait_for_ready"], true);
        let h = HoldSpec::new(spec, Duration::from_secs(2)).to_json();
        assert_eq!(h["settle_ms"], 2000);
        assert_eq!(h["count"], 10);
    }

    #[test]
    fn reports_decode() {
        let r: CallReport = serde_json::from_value(json!({
            "by_peer": {"b0": 3}, "by_status": {"OK": 3, "UNAVAILABLE": 1},
            "errors": ["UNAVAILABLE: x"], "elapsed_ms": 1.5
        }))
        .unwrap();
        assert_eq!(
            (r.ok(), r.failures(), r.total(), r.peer("b0")),
            (3, 1, 4, 3)
        );
        let c: CsdsResource = serde_json::from_value(json!({
            "type_url": "envoy.config.listener.v3.Listener", "name": "svc",
            "version": "1", "status": "ACKED"
        }))
        .unwrap();
        assert_eq!(c.kind(), Some(ResourceType::Listener));
    }
}
