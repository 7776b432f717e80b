//! The control plane's record of every stream, request and response, and waiting on it.

use std::{fmt::Write as _, sync::Mutex, time::Duration};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::{sync::watch, time::Instant};

use crate::{ResourceType, lock};

/// The `error_detail` of a NACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorDetail {
    /// The status code (gRPC clients send INVALID_ARGUMENT, 3).
    pub code: i32,
    /// The client's validation errors.
    pub message: String,
}

/// One `DiscoveryRequest` as received.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// The stream it came on (numbered from 1 by the control plane).
    pub stream: u64,
    /// The node id of the stream (sent on its first request only; empty if never sent).
    pub node_id: String,
    /// Whether this request carried the `node` itself.
    pub has_node: bool,
    /// The requested type.
    pub type_url: String,
    /// `version_info`: the last version the client accepted of this type.
    pub version_info: String,
    /// `response_nonce`: the response this request answers (empty on a new stream).
    pub response_nonce: String,
    /// `resource_names`, as sent.
    pub resource_names: Vec<String>,
    /// `error_detail`: set on a NACK.
    pub error: Option<ErrorDetail>,
    /// When it arrived.
    pub at: Instant,
}

impl LoggedRequest {
    /// Its resource type, if it is one of the four.
    pub fn kind(&self) -> Option<ResourceType> {
        ResourceType::from_type_url(&self.type_url)
    }

    /// A NACK: it has an `error_detail`.
    pub fn is_nack(&self) -> bool {
        self.error.is_some()
    }

    /// An ACK of `version` of `kind`: no error, that `version_info`, and a nonce (a first
    /// request on a new stream repeats the version but has no nonce).
    pub fn is_ack_of(&self, kind: ResourceType, version: &str) -> bool {
        self.kind() == Some(kind)
            && self.error.is_none()
            && self.version_info == version
            && !self.response_nonce.is_empty()
    }

    /// The resource names, sorted (clients send them in no particular order).
    pub fn sorted_names(&self) -> Vec<String> {
        let mut names = self.resource_names.clone();
        names.sort();
        names
    }
}

/// One `DiscoveryResponse` as sent.
#[derive(Clone, Debug)]
pub struct LoggedResponse {
    /// The stream it went to.
    pub stream: u64,
    /// The node id of the stream.
    pub node_id: String,
    /// Its type.
    pub type_url: String,
    /// `version_info`.
    pub version_info: String,
    /// `nonce`.
    pub nonce: String,
    /// Names of the resources it carried (for `push_raw`, the packed types' urls when a
    /// body does not decode to a named resource).
    pub resource_names: Vec<String>,
    /// Sent with `ControlPlane::push_raw` rather than computed from the resources.
    pub raw: bool,
    /// When it was sent.
    pub at: Instant,
}

/// A stream opening or ending.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    /// The stream.
    pub stream: u64,
    /// Its node id (empty if it ended before its first request).
    pub node_id: String,
    /// `None` when it opened (its first request arrived); why it ended otherwise.
    pub ended: Option<String>,
    /// When.
    pub at: Instant,
}

/// Anything the control plane records, in order.
#[derive(Clone, Debug)]
pub enum LogEntry {
    /// A request arrived.
    Request(LoggedRequest),
    /// A response was sent.
    Response(LoggedResponse),
    /// A stream opened or ended.
    Stream(StreamEvent),
    /// A new stream was refused (UNAVAILABLE at once) while refusing.
    Refused {
        /// When.
        at: Instant,
    },
}

impl LogEntry {
    /// When it happened.
    pub fn at(&self) -> Instant {
        match self {
            LogEntry::Request(r) => r.at,
            LogEntry::Response(r) => r.at,
            LogEntry::Stream(s) => s.at,
            LogEntry::Refused { at } => *at,
        }
    }

    fn node_id(&self) -> Option<&str> {
        match self {
            LogEntry::Request(r) => Some(&r.node_id),
            LogEntry::Response(r) => Some(&r.node_id),
            LogEntry::Stream(s) => Some(&s.node_id),
            LogEntry::Refused { .. } => None,
        }
    }
}

/// A position in the log: waits starting from a mark see only later entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogMark(pub usize);

impl LogMark {
    /// The beginning: everything ever logged.
    pub const START: LogMark = LogMark(0);
}

/// A wait on the log ended without its condition.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for node {node:?}: {what}\nits log:\n{log}")]
pub struct WaitError {
    /// What was awaited.
    pub what: String,
    /// The node.
    pub node: String,
    /// How long.
    pub after: Duration,
    /// The node's requests and responses, one per line.
    pub log: String,
}

