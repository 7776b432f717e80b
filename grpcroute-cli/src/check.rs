//! `grpcroute check`: the status a GAMMA implementation would write on every GRPCRoute,
//! per Service parentRef, plus every document and object that could not be used.

use grpcroute_client::{ConditionStatus, ParentReference, RouteStatus};
use serde::Serialize;

use crate::{
    InputError, Verdict,
    args::CheckArgs,
    input::Inputs,
    output::{self, Paint, Style, Table, plain},
};

/// The `--json` form. Every message is folded onto one line (see [`output::one_line`]).
#[derive(Debug, Serialize)]
struct Report {
    routes: Vec<RouteJson>,
    errors: Vec<ErrorJson>,
}

#[derive(Debug, Serialize)]
struct RouteJson {
    namespace: String,
    name: String,
    parents: Vec<ParentJson>,
}

#[derive(Debug, Serialize)]
struct ParentJson {
    #[serde(rename = "parentRef")]
    parent_ref: ParentRefJson,
    conditions: Vec<ConditionJson>,
}

#[derive(Debug, Serialize)]
struct ParentRefJson {
    group: String,
    kind: String,
    /// The route's namespace when the parentRef names none.
    namespace: String,
    name: String,
    port: Option<u16>,
    #[serde(rename = "sectionName", skip_serializing_if = "Option::is_none")]
    section_name: Option<String>,
}

#[derive(Debug, Serialize)]
struct ConditionJson {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct ErrorJson {
    file: Option<String>,
    document: Option<usize>,
    message: String,
}

pub(crate) fn run(args: &CheckArgs) -> Result<Verdict, InputError> {
    if args.mesh.filename.is_empty() {
        return Err(InputError(
            "-f/--filename is required: the manifests to check".into(),
        ));
    }
    let inputs = Inputs::load(&args.mesh.filename)?;
    let (mesh, rejected) = inputs.mesh(&args.mesh);
    let statuses = mesh.statuses();

    let mut errors: Vec<ErrorJson> = inputs
        .errors
        .iter()
        .map(|e| ErrorJson {
            file: Some(e.file.display().to_string()),
            document: e.document,
            message: output::one_line(&e.message),
        })
        .collect();
    errors.extend(rejected.iter().map(|invalid| ErrorJson {
        file: inputs.origin(invalid).map(|p| p.display().to_string()),
        document: None,
        message: output::one_line(&invalid.to_string()),
    }));
    let report = Report {
        routes: statuses.iter().map(route_json).collect(),
        errors,
    };
    let ok = report.errors.is_empty()
        && statuses
            .iter()
            .flat_map(|r| &r.parents)
            .flat_map(|p| &p.conditions)
            .all(|c| c.status == ConditionStatus::True);

    if args.json {
        output::print_json(&report);
    } else {
        output::print(&human(&report, Style::detect()));
    }
    Ok(if ok { Verdict::Ok } else { Verdict::NotOk })
}

fn route_json(status: &RouteStatus) -> RouteJson {
    RouteJson {
        namespace: status.route.namespace().to_string(),
        name: status.route.name().to_string(),
        parents: status
            .parents
            .iter()
            .map(|p| ParentJson {
                parent_ref: parent_ref_json(&p.parent_ref, status.route.namespace()),
                conditions: p
                    .conditions
                    .iter()
                    .map(|c| ConditionJson {
                        type_: c.type_.to_string(),
                        status: c.status.to_string(),
                        reason: c.reason.clone(),
                        message: output::one_line(&c.message),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn parent_ref_json(p: &ParentReference, route_namespace: &str) -> ParentRefJson {
    ParentRefJson {
        group: p.group.clone(),
        kind: p.kind.clone(),
        namespace: p
            .namespace
            .clone()
            .unwrap_or_else(|| route_namespace.to_string()),
        name: p.name.clone(),
        port: p.port,
        section_name: p.section_name.clone(),
    }
}

fn human(report: &Report, style: Style) -> String {
    let mut out = String::new();
    if report.routes.is_empty() {
        out.push_str("No GRPCRoute with a Service parent.\n");
    } else {
        let mut table = Table::new(&[
            "ROUTE",
            "PARENT",
            "CONDITION",
            "STATUS",
            "REASON",
            "MESSAGE",
        ]);
        for route in &report.routes {
            let mut route_cell = format!("{}/{}", route.namespace, route.name);
            if route.parents.is_empty() {
                table.row(vec![plain(&route_cell), plain("(no Service parent)")]);
            }
            for parent in &route.parents {
                let mut parent_cell = describe_parent(&parent.parent_ref);
                for c in &parent.conditions {
                    // A route not accepted takes no calls; unresolved refs fail only their share.
                    let paint = match (c.status.as_str(), c.type_.as_str()) {
                        ("True", _) => Paint::Good,
                        (_, "Accepted") => Paint::Bad,
                        _ => Paint::Warn,
                    };
                    table.row(vec![
                        plain(std::mem::take(&mut route_cell)),
                        plain(std::mem::take(&mut parent_cell)),
                        plain(&c.type_),
                        (c.status.clone(), paint),
                        (c.reason.clone(), paint),
                        plain(&c.message),
                    ]);
                }
            }
        }
        table.render(style, &mut out);
    }
    let (accepted, total) =
        report
            .routes
            .iter()
            .flat_map(|r| &r.parents)
            .fold((0, 0), |(a, t), p| {
                let ok = p.conditions.iter().all(|c| c.status == "True");
                (a + usize::from(ok), t + 1)
            });
    if !report.errors.is_empty() {
        out.push('\n');
        out.push_str(&style.paint(Paint::Bad, "ERRORS"));
        out.push('\n');
        for e in &report.errors {
            let place = match (&e.file, e.document) {
                (Some(f), Some(d)) => format!("{f} (document {d}): "),
                (Some(f), None) => format!("{f}: "),
                _ => String::new(),
            };
            out.push_str(&format!("{place}{}\n", e.message));
        }
    }
    let summary = format!(
        "\n{} route{}, {accepted} of {total} parentRef{} with every condition True, {} error{}\n",
        report.routes.len(),
        plural(report.routes.len()),
        plural(total),
        report.errors.len(),
        plural(report.errors.len()),
    );
    out.push_str(&summary);
    out
}

fn describe_parent(p: &ParentRefJson) -> String {
    let kind = if p.group.is_empty() {
        p.kind.clone()
    } else {
        format!("{}.{}", p.kind, p.group)
    };
    let mut s = format!("{kind} {}/{}", p.namespace, p.name);
    if let Some(port) = p.port {
        s.push_str(&format!(":{port}"));
    }
    if let Some(section) = &p.section_name {
        s.push_str(&format!(" ({section})"));
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
