//! Making a call's request sendable again when a server refuses its stream (a GOAWAY
//! above its last accepted stream, or `REFUSED_STREAM`): the server promises it did not
//! process such a stream, and gRPC asks clients to retry it elsewhere.
//!
//! Only a request whose body is complete the moment it is sent — every unary call from a
//! tonic client — is kept, and only up to [`MAX_REPLAY_BYTES`]; a streaming request is
//! sent as is and cannot be replayed.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;

/// Requests larger than this are not kept for a retry (linkerd uses the same bound).
pub(crate) const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// A request that can be rebuilt for another attempt.
#[derive(Debug)]
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    /// Keeps a copy of `req` if its body is already complete and small; otherwise leaves
    /// `req` as it was (frames already read are put back in front of the rest).
    pub(crate) fn capture(req: &mut Request<Body>) -> Option<Self> {
        let body = req.body_mut();
        let mut cx = Context::from_waker(Waker::noop());
        let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
        let mut size = 0;
        let complete = loop {
            if body.is_end_stream() {
                break true;
            }
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Ready(None) => break true,
                Poll::Ready(Some(Ok(frame))) => {
                    let data = frame.data_ref().map_or(0, Bytes::len);
                    let trailers = frame.is_trailers();
                    size += data;
                    frames.push_back(frame);
                    if trailers || size > MAX_REPLAY_BYTES {
                        break false;
                    }
                }
                // Not ready yet (a streaming request), or failing: sent as is.
                Poll::Pending | Poll::Ready(Some(Err(_))) => break false,
            }
        };
        if !complete {
            let rest = std::mem::replace(body, Body::empty());
            *body = Body::new(Prefixed { frames, rest });
            return None;
        }
        let body = match frames.len() {
            0 => Bytes::new(),
            1 => frames
                .pop_front()
                .and_then(|f| f.into_data().ok())
                .unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(size);
                for f in frames {
                    if let Ok(data) = f.into_data() {
                        joined.extend_from_slice(&data);
                    }
                }
                joined.freeze()
            }
        };
        *req.body_mut() = full(body.clone());
        Some(Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        })
    }

    /// The request again, for another attempt.
    pub(crate) fn request(&self) -> Request<Body> {
        let mut req = Request::new(full(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

fn full(bytes: Bytes) -> Body {
    if bytes.is_empty() {
        Body::empty()
    } else {
        Body::new(http_body_util::Full::new(bytes))
    }
}

/// A body some of whose frames were already read.
struct Prefixed {
    frames: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }
}

/// Whether the server refused the stream without processing it.
pub(crate) fn refused(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return (h2.is_go_away() && h2.is_remote())
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn request(body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.uri_mut() = "http://svc.ns:50051/pkg.Svc/Method".parse().unwrap();
        req.headers_mut().insert("x-a", "1".parse().unwrap());
        req
    }

    #[tokio::test]
    async fn a_complete_body_is_kept_and_replayed() {
        let mut req = request(Body::new(http_body_util::Full::new(Bytes::from_static(
            b"hello",
        ))));
        let replay = Replay::capture(&mut req).expect("a unary body is complete");
        assert_eq!(
            req.into_body().collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"hello")
        );
        for _ in 0..2 {
            let again = replay.request();
            assert_eq!(again.uri().path(), "/pkg.Svc/Method");
            assert_eq!(again.headers()["x-a"], "1");
            assert_eq!(
                again.into_body().collect().await.unwrap().to_bytes(),
                Bytes::from_static(b"hello")
            );
        }
    }

    #[tokio::test]
    async fn a_streaming_body_is_sent_as_is_with_nothing_lost() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first "))))
            .await
            .unwrap();
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let mut req = request(Body::new(http_body_util::StreamBody::new(stream)));
        assert!(
            Replay::capture(&mut req).is_none(),
            "not complete: the next frame is pending"
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
            .await
            .unwrap();
        drop(tx);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            Bytes::from_static(b"first second"),
            "the frame read while capturing is not lost"
        );
    }

    #[tokio::test]
    async fn large_bodies_are_not_kept() {
        let big = Bytes::from(vec![7u8; MAX_REPLAY_BYTES + 1]);
        let mut req = request(Body::new(http_body_util::Full::new(big.clone())));
        assert!(Replay::capture(&mut req).is_none());
        assert_eq!(req.into_body().collect().await.unwrap().to_bytes(), big);
    }

    #[tokio::test]
    async fn empty_bodies_are_kept() {
        let mut req = request(Body::empty());
        let replay = Replay::capture(&mut req).unwrap();
        assert!(
            replay
                .request()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
    }
}
