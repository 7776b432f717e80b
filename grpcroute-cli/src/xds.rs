//! xDS targets (`xds:///NAME`): a mesh fed by an xDS control plane instead of manifests,
//! and `grpcroute xds-dump`, the client's resources as gRPC's CSDS shows them.

use std::{path::Path, time::Duration};

use grpcroute_client::{
    CallDescription, Mesh,
    xds::{Bootstrap, ConfigDump},
};
use serde::Serialize;

use crate::{
    InputError, Verdict,
    args::XdsDumpArgs,
    output::{self, Paint, Style, Table, plain},
};

/// Whether a target names an xDS listener.
pub(crate) fn is_xds(target: &str) -> bool {
    target
        .split_once(':')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("xds"))
}

/// A mesh for xDS targets, with the bootstrap in `file` (else the environment's).
pub(crate) fn mesh(file: Option<&Path>, namespace: &str) -> Result<Mesh, InputError> {
    let bootstrap = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| InputError(format!("--xds-bootstrap {}: {e}", path.display())))?;
            Bootstrap::from_json(&text)
                .map_err(|e| InputError(format!("--xds-bootstrap {}: {e}", path.display())))?
        }
        None => Bootstrap::from_env().map_err(|e| InputError(e.to_string()))?,
    };
    Ok(Mesh::builder()
        .namespace(namespace)
        .report_routing(true)
        .xds_bootstrap(bootstrap)
        .build())
}

/// Waits (up to `wait`) until the listener of `target` has a complete configuration or
/// has failed, so that `explain` and `call` see what a long-running client would.
pub(crate) async fn settle(mesh: &Mesh, target: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        let e = mesh.explain(&CallDescription {
            target: target.to_string(),
            path: "/".into(),
            ..CallDescription::default()
        });
        if !(e.reason.contains("no complete configuration yet")
            || e.reason.contains("is not watched"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `grpcroute xds-dump`.
pub(crate) async fn dump(args: &XdsDumpArgs) -> Result<Verdict, InputError> {
    let mesh = mesh(args.xds_bootstrap.as_deref(), "default")?;
    let mut channels = Vec::new();
    for listener in &args.listeners {
        let target = if is_xds(listener) {
            listener.clone()
        } else {
            format!("xds:///{listener}")
        };
        channels.push(
            mesh.channel(&target)
                .map_err(|e| InputError(format!("--listener {listener}: {e}")))?,
        );
        settle(&mesh, &target, args.wait).await;
    }
    let dump = mesh
        .xds_config()
        .ok_or_else(|| InputError("the xDS client did not start".into()))?;
    let all_good = dump.resources.iter().all(|r| r.state == "ACKED");
    if args.json {
        output::print_json(&Json::from(&dump));
    } else {
        output::print(&human(&dump, Style::detect()));
    }
    drop(channels);
    Ok(if all_good {
        Verdict::Ok
    } else {
        Verdict::NotOk
    })
}

/// The `--json` form: the dump, as is.
#[derive(Serialize)]
struct Json<'a> {
    connected: bool,
    resources: &'a [grpcroute_client::xds::ResourceState],
}

impl<'a> From<&'a ConfigDump> for Json<'a> {
    fn from(d: &'a ConfigDump) -> Self {
        Self {
            connected: d.connected,
            resources: &d.resources,
        }
    }
}

fn human(dump: &ConfigDump, style: Style) -> String {
    let mut out = format!(
        "control plane: {}\n\n",
        if dump.connected {
            style.paint(Paint::Good, "connected")
        } else {
            style.paint(Paint::Bad, "not connected")
        }
    );
    let mut table = Table::new(&["TYPE", "NAME", "VERSION", "STATE", "LAST ERROR"]);
    for r in &dump.resources {
        let paint = match r.state {
            "ACKED" => Paint::Good,
            "REQUESTED" => Paint::Plain,
            _ => Paint::Bad,
        };
        table.row(vec![
            plain(r.resource_type),
            plain(&r.name),
            plain(if r.version.is_empty() {
                "-"
            } else {
                &r.version
            }),
            (r.state.to_string(), paint),
            plain(
                r.last_error
                    .as_deref()
                    .map(output::one_line)
                    .unwrap_or_default(),
            ),
        ]);
    }
    table.render(style, &mut out);
    out
}
