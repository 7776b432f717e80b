//! [`FirstRead`]: reports how the first read on a new TLS connection ended.
//!
//! In TLS 1.3 the client's side of the handshake ends before the server has judged the
//! client's certificate: a server that refuses it says so with an alert that arrives
//! afterwards, on the first read. Without waiting for that read, a refused certificate
//! would look like a connection that dropped under the first call. The server's HTTP/2
//! SETTINGS frame (its mandatory first frame) is what arrives when it accepted us.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
};

use super::TlsFailure;

pin_project! {
    /// An I/O stream that sends the outcome of its first completed read.
    pub(crate) struct FirstRead<T> {
        #[pin]
        inner: T,
        verdict: Option<oneshot::Sender<Result<(), TlsFailure>>>,
        presented_certificate: bool,
    }
}

impl<T> FirstRead<T> {
    /// `presented_certificate`: whether the client offered a certificate, which tells what
    /// a connection closed without an alert most likely means.
    pub(crate) fn new(
        inner: T,
        presented_certificate: bool,
    ) -> (Self, oneshot::Receiver<Result<(), TlsFailure>>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner,
                verdict: Some(tx),
                presented_certificate,
            },
            rx,
        )
    }
}

/// A server that closes the connection as soon as the handshake is over, without a word:
/// gRPC C-core does this when it rejects the client's certificate (its alert is not sent).
fn closed(presented_certificate: bool) -> TlsFailure {
    if presented_certificate {
        TlsFailure::ClientCertificateRefused(
            "no alert: it closed the connection right after the handshake".into(),
        )
    } else {
        TlsFailure::Handshake("the server closed the connection right after the handshake".into())
    }
}

impl<T: AsyncRead> AsyncRead for FirstRead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if let Poll::Ready(result) = &polled
            && let Some(tx) = this.verdict.take()
        {
            let verdict = match result {
                Ok(()) if buf.filled().len() > before => Ok(()),
                Ok(()) => Err(closed(*this.presented_certificate)),
                Err(e) => match TlsFailure::from_io(e) {
                    TlsFailure::NoServerCertificate(_) => Err(closed(*this.presented_certificate)),
                    other => Err(other),
                },
            };
            // The connector may have stopped waiting (timeout); nothing to tell then.
            let _ = tx.send(verdict);
        }
        polled
    }
}

impl<T: AsyncRead> FirstRead<T> {
    /// A write failed before the first read completed. A server that refused our
    /// certificate has sent its alert and closed; if the client's HTTP/2 preface went out
    /// late (a busy machine), the write fails on the closed connection before anything is
    /// read, and the connection would be dropped with the alert unread. So the verdict is
    /// read now from what the server sent: the alert, or the end of the connection. The
    /// kernel keeps received data readable after a reset, but the runtime may not have
    /// seen the socket become readable yet: then this is `Pending`, and the write waits
    /// (woken when the socket is readable) instead of failing first.
    fn settle_after_write_error(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        error: &io::Error,
    ) -> Poll<()> {
        let this = self.project();
        match this.verdict {
            None => return Poll::Ready(()),
            // The connector stopped waiting (its timeout): nobody needs the verdict, and a
            // write must not wait for a read that may never come.
            Some(tx) if tx.is_closed() => {
                *this.verdict = None;
                return Poll::Ready(());
            }
            Some(_) => {}
        }
        let mut scratch = [0u8; 256];
        let mut buf = ReadBuf::new(&mut scratch);
        let failure = match this.inner.poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => closed(*this.presented_certificate),
            Poll::Ready(Err(e)) => match TlsFailure::from_io(&e) {
                TlsFailure::NoServerCertificate(_) => closed(*this.presented_certificate),
                other => other,
            },
            // Data: the server accepted us, and the write broke for another reason.
            Poll::Ready(Ok(())) => TlsFailure::Handshake(format!(
                "writing to the server failed before its first frame: {error}"
            )),
        };
        if let Some(tx) = this.verdict.take() {
            // The connector may have stopped waiting (timeout); nothing to tell then.
            let _ = tx.send(Err(failure));
        }
        Poll::Ready(())
    }

    /// `polled`, unless it is a write error before the first read: then the verdict is
    /// settled first, and the write is `Pending` until it can be.
    fn watch_write<R>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(Err(error)) if self.verdict.is_some() => {
                match self.as_mut().settle_after_write_error(cx, &error) {
                    // Polled again once the socket is readable; the write fails again then.
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Err(error)),
                }
            }
            other => other,
        }
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncWrite for FirstRead<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.as_mut().project().inner.poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.as_mut().project().inner.poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.as_mut().project().inner.poll_flush(cx);
        self.watch_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing never waits for the verdict.
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use rustls::AlertDescription;

    use super::*;

    /// A connection the server has refused and closed: writes fail, and a read returns
    /// what is still buffered (`readable`). With `unseen`, the runtime has not yet seen
    /// the socket readable: the first read is `Pending` (and wakes the task).
    struct Refused {
        unseen: bool,
        readable: Option<io::Error>,
    }

    impl AsyncRead for Refused {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if std::mem::take(&mut self.unseen) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.readable.take().map_or(Ok(()), Err))
        }
    }

    impl AsyncWrite for Refused {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failed_write_waits_for_the_alert_the_runtime_has_not_seen_yet() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        let inner = Refused {
            unseen: true,
            readable: Some(alert),
        };
        let (stream, verdict) = FirstRead::new(inner, true);
        let mut stream = Box::pin(stream);
        let mut polls = 0;
        let wrote = poll_fn(|cx| {
            polls += 1;
            stream.as_mut().poll_write(cx, b"PRI * HTTP/2.0")
        })
        .await;
        assert_eq!(polls, 2, "pending until the read side could be read");
        assert_eq!(wrote.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        drop(stream);
        assert_eq!(
            verdict.await.expect("a verdict"),
            Err(TlsFailure::ClientCertificateRefused(
                "alert: certificate_required".into()
            ))
        );
    }

    #[tokio::test]
    async fn a_failed_write_does_not_wait_once_the_connector_has_gone() {
        let inner = Refused {
            unseen: true,
            readable: None,
        };
        let (stream, verdict) = FirstRead::new(inner, true);
        drop(verdict);
        let mut stream = Box::pin(stream);
        let wrote = poll_fn(|cx| Poll::Ready(stream.as_mut().poll_write(cx, b"x"))).await;
        assert!(
            matches!(wrote, Poll::Ready(Err(ref e)) if e.kind() == io::ErrorKind::BrokenPipe),
            "{wrote:?}"
        );
    }

    async fn verdict_after_a_failed_write(readable: Option<io::Error>) -> Result<(), TlsFailure> {
        let (stream, verdict) = FirstRead::new(
            Refused {
                unseen: false,
                readable,
            },
            true,
        );
        let mut stream = Box::pin(stream);
        let wrote = poll_fn(|cx| stream.as_mut().poll_write(cx, b"PRI * HTTP/2.0")).await;
        assert_eq!(wrote.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        drop(stream);
        verdict
            .await
            .expect("a verdict is sent before the stream is dropped")
    }

    #[tokio::test]
    async fn an_alert_behind_a_failed_write_is_the_verdict() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        assert_eq!(
            verdict_after_a_failed_write(Some(alert)).await,
            Err(TlsFailure::ClientCertificateRefused(
                "alert: unknown_ca".into()
            ))
        );
    }

    #[tokio::test]
    async fn a_close_behind_a_failed_write_is_a_refusal_without_alert() {
        assert_eq!(verdict_after_a_failed_write(None).await, Err(closed(true)));
    }
}
