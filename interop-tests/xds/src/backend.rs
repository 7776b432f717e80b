//! Loopback gRPC backends for the scenarios, modelled on the psm interop test server:
//! every method path is answered (an empty message, which decodes as any response type),
//! the initial metadata says `hostname: <name>`, and the request metadata `rpc-behavior`
//! changes the answer:
//!
//! - `sleep-N`: wait N seconds, then go on;
//! - `keep-open`: never answer (until the client cancels or the backend stops);
//! - `error-code-N`: fail with status code N (after sending the initial metadata);
//! - `succeed-on-retry-attempt-N` (also spelled `success-on-…`): answer OK at once if
//!   `grpc-previous-rpc-attempts` is N;
//! - `hostname=H <behaviour>`: apply `<behaviour>` only on the backend named H.
//!
//! Items are comma-separated and applied in order, values of a repeated header too.
//! Backends can be stopped (connections dropped, port closed) and restarted on the same
//! port.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::{lock, serve::H2Server};

/// The initial-metadata key naming the backend (as the psm interop server sends it).
pub const HOSTNAME_HEADER: &str = "hostname";
/// Also sent, for the project's echo-based helpers (`grpcroute-echo`'s header).
pub const ECHO_BACKEND_HEADER: &str = "x-echo-backend";
/// The request metadata key carrying the behaviour.
pub const RPC_BEHAVIOR_HEADER: &str = "rpc-behavior";

/// Why a backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The name is not a valid metadata value.
    #[error("backend name {0:?} is not a valid metadata value")]
    Name(String),
}

/// One step of an `rpc-behavior`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// `sleep-N`.
    Sleep(Duration),
    /// `keep-open`.
    KeepOpen,
    /// `error-code-N`.
    ErrorCode(u32),
    /// `succeed-on-retry-attempt-N`.
    SucceedOnRetryAttempt(u32),
}

/// The steps of `rpc-behavior` header values that apply to backend `hostname` (unknown
/// items are ignored, as the interop server does).
pub fn parse_behavior<'a>(
    values: impl IntoIterator<Item = &'a str>,
    hostname: &str,
) -> Vec<Behavior> {
    let mut steps = Vec::new();
    for value in values {
        for item in value.split(',') {
            let mut item = item.trim();
            if let Some(rest) = item.strip_prefix("hostname=") {
                let Some((host, behavior)) = rest.split_once(' ') else {
                    continue;
                };
                if host != hostname {
                    continue;
                }
                item = behavior.trim();
            }
            let number = |prefix: &str| {
                item.strip_prefix(prefix)
                    .and_then(|n| n.parse::<u32>().ok())
            };
            if let Some(n) = number("sleep-") {
                steps.push(Behavior::Sleep(Duration::from_secs(u64::from(n))));
            } else if item == "keep-open" {
                steps.push(Behavior::KeepOpen);
            } else if let Some(n) = number("error-code-") {
                steps.push(Behavior::ErrorCode(n));
            } else if let Some(n) =
                number("succeed-on-retry-attempt-").or_else(|| number("success-on-retry-attempt-"))
            {
                steps.push(Behavior::SucceedOnRetryAttempt(n));
            }
        }
    }
    steps
}

#[derive(Debug)]
struct Shared {
    name: String,
    hostname: HeaderValue,
    calls: AtomicU64,
    in_flight: AtomicU64,
    default_behavior: Mutex<Option<String>>,
    /// Bumped on stop, so that sleeping and kept-open calls end with the server.
    stopped: watch::Sender<u64>,
}

/// A loopback gRPC backend (see the module docs). Stops when dropped.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<H2Server>,
}

