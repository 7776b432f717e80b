//! `grpcroute echo`: the grpcroute-echo server as a command. It prints the address it bound
//! (so `--listen 127.0.0.1:0` can be used by scripts and tests) and serves until SIGINT or
//! SIGTERM, then drains the calls in flight.

use grpcroute_echo::{EchoConfig, EchoServer};
use serde::Serialize;

use crate::{InputError, Verdict, args::EchoArgs, output};

/// The `--json` line printed once the server listens.
#[derive(Debug, Serialize)]
struct Listening {
    name: String,
    listen: String,
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
    let server = EchoServer::start(config)
        .await
        .map_err(|e| InputError(e.to_string()))?;
    // Before the banner: whoever reads it may signal at once.
    let stop = crate::shutdown_signal();
    let listening = Listening {
        name,
        listen: server.addr().to_string(),
    };
    if args.json {
        match serde_json::to_string(&listening) {
            Ok(line) => output::print(&format!("{line}\n")),
            Err(e) => return Err(InputError(format!("cannot encode JSON: {e}"))),
        }
    } else {
        output::print(&format!(
            "echo server {} listening on {} (gRPC, grpc.health.v1.Health); Ctrl-C stops it\n",
            listening.name, listening.listen
        ));
    }
    stop.await;
    server.shutdown().await;
    Ok(Verdict::Ok)
}
