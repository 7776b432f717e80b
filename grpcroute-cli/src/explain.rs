//! `grpcroute explain`: the routing decision for one call, without sending it.

use grpcroute_client::{CallDescription, Explanation, Mesh};
use http::HeaderMap;

use crate::{
    InputError, Verdict,
    args::{CallTarget, ExplainArgs, MeshArgs},
    input::Inputs,
    output::{self, Paint, Style, Table, percent, plain},
};

pub(crate) fn run(args: &ExplainArgs) -> Result<Verdict, InputError> {
    let (mesh, _inputs) = load_mesh(&args.mesh, &args.call)?;
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

/// Reads the manifests into a mesh for `explain` and `call`: unreadable documents and a
/// target that is not a Service address are input errors; rejected objects are warnings.
pub(crate) fn load_mesh(mesh: &MeshArgs, call: &CallTarget) -> Result<(Mesh, Inputs), InputError> {
    let inputs = Inputs::load(&mesh.filename)?;
    inputs.require_readable()?;
    let (built, rejected) = inputs.mesh(mesh);
    inputs.warn_rejected(&rejected);
    built
        .channel(&call.to)
        .map_err(|e| InputError(format!("--to: {e}")))?;
    Ok((built, inputs))
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
    let frontend = e.frontend.as_ref().map_or_else(
        || "-".to_string(),
        |f| match f.port {
            Some(port) => format!("Service {}/{}:{port}", f.namespace, f.service),
            None => format!("Service {}/{}", f.namespace, f.service),
        },
    );
    let route = match (&e.route, &e.rule) {
        (Some(route), Some(rule)) => {
            let name = rule
                .name
                .as_ref()
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default();
            format!(
                "{}/{} rule {}{name}",
                route.namespace, route.name, rule.index
            )
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
    summary.row(vec![plain("rule"), plain(route)]);
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
            let name = match b.port {
                Some(port) => format!("{}/{}:{port}", b.namespace, b.service),
                None => format!("{}/{}", b.namespace, b.service),
            };
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
    out
}
