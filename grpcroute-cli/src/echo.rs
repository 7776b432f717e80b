//! `grpcroute echo`: the grpcroute-echo server as a command. It prints the address it bound
//! (so `--listen 127.0.0.1:0` can be used by scripts and tests) and serves until SIGINT or
//! SIGTERM, then drains the calls in flight. With `--tls-dir` it serves mutual TLS
//! (`echo_tls`).

use std::sync::Arc;

use grpcroute_echo::{EchoConfig, EchoServer};
use serde::Serialize;

use crate::{InputError, Verdict, args::EchoArgs, echo_tls, output};

/// The `--json` line printed once the server listens.
#[derive(Debug, Serialize)]
struct Listening {
    name: String,
    listen: String,
    /// Only with `--tls-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsListening>,
}

#[derive(Debug, Serialize)]
struct TlsListening {
    /// The directory read.
    dir: String,
    /// The server certificate's SPIFFE ID at start (null when it is not an SVID).
    spiffe_id: Option<String>,
}

pub(crate) async fn run(args: &EchoArgs) -> Result<Verdict, InputError> {
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let name = args
        .name
        .clone()
        .or_else(|| env("POD_NAME"))
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| "echo".into());
    let mut config = EchoConfig::new(&name).listen(args.listen);
    if let Some(ns) = env("POD_NAMESPACE") {
        config = config.namespace(ns);
    }
    let (server, tls) = match &args.tls_dir {
        None => (
            EchoServer::start(config)
                .await
                .map_err(|e| InputError(e.to_string()))?,
            None,
        ),
        Some(dir) => {
            // Read before binding: unusable files fail the command at once, naming the file.
            let tls_dir =
                Arc::new(echo_tls::TlsDir::load(dir).map_err(|e| InputError(e.to_string()))?);
            let spiffe_id = tls_dir.current().spiffe_id.clone();
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| InputError(format!("cannot listen on {}: {e}", args.listen)))?;
            let addr = listener
                .local_addr()
                .map_err(|e| InputError(format!("cannot listen on {}: {e}", args.listen)))?;
            let incoming = echo_tls::incoming(listener, tls_dir);
            let server = EchoServer::start_with_incoming(config, addr, incoming)
                .await
                .map_err(|e| InputError(e.to_string()))?;
            let tls = TlsListening {
                dir: dir.display().to_string(),
                spiffe_id,
            };
            (server, Some(tls))
        }
    };
    // Before the banner: whoever reads it may signal at once.
    let stop = crate::shutdown_signal();
    let listening = Listening {
        name,
        listen: server.addr().to_string(),
        tls,
    };
    if args.json {
        match serde_json::to_string(&listening) {
            Ok(line) => output::print(&format!("{line}\n")),
            Err(e) => return Err(InputError(format!("cannot encode JSON: {e}"))),
        }
    } else {
        let transport = match &listening.tls {
            None => "gRPC".to_string(),
            Some(tls) => format!(
                "gRPC over mutual TLS as {}, client certificates required from {}/{}",
                tls.spiffe_id
                    .as_deref()
                    .unwrap_or("a certificate without SPIFFE ID"),
                tls.dir.trim_end_matches('/'),
                echo_tls::CA_FILE
            ),
        };
        output::print(&format!(
            "echo server {} listening on {} ({transport}, grpc.health.v1.Health); Ctrl-C stops it\n",
            listening.name, listening.listen
        ));
    }
    stop.await;
    server.shutdown().await;
    Ok(Verdict::Ok)
}
