//! `grpcroute explain`: the routing decision for one call, without sending it.

use grpcroute_client::{
    BackendExplanation, CallDescription, Explanation, FrontendRef, Mesh, RouteRef,
};
use http::HeaderMap;

use crate::{
    InputError, Verdict,
    args::{CallTarget, ExplainArgs, MeshArgs},
    input::Inputs,
    output::{self, Paint, Style, Table, percent, plain},
};

pub(crate) async fn run(args: &ExplainArgs) -> Result<Verdict, InputError> {
    let (mesh, _held) = load_mesh(&args.mesh, &args.call).await?;
    let explanation = mesh.explain(&CallDescription {
        target: args.call.to.clone(),
        path: args.call.method.clone(),
        metadata: metadata(&args.call),
        client_namespace: Some(args.mesh.from_namespace.clone()),
    });
    if args.call.json {
        output::print_json(&explanation);
    } else {
        output::print(&human(&explanation, Style::detect()));
    }
    Ok(if args.call.expect_ok && explanation.status != "OK" {
        Verdict::NotOk
    } else {
        Verdict::Ok
    })
}

/// What a loaded mesh keeps alive: the manifests it was read from, or the channel that
/// keeps an xDS listener watched.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum Held {
    Manifests(Inputs),
    Listener(grpcroute_client::Channel),
}

/// The mesh for `explain` and `call`: from the manifests (unreadable documents and a target
/// that is not a Service address are input errors; rejected objects are warnings), or, for an
/// `xds:///NAME` target, from the xDS control plane of the bootstrap, once the listener's
/// configuration is complete (or failed).
pub(crate) async fn load_mesh(
    mesh: &MeshArgs,
    call: &CallTarget,
) -> Result<(Mesh, Held), InputError> {
    if crate::xds::is_xds(&call.to) {
        let built = crate::xds::mesh(mesh.xds_bootstrap.as_deref(), &mesh.from_namespace)?;
        let channel = built
            .channel(&call.to)
            .map_err(|e| InputError(format!("--to: {e}")))?;
        crate::xds::settle(&built, &call.to, std::time::Duration::from_secs(20)).await;
        return Ok((built, Held::Listener(channel)));
    }
    if mesh.filename.is_empty() {
        return Err(InputError(
            "-f/--filename is required (the manifests), unless --to names an xDS listener (xds:///NAME)"
                .into(),
        ));
    }
    let inputs = Inputs::load(&mesh.filename)?;
    inputs.require_readable()?;
    let (built, rejected) = inputs.mesh(mesh);
    inputs.warn_rejected(&rejected);
    built
        .channel(&call.to)
        .map_err(|e| InputError(format!("--to: {e}")))?;
    Ok((built, Held::Manifests(inputs)))
}

/// The `-H` metadata, in order.
pub(crate) fn metadata(call: &CallTarget) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &call.headers {
        headers.append(name.clone(), value.clone());
    }
    headers
}

fn human(e: &Explanation, style: Style) -> String {
    let mut out = String::new();
    let frontend = match &e.frontend {
        Some(FrontendRef::Service {
            namespace,
            service,
            port: Some(port),
        }) => format!("Service {namespace}/{service}:{port}"),
        Some(FrontendRef::Service {
            namespace, service, ..
        }) => format!("Service {namespace}/{service}"),
        Some(FrontendRef::Listener { listener }) => format!("xDS listener {listener}"),
        Some(_) | None => "-".to_string(),
    };
    let route = match (&e.route, &e.rule) {
        (Some(RouteRef::GrpcRoute { namespace, name }), Some(rule)) => {
            let rule_name = rule
                .name
                .as_ref()
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default();
            format!("{namespace}/{name} rule {}{rule_name}", rule.index)
        }
        (
            Some(RouteRef::Xds {
                virtual_host,
                index,
                name,
            }),
            _,
        ) => {
            let name = name
                .as_ref()
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default();
            format!("virtual host {virtual_host:?} route {index}{name}")
        }
        _ => "-".to_string(),
    };
    let paint = if e.status == "OK" {
        Paint::Good
    } else {
        Paint::Bad
    };
    let mut summary = Table::new(&["", ""]);
    summary.row(vec![plain("frontend"), plain(frontend)]);
    summary.row(vec![plain("route set"), plain(e.route_set)]);
    summary.row(vec![
        plain(if e.route_set == "xds" {
            "route"
        } else {
            "rule"
        }),
        plain(route),
    ]);
    summary.row(vec![
        plain("outcome"),
        (format!("{} ({})", e.outcome, e.status), paint),
    ]);
    summary.row(vec![plain("reason"), plain(&e.reason)]);
    let mut text = String::new();
    summary.render(style, &mut text);
    // The summary is a two-column list, not a table: drop its empty header line.
    out.push_str(text.split_once('\n').map_or("", |(_, rest)| rest));

    if !e.backends.is_empty() {
        out.push('\n');
        let mut table = Table::new(&[
            "BACKEND",
            ">WEIGHT",
            ">SHARE",
            "VALID",
            "ENDPOINTS",
            "REASON",
        ]);
        for b in &e.backends {
            let name = backend_name(b);
            let share = (b.share * 1000.0).round() as u64;
            table.row(vec![
                plain(name),
                plain(b.weight.to_string()),
                plain(percent(share, 1000)),
                if b.valid {
                    ("yes".into(), Paint::Good)
                } else {
                    ("no".into(), Paint::Bad)
                },
                plain(if b.endpoints.is_empty() {
                    "-".to_string()
                } else {
                    b.endpoints.join(", ")
                }),
                plain(b.reason.clone().unwrap_or_default()),
            ]);
        }
        table.render(style, &mut out);
    }
    if !e.request_headers.is_empty() {
        out.push('\n');
        out.push_str(&style.paint(Paint::Bold, "REQUEST METADATA"));
        out.push('\n');
        for (name, values) in &e.request_headers {
            for value in values {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
    }
    // Backend-level filters: what each backend whose metadata differs receives.
    for b in &e.backends {
        if b.request_headers == e.request_headers {
            continue;
        }
        out.push('\n');
        out.push_str(&style.paint(
            Paint::Bold,
            &format!("REQUEST METADATA TO {}", backend_name(b)),
        ));
        out.push('\n');
        for (name, values) in &b.request_headers {
            for value in values {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
    }
    out
}

/// `namespace/service:port`, or `cluster NAME` for an xDS cluster.
fn backend_name(b: &BackendExplanation) -> String {
    match (&b.cluster, &b.namespace, &b.service, b.port) {
        (Some(cluster), ..) => format!("cluster {cluster}"),
        (None, Some(ns), Some(svc), Some(port)) => format!("{ns}/{svc}:{port}"),
        (None, Some(ns), Some(svc), None) => format!("{ns}/{svc}"),
        _ => "-".to_string(),
    }
}
