//! A loopback TCP relay in front of one backend, for network faults the backend itself
//! cannot produce:
//!
//! - [`Relay::partition`]: stops forwarding in both directions, closing nothing — a
//!   silent partition, as when a host freezes or a network path drops every packet. Bytes
//!   sent meanwhile wait in the relay's socket buffers; connections made meanwhile are
//!   accepted (the kernel completes the handshake) but not connected onwards.
//! - [`Relay::resume`]: forwards again, including what waited.
//! - [`Relay::reset`]: resets every open connection on both sides (SO_LINGER 0, then
//!   close: the peers get a TCP RST), as a crashing host's kernel or a middlebox would.
//!   New connections are relayed as before.
//!
//! Only ever listens on 127.0.0.1.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpListener, TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
    sync::watch,
    task::{JoinHandle, JoinSet},
};

use crate::cluster::LOOPBACK;

/// Whether the relay forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Partition,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    reset: AtomicU64,
}

/// A running relay. Dropping it closes every connection.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    backend: SocketAddr,
    mode: watch::Sender<Mode>,
    resets: watch::Sender<u64>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and relays every connection to `backend`.
    ///
    /// # Errors
    ///
    /// No port can be bound.
    pub async fn start(backend: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((LOOPBACK, 0)).await?;
        let addr = listener.local_addr()?;
        let mode = watch::channel(Mode::Forward).0;
        let resets = watch::channel(0).0;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            backend,
            mode.subscribe(),
            resets.subscribe(),
            counters.clone(),
        ));
        Ok(Self {
            addr,
            backend,
            mode,
            resets,
            counters,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend it relays to.
    pub fn backend(&self) -> SocketAddr {
        self.backend
    }

    /// Stops forwarding in both directions, without closing anything.
    pub fn partition(&self) {
        self.mode.send_replace(Mode::Partition);
    }

    /// Forwards again (what waited is delivered).
    pub fn resume(&self) {
        self.mode.send_replace(Mode::Forward);
    }

    /// Whether it is partitioned.
    pub fn is_partitioned(&self) -> bool {
        *self.mode.borrow() == Mode::Partition
    }

    /// Resets every connection open now, on both sides (TCP RST).
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Connections ended by [`Relay::reset`] so far.
    pub fn reset_count(&self) -> u64 {
        self.counters.reset.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    backend: SocketAddr,
    mode: watch::Receiver<Mode>,
    resets: watch::Receiver<u64>,
    counters: Arc<Counters>,
) {
    // Dropping the set (when the relay is dropped) closes every connection.
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        let (mode, mut resets, counters) = (mode.clone(), resets.clone(), counters.clone());
        // Only resets ordered from now on concern this connection.
        resets.mark_unchanged();
        connections.spawn(async move {
            counters.open.fetch_add(1, Ordering::SeqCst);
            let reset = relay(client, backend, mode, resets).await;
            counters.open.fetch_sub(1, Ordering::SeqCst);
            if reset {
                counters.reset.fetch_add(1, Ordering::SeqCst);
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// Relays one connection until both directions end or a reset is ordered; whether it was
/// reset.
async fn relay(
    mut client: TcpStream,
    backend: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    mut resets: watch::Receiver<u64>,
) -> bool {
    let _ = client.set_nodelay(true);
    // Partitioned: the connection waits, unconnected onwards, for the partition to end.
    let forwarding = tokio::select! {
        forwarding = mode.wait_for(|m| *m == Mode::Forward) => forwarding.is_ok(),
        _ = resets.changed() => false,
    };
    if !forwarding {
        return rst(&client, None);
    }
    let Ok(mut upstream) = TcpStream::connect(backend).await else {
        // The backend is gone: so is this connection (RST, as a refused connect would be
        // seen through a proxy).
        return rst(&client, None);
    };
    let _ = upstream.set_nodelay(true);
    let reset = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        tokio::select! {
            () = async {
                tokio::join!(
                    pump(client_read, upstream_write, mode.clone()),
                    pump(upstream_read, client_write, mode.clone()),
                );
            } => false,
            _ = resets.changed() => true,
        }
    };
    if reset {
        return rst(&client, Some(&upstream));
    }
    false
}

/// Sets SO_LINGER 0 so that closing the sockets (when the caller drops them) sends RST.
fn rst(client: &TcpStream, upstream: Option<&TcpStream>) -> bool {
    let _ = client.set_zero_linger();
    if let Some(upstream) = upstream {
        let _ = upstream.set_zero_linger();
    }
    true
}

/// Copies `from` to `to` while forwarding; ends at end of stream (passed on as a
/// half-close) or on an error.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if mode.wait_for(|m| *m == Mode::Forward).await.is_err() {
            return;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            // Reading is cancel-safe: a partition stops it where it is.
            _ = mode.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An echo (bytes) server on 127.0.0.1.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(data).await?;
        let mut back = vec![0u8; data.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn forwards_partitions_silently_resumes_and_resets() {
        let relay = Relay::start(echo_server().await).await.unwrap();
        let mut a = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(round_trip(&mut a, b"hello").await.unwrap(), b"hello");

        relay.partition();
        let silent = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut a, b"x"));
        assert!(silent.await.is_err(), "nothing passes, nothing closes");
        // A new connection is accepted but goes nowhere.
        let mut b = TcpStream::connect(relay.addr()).await.unwrap();
        b.write_all(b"early").await.unwrap();
        relay.resume();
        let mut x = [0u8; 1];
        a.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"x", "what waited is delivered");
        let mut early = [0u8; 5];
        b.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early");
        assert_eq!(relay.open(), 2);

        relay.reset();
        let mut rest = [0u8; 1];
        let error = tokio::time::timeout(Duration::from_secs(5), a.read(&mut rest))
            .await
            .expect("the reset arrives")
            .expect_err("a reset, not an orderly close");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert!(b.read(&mut rest).await.is_err());
        assert_eq!(relay.reset_count(), 2);

        let mut c = TcpStream::connect(relay.addr()).await.unwrap();
        assert_eq!(round_trip(&mut c, b"again").await.unwrap(), b"again");
        assert_eq!(relay.accepted(), 3);
    }
}
