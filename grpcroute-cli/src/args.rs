//! The command line: subcommands, their arguments, and the parsers that turn argument
//! strings into checked values (so every bad value is a one-line usage error).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{HeaderName, HeaderValue};

/// Check GRPCRoutes, explain and send gRPC calls the way the in-process GAMMA mesh of
/// grpcroute-client routes them, and run an echo backend.
#[derive(Debug, Parser)]
#[command(name = "grpcroute", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 what was checked is not OK, 2 usage or input error."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate manifests and print the status each GRPCRoute gets for each Service parent.
    Check(CheckArgs),
    /// Show where a call would go and why, without sending it.
    Explain(ExplainArgs),
    /// Send unary calls through the mesh and tally statuses, backends, endpoints, latency.
    Call(CallArgs),
    /// Run a gRPC echo server that answers every method with OK.
    Echo(EchoArgs),
}

/// Where the configuration comes from, and who is calling.
#[derive(Debug, Args)]
pub(crate) struct MeshArgs {
    /// A manifest file or a folder of them (*.yaml, *.yml, *.json); repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub(crate) filename: Vec<PathBuf>,
    /// The namespace of the calling client: where a bare Service name resolves and whose
    /// consumer routes apply.
    #[arg(long, value_name = "NS", default_value = "default", value_parser = namespace)]
    pub(crate) from_namespace: String,
    // (`help` rather than a doc comment: rustdoc would read `<domain>` as HTML.)
    #[arg(
        long,
        value_name = "DOMAIN",
        default_value = "cluster.local",
        help = "The cluster's DNS domain, for svc.ns.svc.<domain> targets"
    )]
    pub(crate) cluster_domain: String,
}

/// `grpcroute check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
    /// Print the machine-readable JSON form.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The call being explained or sent.
#[derive(Debug, Args)]
pub(crate) struct CallTarget {
    #[arg(
        long,
        value_name = "TARGET",
        help = "The Service called: svc[:port], svc.ns[:port], svc.ns.svc[.<domain>][:port] or CLUSTER-IP:port"
    )]
    pub(crate) to: String,
    /// The gRPC method, /package.Service/Method.
    #[arg(long, value_name = "/pkg.Service/Method", value_parser = method)]
    pub(crate) method: String,
    /// Call metadata, name:value; repeatable (the same name twice gives two values).
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = header)]
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// Exit 1 unless the outcome is OK (for call: every call).
    #[arg(long)]
    pub(crate) expect_ok: bool,
    /// Print the machine-readable JSON form.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `grpcroute explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
    #[command(flatten)]
    pub(crate) call: CallTarget,
}

/// `grpcroute call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    pub(crate) mesh: MeshArgs,
    #[command(flatten)]
    pub(crate) call: CallTarget,
    /// How many calls to send.
    #[arg(short = 'n', long = "count", value_name = "N", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub(crate) count: u32,
    /// How many calls to have in flight at once.
    #[arg(short = 'c', long = "concurrency", value_name = "C", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) concurrency: u32,
    /// The request message as raw protobuf bytes: hex (e.g. 0a03616263), @FILE, or @- for
    /// standard input. Empty by default (every field at its default).
    #[arg(short = 'd', long = "data", value_name = "DATA", value_parser = data, default_value = "", hide_default_value = true)]
    pub(crate) data: Bytes,
    /// Give up on a call after this many seconds (sent as grpc-timeout too).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    pub(crate) timeout: Duration,
}

/// `grpcroute echo`.
#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    /// The address to listen on, e.g. 0.0.0.0:50051 (port 0 picks a free port; the bound
    /// address is printed).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: SocketAddr,
    /// The name reported in x-echo-backend (default: $POD_NAME, $HOSTNAME, or "echo").
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Print the bound address as a JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

fn namespace(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err("not a valid namespace name (lower-case letters, digits and '-')".into())
    }
}

fn method(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match parts.as_slice() {
        ["", service, method] if valid_part(service) && valid_part(method) => Ok(s.to_string()),
        _ => Err("expected /package.Service/Method".into()),
    }
}

fn header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or("expected NAME:VALUE, e.g. x-user:alice")?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a valid metadata name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim_start())
        .map_err(|_| format!("the value of {name} is not a valid metadata value"))?;
    Ok((name, value))
}

fn data(s: &str) -> Result<Bytes, String> {
    if s == "@-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(buf.into());
    }
    if let Some(path) = s.strip_prefix('@') {
        return std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| format!("cannot read {path}: {e}"));
    }
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("hex data must have an even number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| "not hex (use @FILE for binary data)".to_string())
        })
        .collect::<Result<Vec<u8>, String>>()
        .map(Bytes::from)
}

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| "expected a number of seconds")?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a positive number of seconds".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert!(method("/pkg.Svc/Method").is_ok());
        for bad in [
            "pkg.Svc/Method",
            "/pkg.Svc",
            "/pkg.Svc/",
            "//M",
            "/a/b/c",
            "/a b/c",
        ] {
            assert!(method(bad).is_err(), "{bad}");
        }
        let (n, v) = header("X-User: alice").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-user", "alice"));
        assert!(header("novalue").is_err());
        assert!(header("bad name:x").is_err());
        assert_eq!(&data("0a 03 61").unwrap()[..], &[0x0a, 0x03, 0x61]);
        assert!(data("").unwrap().is_empty());
        assert!(data("abc").is_err());
        assert!(data("zz").is_err());
        assert_eq!(seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(seconds("0").is_err() && seconds("-1").is_err() && seconds("x").is_err());
        assert!(namespace("shop").is_ok() && namespace("Shop").is_err());
    }
}
