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
    /// Subscribe to xDS listeners and print the client's resources and their state (what
    /// gRPC's CSDS shows).
    XdsDump(XdsDumpArgs),
    /// Write the status of every GRPCRoute with a Service parent in a cluster (a
    /// controller, with leader election).
    StatusController(StatusControllerArgs),
}

/// Where the configuration comes from, and who is calling.
#[derive(Debug, Args)]
pub(crate) struct MeshArgs {
    /// A manifest file or a folder of them (*.yaml, *.yml, *.json); repeatable. Required
    /// unless the target is an xDS listener (xds:///NAME).
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub(crate) filename: Vec<PathBuf>,
    /// The xDS bootstrap (gRFC A27) for xds:///NAME targets; without it,
    /// GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG is read.
    #[arg(long, value_name = "FILE")]
    pub(crate) xds_bootstrap: Option<PathBuf>,
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
        help = "The Service called: svc[:port], svc.ns[:port], svc.ns.svc[.<domain>][:port] or CLUSTER-IP:port; or an xDS listener: xds:///NAME"
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

/// `grpcroute xds-dump`.
#[derive(Debug, Args)]
pub(crate) struct XdsDumpArgs {
    /// The xDS bootstrap; without it, GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG.
    #[arg(long, value_name = "FILE")]
    pub(crate) xds_bootstrap: Option<PathBuf>,
    /// A listener to subscribe to (xds:///NAME or NAME); repeatable, at least one.
    #[arg(long = "listener", value_name = "NAME", required = true)]
    pub(crate) listeners: Vec<String>,
    /// How long to wait for every listener's configuration to be complete (or failed).
    #[arg(long, value_name = "SECONDS", default_value = "20", value_parser = seconds)]
    pub(crate) wait: Duration,
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
    /// Serve gRPC over mutual TLS (ALPN h2) with the X.509 SVID in DIR, in cert-manager
    /// csi-driver-spiffe's layout: tls.crt (certificate chain), tls.key (its key), ca.crt
    /// (the CAs client certificates must chain to). Every caller must present a
    /// certificate; its SPIFFE ID is echoed in x-echo-peer. Renewed files are used from the
    /// next connection on, without a restart.
    #[arg(long, value_name = "DIR")]
    pub(crate) tls_dir: Option<PathBuf>,
    /// Print the bound address as a JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `grpcroute status-controller`.
#[derive(Debug, Args)]
pub(crate) struct StatusControllerArgs {
    /// The controllerName written in each status.parents[] entry, DOMAIN/PATH. Entries of
    /// other controllerNames are never touched.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "grpcroute.dev/status-controller",
        value_parser = controller_name
    )]
    pub(crate) controller_name: String,
    /// A kubeconfig file (default: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// The API server's URL, e.g. https://10.0.0.1:6443. Overrides the kubeconfig's;
    /// without --kubeconfig, no credentials are sent.
    #[arg(long, value_name = "URL", value_parser = server_url)]
    pub(crate) server: Option<http::Uri>,
    /// Report RefNotPermitted for a cross-namespace backendRef without a ReferenceGrant,
    /// as clients built with strict_reference_grants(true) refuse it.
    #[arg(long)]
    pub(crate) strict_reference_grants: bool,
    /// Reconcile every route once, print a summary and exit (1 if a write failed). Takes
    /// no part in leader election.
    #[arg(long)]
    pub(crate) once: bool,
    /// With --once: how long to wait for the API server's initial lists.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    pub(crate) sync_timeout: Duration,
    /// The namespace of the leader-election Lease (default: $POD_NAMESPACE, else the
    /// service account's namespace, else default).
    #[arg(long, value_name = "NS", value_parser = namespace)]
    pub(crate) lease_namespace: Option<String>,
    /// The name of the leader-election Lease.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "grpcroute-status-controller",
        value_parser = object_name
    )]
    pub(crate) lease_name: String,
    /// This instance's holderIdentity in the Lease, unique among the replicas (default:
    /// $POD_NAME, else the host name, with a random suffix).
    #[arg(long, value_name = "ID", value_parser = identity)]
    pub(crate) identity: Option<String>,
    /// How long the Lease holds without renewal, in whole seconds. The leader renews
    /// every third of it and stops writing after two thirds without a renewal.
    #[arg(long, value_name = "SECONDS", default_value = "15", value_parser = lease_duration)]
    pub(crate) lease_duration: Duration,
    /// Serve Prometheus metrics on http://ADDR/metrics (leadership, status writes, and the
    /// mesh's view: route conditions, configuration version, API connection).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
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

/// A DNS subdomain (RFC 1123), as object names and the DOMAIN of a controllerName are.
fn is_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn object_name(s: &str) -> Result<String, String> {
    if is_subdomain(s) {
        Ok(s.to_string())
    } else {
        Err("not a valid object name (lower-case letters, digits, '-' and '.')".into())
    }
}

/// DOMAIN/PATH, as the Gateway API's `GatewayController` type requires.
fn controller_name(s: &str) -> Result<String, String> {
    let path_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&b))
    };
    match s.split_once('/') {
        Some((domain, path)) if s.len() <= 253 && is_subdomain(domain) && path_ok(path) => {
            Ok(s.to_string())
        }
        _ => Err("expected DOMAIN/PATH, e.g. example.com/status-controller".into()),
    }
}

fn server_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| "not a URL, e.g. https://10.0.0.1:6443".to_string())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err("expected an http:// or https:// URL with a host".into()),
    }
}

fn identity(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.len() > 253 {
        Err("expected a non-empty identity of at most 253 characters".into())
    } else {
        Ok(s.to_string())
    }
}

fn lease_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<u32>() {
        Ok(secs @ 1..=3600) => Ok(Duration::from_secs(u64::from(secs))),
        _ => Err("expected whole seconds from 1 to 3600".into()),
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
        assert!(controller_name("grpcroute.dev/status-controller").is_ok());
        assert!(controller_name("example.net/gateway/v1").is_ok());
        for bad in [
            "nodomain",
            "/path",
            "Example.com/x",
            "example.com/",
            "a b/c",
        ] {
            assert!(controller_name(bad).is_err(), "{bad}");
        }
        assert!(object_name("grpcroute-status-controller").is_ok());
        assert!(object_name("Lease").is_err() && object_name("a..b").is_err());
        assert!(server_url("http://127.0.0.1:8080").is_ok());
        assert!(server_url("127.0.0.1:8080").is_err() && server_url("ftp://x").is_err());
        assert_eq!(lease_duration("2").unwrap(), Duration::from_secs(2));
        assert!(lease_duration("0").is_err() && lease_duration("1.5").is_err());
    }
}
