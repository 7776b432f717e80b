//! The layer that adds the echo metadata to every response, whatever service answered.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};

use crate::{AUTHORITY_HEADER, BACKEND_HEADER, PEER_HEADER, REQUEST_HEADER_PREFIX};

/// The `:authority` of the request, for handlers (tonic passes request extensions on).
#[derive(Clone, Debug)]
pub(crate) struct RequestAuthority(pub(crate) String);

/// Who the caller is, as its connection authenticated it: the `Connected::ConnectInfo` of
/// the connections given to
/// [`EchoServer::start_with_incoming`](crate::EchoServer::start_with_incoming) (tonic puts
/// it in each request's extensions), reported in [`PEER_HEADER`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The SPIFFE ID (URI SAN) of the client certificate; `None` when it has none (then
    /// no header is sent).
    pub spiffe_id: Option<String>,
}

/// A request as the server received it: what tests check of mirrored and routed calls.
#[derive(Clone, Debug)]
pub struct Received {
    /// The HTTP method (gRPC: `POST`).
    pub method: Method,
    /// The path, `/package.Service/Method`.
    pub path: String,
    /// Every request header, metadata included.
    pub headers: HeaderMap,
}

/// The last requests a server received, oldest first.
pub(crate) type ReceivedLog = Arc<Mutex<VecDeque<Received>>>;

/// How many requests [`ReceivedLog`] keeps.
pub(crate) const RECEIVED_KEPT: usize = 4096;

#[derive(Clone, Debug)]
pub(crate) struct EchoHeadersLayer {
    pub(crate) backend: Arc<HeaderValue>,
    pub(crate) received: ReceivedLog,
}

impl<S> tower::Layer<S> for EchoHeadersLayer {
    type Service = EchoHeaders<S>;

    fn layer(&self, inner: S) -> EchoHeaders<S> {
        EchoHeaders {
            inner,
            backend: self.backend.clone(),
            received: self.received.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct EchoHeaders<S> {
    inner: S,
    backend: Arc<HeaderValue>,
    received: ReceivedLog,
}

/// Request headers that belong to the protocol, not to the caller's metadata.
const PROTOCOL_HEADERS: &[&str] = &[
    "te",
    "content-type",
    "grpc-accept-encoding",
    "grpc-encoding",
    "grpc-timeout",
];

fn echoed(request: &HeaderMap, authority: &str, backend: &HeaderValue) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(BACKEND_HEADER, backend.clone());
    if let Ok(v) = HeaderValue::from_str(authority) {
        out.insert(AUTHORITY_HEADER, v);
    }
    for name in request.keys() {
        if PROTOCOL_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let joined: Vec<&[u8]> = request
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let value = HeaderValue::from_bytes(&joined.join(&b","[..]));
        let echo = HeaderName::from_bytes(format!("{REQUEST_HEADER_PREFIX}{name}").as_bytes());
        if let (Ok(echo), Ok(value)) = (echo, value) {
            out.insert(echo, value);
        }
    }
    out
}

impl<S, B, RB> tower::Service<Request<B>> for EchoHeaders<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .map(String::from)
            })
            .unwrap_or_default();
        let mut extra = echoed(req.headers(), &authority, &self.backend);
        let peer = req
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|p| p.spiffe_id.as_deref())
            .and_then(|id| HeaderValue::from_str(id).ok());
        if let Some(peer) = peer {
            extra.insert(PEER_HEADER, peer);
        }
        {
            let mut log = self.received.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() == RECEIVED_KEPT {
                log.pop_front();
            }
            log.push_back(Received {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                headers: req.headers().clone(),
            });
        }
        req.extensions_mut().insert(RequestAuthority(authority));
        let future = self.inner.call(req);
        Box::pin(async move {
            let mut response = future.await?;
            for (name, value) in &extra {
                response.headers_mut().insert(name.clone(), value.clone());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_metadata_but_not_protocol_headers() {
        let mut req = HeaderMap::new();
        req.insert("content-type", HeaderValue::from_static("application/grpc"));
        req.insert("te", HeaderValue::from_static("trailers"));
        req.append("x-tag", HeaderValue::from_static("a"));
        req.append("x-tag", HeaderValue::from_static("b"));
        let out = echoed(&req, "echo.ns:7070", &HeaderValue::from_static("echo-v1"));
        assert_eq!(out[BACKEND_HEADER], "echo-v1");
        assert_eq!(out[AUTHORITY_HEADER], "echo.ns:7070");
        assert_eq!(out["x-echo-request-x-tag"], "a,b");
        assert!(!out.contains_key("x-echo-request-content-type"));
        assert!(!out.contains_key("x-echo-request-te"));
    }
}
