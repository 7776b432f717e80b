//! `fault-backend --name NAME`: a [`DelayServer`] in a process of its own, for the fault
//! tests that kill a backend (see `grpcroute_interop_tests::fault::process`).
//!
//! Prints `PORT <port>` once it listens on 127.0.0.1, then `STARTED <n>` each time a call
//! arrives. Stops gracefully (GOAWAY, calls in flight finish) when its stdin closes or on
//! SIGTERM, then exits 0.

use anyhow::Context as _;
use grpcroute_interop_tests::fault::DelayServer;
use tokio::{
    io::AsyncReadExt as _,
    signal::unix::{SignalKind, signal},
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = match (args.next().as_deref(), args.next()) {
        (Some("--name"), Some(name)) => name,
        _ => anyhow::bail!("usage: fault-backend --name NAME"),
    };
    let server = DelayServer::start(&name)
        .await
        .context("starting the server")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    println!("PORT {}", server.addr().port());
    let mut started = server.started_updates();
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            changed = started.changed() => {
                if changed.is_err() {
                    break;
                }
                let n = *started.borrow_and_update();
                // stdout is line-buffered: each line goes out at once.
                println!("STARTED {n}");
            }
            read = stdin.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
            _ = terminate.recv() => break,
        }
    }
    server.shutdown().await;
    // Not waiting for the runtime's blocking stdin reader, which may never return.
    std::process::exit(0)
}
