//! `grpcroute`: the operator's view of the grpcroute-client routing core.
//!
//! - `check` validates manifests and prints the status a GAMMA implementation would write
//!   on every GRPCRoute;
//! - `explain` shows where a call would go and why, without sending it;
//! - `call` sends real calls through the in-process mesh and tallies where they went;
//! - `echo` runs a gRPC backend that answers every method;
//! - `status-controller` writes the status of every GRPCRoute with a Service parent in a
//!   cluster, with leader election between replicas.
//!
//! Exit codes: 0 success, 1 what was checked is not OK, 2 usage or input error (one line
//! on stderr naming the file, object or field).

// Code never unwraps; tests may (a panic is how a test fails).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod args;
mod call;
mod check;
mod echo;
mod echo_tls;
mod explain;
mod input;
mod leader;
mod output;
mod policy_status;
mod progress;
mod route_status;
mod status_controller;
mod xds;

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};

use crate::args::{Cli, Command};

/// How a command ended, when it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Exit 0.
    Ok,
    /// Exit 1: a route is not accepted, a call is not OK (with `--expect-ok`), ...
    NotOk,
}

/// A usage or input error: exit 2, with this one-line message.
#[derive(Debug)]
pub(crate) struct InputError(pub(crate) String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return fail(
                "a subcommand is required: check, explain, call, echo, xds-dump or status-controller (see grpcroute --help)",
            );
        }
        Err(e) => return fail(&usage_line(&e)),
    };
    // A controller's logs are its output: on by default; other commands log on request.
    let filter = match (std::env::var_os("RUST_LOG"), &cli.command) {
        (Some(_), _) => Some(tracing_subscriber::EnvFilter::from_default_env()),
        // `--once` says why it failed in its one-line error, not in retry warnings.
        (None, Command::StatusController(args)) if args.once => Some(
            tracing_subscriber::EnvFilter::new("off,grpcroute::status_controller=info"),
        ),
        (None, Command::StatusController(_)) => Some(tracing_subscriber::EnvFilter::new(
            "warn,grpcroute::status_controller=info,grpcroute::leader=info",
        )),
        (None, _) => None,
    };
    if let Some(filter) = filter {
        use std::io::IsTerminal as _;
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Check(args) => check::run(args),
            Command::Explain(args) => explain::run(args).await,
            Command::XdsDump(args) => xds::dump(args).await,
            Command::Call(args) => call::run(args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::StatusController(args) => status_controller::run(args).await,
        }
    });
    match result {
        Ok(Verdict::Ok) => ExitCode::SUCCESS,
        Ok(Verdict::NotOk) => ExitCode::from(1),
        Err(InputError(message)) => fail(&message),
    }
}

/// Resolves on SIGINT, or on SIGTERM where there is one (Kubernetes stops pods with it).
/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a caller that announces itself (prints its address) after
/// calling this cannot be killed by a signal sent in between.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        async move {
            match handlers {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("grpcroute: {}", output::one_line(message));
    ExitCode::from(2)
}

/// clap's error without its usage block, on one line.
fn usage_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let message = rendered
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (see grpcroute --help)")
}
