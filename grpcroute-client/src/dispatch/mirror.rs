//! RequestMirror: copies of a call's request, fed from the primary request body as it is
//! sent. The primary never waits for a mirror: a mirror that cannot keep up is abandoned.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame};
use tokio::sync::mpsc;
use tonic::body::Body;

/// Frames a mirror may lag behind the primary before it is abandoned.
const MIRROR_BUFFER: usize = 16;

/// Replaces `req`'s body with one that copies every frame to `count` mirror requests, and
/// returns those (same method, URI, headers; no extensions).
pub(crate) fn tee(req: &mut Request<Body>, count: usize) -> Vec<Request<Body>> {
    let copy = |body: Body| {
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        copy
    };
    // A body that is already over will never be polled: its copies are empty too.
    if req.body().is_end_stream() {
        return (0..count).map(|_| copy(Body::empty())).collect();
    }
    let mut senders = Vec::with_capacity(count);
    let mut copies = Vec::with_capacity(count);
    for _ in 0..count {
        let (tx, rx) = mpsc::channel(MIRROR_BUFFER);
        let abandoned = Arc::new(AtomicBool::new(false));
        senders.push(MirrorTx {
            tx: Some(tx),
            abandoned: abandoned.clone(),
        });
        copies.push(copy(Body::new(MirrorBody { rx, abandoned })));
    }
    let primary = std::mem::replace(req.body_mut(), Body::empty());
    *req.body_mut() = Body::new(TeeBody {
        inner: primary,
        mirrors: senders,
    });
    copies
}

struct MirrorTx {
    tx: Option<mpsc::Sender<Frame<Bytes>>>,
    abandoned: Arc<AtomicBool>,
}

pin_project_lite::pin_project! {
    struct TeeBody {
        #[pin]
        inner: Body,
        mirrors: Vec<MirrorTx>,
    }
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                // A body may say it is over through `is_end_stream` instead of a last poll
                // (`Full`, and a unary request once its message is read): the copies end
                // with this frame, cleanly, since nobody polls again.
                let ended = this.inner.is_end_stream();
                for m in this.mirrors.iter_mut() {
                    let Some(tx) = &m.tx else { continue };
                    let copy = match frame.data_ref() {
                        Some(data) => Frame::data(data.clone()),
                        None => match frame.trailers_ref() {
                            Some(trailers) => Frame::trailers(trailers.clone()),
                            None => continue,
                        },
                    };
                    if tx.try_send(copy).is_err() {
                        // Full or gone: give up on this mirror rather than hold the primary.
                        m.abandoned.store(true, Ordering::Release);
                        m.tx = None;
                    } else if ended {
                        m.tx = None;
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                for m in this.mirrors.iter_mut() {
                    m.abandoned.store(true, Ordering::Release);
                    m.tx = None;
                }
            }
            // End of the primary body: dropping the senders ends the mirrors' bodies.
            Poll::Ready(None) => {
                for m in this.mirrors.iter_mut() {
                    m.tx = None;
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MirrorTx {
    fn drop(&mut self) {
        // Dropped with the primary body before its end (the call was cancelled): the
        // mirror's copy is incomplete and must not be sent as if whole.
        if self.tx.is_some() && !std::thread::panicking() {
            self.abandoned.store(true, Ordering::Release);
        }
    }
}

struct MirrorBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
    abandoned: Arc<AtomicBool>,
}

impl HttpBody for MirrorBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) if self.abandoned.load(Ordering::Acquire) => {
                // An error resets the mirror's stream instead of ending it cleanly.
                Poll::Ready(Some(Err(tonic::Status::cancelled(
                    "mirror abandoned: it fell behind the primary call",
                ))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn mirrors_receive_the_same_frames() {
        let mut req = Request::new(Body::new(http_body_util::Full::new(Bytes::from_static(
            b"payload",
        ))));
        req.headers_mut().insert("x-a", "1".parse().unwrap());
        let copies = tee(&mut req, 2);
        let primary = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(primary, Bytes::from_static(b"payload"));
        for copy in copies {
            assert_eq!(copy.headers()["x-a"], "1");
            assert_eq!(
                copy.into_body().collect().await.unwrap().to_bytes(),
                Bytes::from_static(b"payload")
            );
        }
    }

    #[tokio::test]
    async fn a_slow_mirror_is_abandoned_without_holding_the_primary() {
        // More frames than the mirror buffer holds, and nobody reads the mirror.
        let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = (0..MIRROR_BUFFER * 3)
            .map(|i| Ok(Frame::data(Bytes::from(i.to_string()))))
            .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut req = Request::new(Body::new(body));
        let mut copies = tee(&mut req, 1);
        let primary = req
            .into_body()
            .collect()
            .await
            .expect("primary completes in full");
        assert!(primary.to_bytes().len() > MIRROR_BUFFER);
        let mirror = copies.pop().unwrap().into_body().collect().await;
        assert!(
            mirror.is_err(),
            "the abandoned mirror ends with an error, not a truncated success"
        );
    }
}