impl Backend {
    /// Starts backend `name` on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// No port, or a name that is not a valid metadata value.
    pub async fn start(name: &str) -> Result<Self, BackendError> {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts backend `name` on `addr`.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Result<Self, BackendError> {
        let hostname =
            HeaderValue::from_str(name).map_err(|_| BackendError::Name(name.to_string()))?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            hostname,
            calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            default_behavior: Mutex::new(None),
            stopped: watch::Sender::new(0),
        });
        let server = serve(shared.clone(), addr).await?;
        Ok(Self {
            addr: server.addr(),
            shared,
            server: Some(server),
        })
    }

    /// Its name (the `hostname` it answers with).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Calls received since it was created (restarts included).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// Calls being handled now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// An `rpc-behavior` applied to every call before the call's own (e.g. `error-code-14`
    /// for a backend that fails everything); `None` to clear.
    pub fn set_behavior(&self, behavior: Option<&str>) {
        *lock(&self.shared.default_behavior) = behavior.map(str::to_string);
    }

    /// Stops like a crashed process: connections dropped, port closed, calls in flight
    /// ended.
    pub fn stop(&mut self) {
        self.server.take();
        self.shared.stopped.send_modify(|g| *g += 1);
    }

    /// Serves again on the same port (a no-op when running).
    ///
    /// # Errors
    ///
    /// When the port cannot be bound again.
    pub async fn restart(&mut self) -> Result<(), BackendError> {
        if self.server.is_none() {
            self.server = Some(serve(self.shared.clone(), self.addr).await?);
        }
        Ok(())
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `n` backends named `{prefix}{i}` for i in 0..n.
///
/// # Errors
///
/// As [`Backend::start`].
pub async fn start_backends(prefix: &str, n: usize) -> Result<Vec<Backend>, BackendError> {
    let mut backends = Vec::with_capacity(n);
    for i in 0..n {
        backends.push(Backend::start(&format!("{prefix}{i}")).await?);
    }
    Ok(backends)
}

async fn serve(shared: Arc<Shared>, addr: SocketAddr) -> Result<H2Server, BackendError> {
    let bind_error = |source| BackendError::Bind { addr, source };
    let listener = crate::serve::bind(addr).await.map_err(bind_error)?;
    H2Server::spawn(listener, move |req| handle(shared.clone(), req)).map_err(bind_error)
}

type Body = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    shared.calls.fetch_add(1, Ordering::Relaxed);
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight(shared.clone());
    let mut stopped = shared.stopped.subscribe();
    stopped.borrow_and_update();

    let default = lock(&shared.default_behavior).clone();
    let headers = req.headers();
    let values = default.iter().map(String::as_str).chain(
        headers
            .get_all(RPC_BEHAVIOR_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let steps = parse_behavior(values, &shared.name);
    let attempts: Option<u32> = headers
        .get("grpc-previous-rpc-attempts")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());

    // Read the request to its end first, as a real handler does: an unread request stream
    // left open makes HTTP/2 peers reset the connection.
    let _ = req.into_body().collect().await;

    let mut status = 0;
    for step in steps {
        match step {
            Behavior::SucceedOnRetryAttempt(n) if attempts.unwrap_or(0) == n => break,
            Behavior::SucceedOnRetryAttempt(_) => {}
            Behavior::Sleep(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stopped.changed() => return Ok(reset()),
                }
            }
            Behavior::KeepOpen => {
                let _ = stopped.changed().await;
                return Ok(reset());
            }
            Behavior::ErrorCode(code) => {
                status = code;
                break;
            }
        }
    }
    Ok(answer(&shared.hostname, status))
}

/// What a stopped backend leaves a call with: an internal error (the connection is going
/// away anyway).
fn reset() -> Response<Body> {
    answer(&HeaderValue::from_static(""), 14)
}

fn answer(hostname: &HeaderValue, status: u32) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    if status != 0 {
        trailers.insert(
            "grpc-message",
            HeaderValue::from_static("failed as rpc-behavior asked"),
        );
    }
    let mut frames = Vec::with_capacity(2);
    if status == 0 {
        // One message: not compressed, length 0.
        frames.push(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut response = Response::new(StreamBody::new(tokio_stream::iter(frames)));
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert(HOSTNAME_HEADER, hostname.clone());
    h.insert(ECHO_BACKEND_HEADER, hostname.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_interop_behaviours() {
        assert_eq!(
            parse_behavior(["sleep-2, keep-open", "error-code-14"], "b1"),
            [
                Behavior::Sleep(Duration::from_secs(2)),
                Behavior::KeepOpen,
                Behavior::ErrorCode(14)
            ]
        );
        assert_eq!(
            parse_behavior(["succeed-on-retry-attempt-4,error-code-14"], "b1"),
            [Behavior::SucceedOnRetryAttempt(4), Behavior::ErrorCode(14)]
        );
    }

    #[test]
    fn hostname_prefix_selects_the_backend() {
        let v = ["hostname=b2 error-code-2, sleep-1"];
        assert_eq!(
            parse_behavior(v, "b2"),
            [
                Behavior::ErrorCode(2),
                Behavior::Sleep(Duration::from_secs(1))
            ]
        );
        assert_eq!(
            parse_behavior(v, "b1"),
            [Behavior::Sleep(Duration::from_secs(1))]
        );
        assert!(parse_behavior(["bogus, error-code-x"], "b1").is_empty());
    }
}