#[derive(Debug)]
pub(crate) struct Log {
    entries: Mutex<Vec<LogEntry>>,
    changed: watch::Sender<usize>,
}

impl Log {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
        }
    }

    fn push(&self, entry: LogEntry) {
        let len = {
            let mut entries = lock(&self.entries);
            entries.push(entry);
            entries.len()
        };
        self.changed.send_replace(len);
    }

    pub(crate) fn request(&self, stream: u64, node_id: &str, request: &DiscoveryRequest) {
        self.push(LogEntry::Request(LoggedRequest {
            stream,
            node_id: node_id.to_string(),
            has_node: request.node.is_some(),
            type_url: request.type_url.clone(),
            version_info: request.version_info.clone(),
            response_nonce: request.response_nonce.clone(),
            resource_names: request.resource_names.clone(),
            error: request.error_detail.as_ref().map(|s| ErrorDetail {
                code: s.code,
                message: s.message.clone(),
            }),
            at: Instant::now(),
        }));
    }

    pub(crate) fn response(
        &self,
        stream: u64,
        node_id: &str,
        response: &DiscoveryResponse,
        names: Vec<String>,
        raw: bool,
    ) {
        self.push(LogEntry::Response(LoggedResponse {
            stream,
            node_id: node_id.to_string(),
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            nonce: response.nonce.clone(),
            resource_names: names,
            raw,
            at: Instant::now(),
        }));
    }

    pub(crate) fn stream(&self, stream: u64, node_id: &str, ended: Option<String>) {
        self.push(LogEntry::Stream(StreamEvent {
            stream,
            node_id: node_id.to_string(),
            ended,
            at: Instant::now(),
        }));
    }

    pub(crate) fn refused(&self) {
        self.push(LogEntry::Refused { at: Instant::now() });
    }

    pub(crate) fn mark(&self) -> LogMark {
        LogMark(lock(&self.entries).len())
    }

    pub(crate) fn entries(&self) -> Vec<LogEntry> {
        lock(&self.entries).clone()
    }

    pub(crate) fn for_node(&self, node_id: &str) -> Vec<LogEntry> {
        lock(&self.entries)
            .iter()
            .filter(|e| e.node_id() == Some(node_id))
            .cloned()
            .collect()
    }

    /// Waits until a request of `node_id` logged at or after `since` satisfies `pred`.
    pub(crate) async fn wait_for_request(
        &self,
        node_id: &str,
        since: LogMark,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&LoggedRequest) -> bool,
    ) -> Result<LoggedRequest, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let found = lock(&self.entries)
                .iter()
                .skip(since.0)
                .find_map(|e| match e {
                    LogEntry::Request(r) if r.node_id == node_id && pred(r) => Some(r.clone()),
                    _ => None,
                });
            if let Some(found) = found {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(WaitError {
                    what: what.to_string(),
                    node: node_id.to_string(),
                    after: timeout,
                    log: render(&self.for_node(node_id)),
                });
            }
        }
    }
}

/// One line per entry, relative times from the first.
pub(crate) fn render(entries: &[LogEntry]) -> String {
    match entries.first().map(LogEntry::at) {
        None => "(nothing)".to_string(),
        Some(start) => render_since(entries, start),
    }
}

/// One line per entry (`stream N <- Cluster version=… nonce=… names=[…]`, `->` for
/// responses), times relative to `start`.
pub fn render_since(entries: &[LogEntry], start: Instant) -> String {
    let mut out = String::new();
    for e in entries {
        let t = e.at().duration_since(start).as_secs_f64();
        let _ = match e {
            LogEntry::Request(r) => writeln!(
                out,
                "{t:8.3}s  stream {} <- {} version={:?} nonce={:?} names={:?}{}",
                r.stream,
                short_type(&r.type_url),
                r.version_info,
                r.response_nonce,
                r.resource_names,
                r.error
                    .as_ref()
                    .map(|e| format!(" NACK({}: {})", e.code, e.message))
                    .unwrap_or_default()
            ),
            LogEntry::Response(r) => writeln!(
                out,
                "{t:8.3}s  stream {} -> {} version={:?} nonce={:?} resources={:?}{}",
                r.stream,
                short_type(&r.type_url),
                r.version_info,
                r.nonce,
                r.resource_names,
                if r.raw { " (raw)" } else { "" }
            ),
            LogEntry::Stream(s) => match &s.ended {
                None => writeln!(out, "{t:8.3}s  stream {} opened", s.stream),
                Some(why) => writeln!(out, "{t:8.3}s  stream {} ended: {why}", s.stream),
            },
            LogEntry::Refused { .. } => writeln!(out, "{t:8.3}s  a stream was refused"),
        };
    }
    out
}

fn short_type(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}
