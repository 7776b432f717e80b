//! `grpcroute`: the operator's view of the grpcroute-client routing core.
//!
//! - `check` validates manifests and prints the status a GAMMA implementation would write
//!   on every GRPCRoute;
//! - `explain` shows where a call would go and why, without sending it;
//! - `call` sends real calls through the in-process mesh and tallies where they went;
//! - `echo` runs a gRPC backend that answers every method.
//!
//! Exit codes: 0 success, 1 what was checked is not OK, 2 usage or input error (one line
//! on stderr naming the file, object or field).

// Code never unwraps; tests may (a panic is how a test fails).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod args;
mod call;
mod check;
mod echo;
mod explain;
mod input;
mod output;
mod progress;

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
                "a subcommand is required: check, explain, call or echo (see grpcroute --help)",
            );
        }
        Err(e) => return fail(&usage_line(&e)),
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
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
            Command::Explain(args) => explain::run(args),
            Command::Call(args) => call::run(args).await,
            Command::Echo(args) => echo::run(args).await,
        }
    });
    match result {
        Ok(Verdict::Ok) => ExitCode::SUCCESS,
        Ok(Verdict::NotOk) => ExitCode::from(1),
        Err(InputError(message)) => fail(&message),
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
