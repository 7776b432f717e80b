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

impl<T: AsyncWrite> AsyncWrite for FirstRead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
