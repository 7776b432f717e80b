//! The grpcroute-client demo: the GRPCRoutes of the seed scenario (a reader/writer split by
//! method, an A/B test by header, a 90/10 canary) applied in-process by ordinary tonic
//! clients, on 127.0.0.1, with no cluster and no proxy.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! 1. starts 12 "pods" (grpcroute-echo servers, 2 per Deployment) on the fixed ports that
//!    `examples/manifests/` gives them;
//! 2. copies `examples/manifests/` to a temporary folder and loads it with
//!    [`ManifestDir`]: the mesh now routes as a GAMMA implementation would in a cluster;
//! 3. makes real calls with generated clients and tables where each one went: by method,
//!    by header, by weight; asks [`Mesh::explain`] why; and shows what an unrouted method
//!    gets;
//! 4. edits the canary's weights to 50/50 in the temporary folder, times the hot reload and
//!    shows the new split;
//! 5. calls from namespace `web`, whose consumer route keeps it off the canary.
//!
//! Everything it shows it also checks (exact routes, splits within 4σ of their weights);
//! it exits non-zero if anything is off, so CI can run it. `RUST_LOG=info` adds the
//! client's logs on stderr.

mod calls;
mod pods;
mod report;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use grpcroute_client::{
    CallDescription, ConditionStatus, Explanation, FrontendRef, Mesh, Resources, RouteRef,
    RouteStatus, manifest, source::ManifestDir,
};
use grpcroute_echo::EchoServer;
use grpcroute_examples::{
    order::v1::order_service_client::OrderServiceClient,
    recommendation::v1::recommendation_service_client::RecommendationServiceClient,
    user::v1::{ExportUsersRequest, user_service_client::UserServiceClient},
};
use tokio::time::Instant;
use tonic::{Code, codegen::http::HeaderMap};

use crate::{
    calls::{
        BACKEND, Tally, call_get_order, call_order, call_recommend, call_user, group, spread,
        summary,
    },
    report::{Align, Checks, Style, Table},
};

/// The frontend Services the clients call (the routes are attached to these).
const USER: &str = "user-service.app:50051";
const RECOMMENDATION: &str = "recommendation-service.app:50051";
const ORDER: &str = "order-service.app:50051";

const USER_SERVICE: &str = "user.v1.UserService";
const RECOMMENDATION_SERVICE: &str = "recommendation.v1.RecommendationService";
const ORDER_SERVICE: &str = "order.v1.OrderService";

/// The file the hot-reload step edits.
const CANARY_FILE: &str = "32-order-canary-route.yaml";
const EXPERIMENT_HEADER: &str = "x-experiment-group";

/// The whole demo must finish within this.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    grpcroute_examples::log_to_stderr();
    let style = Style::detect();
    let started = Instant::now();
    let mut checks = Checks::default();
    match tokio::time::timeout(DEADLINE, run(style, &mut checks)).await {
        Err(_) => {
            eprintln!("demo FAILED: it did not finish within {DEADLINE:?}");
            return ExitCode::FAILURE;
        }
        Ok(Err(e)) => {
            eprintln!("demo FAILED: {e:#}");
            return ExitCode::FAILURE;
        }
        Ok(Ok(())) => {}
    }
    let elapsed = started.elapsed().as_secs_f64();
    style.section("[done]", "What the demo checked");
    checks.print(style);
    println!();
    let failed = checks.failed();
    if failed.is_empty() {
        println!(
            "{} all {} checks passed; the demo took {elapsed:.2} s",
            style.green("PASS"),
            checks.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("{} the demo took {elapsed:.2} s", style.red("FAIL"));
        eprintln!(
            "demo FAILED: {} of {} checks failed: {}",
            failed.len(),
            checks.len(),
            failed.join("; ")
        );
        ExitCode::FAILURE
    }
}

async fn run(style: Style, checks: &mut Checks) -> anyhow::Result<()> {
    println!(
        "{}",
        style.bold(
            "grpcroute-client demo: GRPCRoutes applied in-process by tonic clients (GAMMA, no proxy)"
        )
    );
    let pods = pods::all();
    let _servers = start_backends(style, &pods).await?;
    let folder = tempfile::Builder::new()
        .prefix("grpcroute-demo-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let mesh = load_manifests(style, checks, folder.path(), &pods).await?;
    reads_and_writes(style, checks, &mesh).await?;
    ab_test(style, checks, &mesh).await?;
    style.section(
        "[5/9]",
        "order.v1.OrderService: the 90/10 canary over 1,000 calls",
    );
    canary_split(style, checks, &mesh, 90).await?;
    explain_a_call(style, &mesh);
    hot_reload(style, checks, &mesh, folder.path()).await?;
    canary_split(style, checks, &mesh, 50).await?;
    consumer_route(style, checks, &mesh, folder.path()).await?;
    metrics(style, checks, &mesh);
    Ok(())
}

/// [1/9] One echo server per pod.
async fn start_backends(style: Style, pods: &[pods::Pod]) -> anyhow::Result<Vec<EchoServer>> {
    style.section(
        "[1/9]",
        "Start the backends: 2 pods per Deployment, grpcroute-echo servers on 127.0.0.1",
    );
    let servers = pods::start(pods).await?;
    let mut table = Table::new(&[
        ("Deployment = backend Service", Align::Left),
        ("pods", Align::Left),
        ("listen", Align::Left),
    ]);
    for d in &pods::DEPLOYMENTS {
        let mine: Vec<&pods::Pod> = pods.iter().filter(|p| p.deployment == d.name).collect();
        table.row([
            d.name.to_string(),
            join(mine.iter().map(|p| p.name.clone())),
            join(mine.iter().map(|p| p.addr.to_string())),
        ]);
    }
    table.print(style);
    println!(
        "  {}",
        style.dim(
            "Each answers any method with OK and an empty message, and names itself in x-echo-backend."
        )
    );
    Ok(servers)
}

/// [2/9] Copies the manifests to `folder` and starts a mesh on it.
async fn load_manifests(
    style: Style,
    checks: &mut Checks,
    folder: &Path,
    pods: &[pods::Pod],
) -> anyhow::Result<Mesh> {
    style.section(
        "[2/9]",
        "Load examples/manifests/ (copied to a temporary folder) with ManifestDir",
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let files = copy_manifests(&source, folder)?;
    let mut table = Table::new(&[("file", Align::Left), ("objects", Align::Left)]);
    for file in &files {
        let loaded = manifest::load(std::slice::from_ref(file));
        if let Some(error) = loaded.errors.first() {
            bail!("examples/manifests is broken: {error}");
        }
        table.row([file_name(file), count_objects(&loaded.resources)]);
    }
    table.print(style);
    let loading = Instant::now();
    // The demo's client runs in namespace `app`, like the services. Strict ReferenceGrants:
    // cross-namespace backendRefs need a grant (40-reference-grant.yaml).
    let mesh = Mesh::builder()
        .namespace("app")
        .strict_reference_grants(true)
        .build_with_source(ManifestDir::new(folder));
    ready(&mesh).await?;
    println!(
        "  loaded from {} in {:.1} ms; the mesh watches the folder for changes",
        folder.display(),
        ms(loading.elapsed())
    );
    println!();
    print_statuses(style, &mesh.statuses());
    let rejected = mesh.rejected();
    checks.check(
        style,
        rejected.is_empty(),
        "every manifest object is valid",
        if rejected.is_empty() {
            "no object rejected".into()
        } else {
            join(rejected.iter().map(ToString::to_string))
        },
    );
    check_statuses(style, checks, &mesh.statuses());
    check_endpoints(style, checks, &mesh, pods);
    Ok(mesh)
}

/// [3/9] The reader/writer split, and a method no rule matches.
async fn reads_and_writes(style: Style, checks: &mut Checks, mesh: &Mesh) -> anyhow::Result<()> {
    style.section(
        "[3/9]",
        "user.v1.UserService: reads to user-service-reader, writes to user-service-writer",
    );
    let user = UserServiceClient::new(mesh.channel(USER)?);
    let mut table = Table::new(&[
        ("method", Align::Left),
        ("matched rule", Align::Left),
        ("served by", Align::Left),
        ("calls", Align::Right),
        ("pods (calls)", Align::Left),
    ]);
    const PER_METHOD: usize = 20;
    for (method, expected) in [
        ("GetUser", "user-service-reader"),
        ("ListUsers", "user-service-reader"),
        ("CreateUser", "user-service-writer"),
        ("UpdateUser", "user-service-writer"),
        ("DeleteUser", "user-service-writer"),
    ] {
        let explained = mesh.explain(&call(USER, USER_SERVICE, method, None));
        let client = user.clone();
        let tally = spread(PER_METHOD, move || call_user(client.clone(), method)).await;
        let groups = group(&tally);
        for (backend, (calls, pods)) in &groups {
            table.row([
                method.to_string(),
                rule_label(&explained),
                backend.clone(),
                calls.to_string(),
                pods.clone(),
            ]);
        }
        let only = groups.len() == 1 && groups.get(expected).map(|g| g.0) == Some(PER_METHOD);
        checks.check(
            style,
            only,
            format!("{USER_SERVICE}/{method} goes to {expected}"),
            format!("{PER_METHOD} calls: {}", summary(&groups)),
        );
    }
    table.print(style);

    println!();
    println!(
        "  A method no rule matches ({}):",
        style.bold("user.v1.UserService/ExportUsers")
    );
    let unmatched = user
        .clone()
        .export_users(ExportUsersRequest {
            destination: "s3://exports/users.csv".into(),
        })
        .await;
    match &unmatched {
        Ok(r) => println!(
            "    OK?! served by {}",
            r.metadata()
                .get(BACKEND)
                .map_or("?", |v| v.to_str().unwrap_or("?"))
        ),
        Err(status) => println!(
            "    {}: {}",
            style.red(grpcroute_client::code_name(status.code())),
            status.message()
        ),
    }
    let ok = matches!(&unmatched, Err(s) if s.code() == Code::Unimplemented
        && s.message().contains("app/user-service-route"));
    checks.check(
        style,
        ok,
        "an unrouted method is UNIMPLEMENTED, naming the route",
        match &unmatched {
            Ok(_) => "the call succeeded".into(),
            Err(s) => format!("{}: {}", grpcroute_client::code_name(s.code()), s.message()),
        },
    );
    Ok(())
}

/// [4/9] The A/B test: exact, by header.
async fn ab_test(style: Style, checks: &mut Checks, mesh: &Mesh) -> anyhow::Result<()> {
    style.section(
        "[4/9]",
        "recommendation.v1.RecommendationService: A/B test on x-experiment-group",
    );
    let recommendation = RecommendationServiceClient::new(mesh.channel(RECOMMENDATION)?);
    const AB_CALLS: usize = 100;
    let mut table = Table::new(&[
        ("x-experiment-group", Align::Left),
        ("matched rule", Align::Left),
        ("calls", Align::Right),
        ("recommendation-v1", Align::Right),
        ("recommendation-v2", Align::Right),
        ("pods (calls)", Align::Left),
    ]);
    for (header, expected) in [
        (None, "recommendation-v1"),
        (Some("treatment-a"), "recommendation-v2"),
        (Some("treatment-b"), "recommendation-v1"),
    ] {
        let explained = mesh.explain(&call(
            RECOMMENDATION,
            RECOMMENDATION_SERVICE,
            "Recommend",
            header,
        ));
        let client = recommendation.clone();
        let tally = spread(AB_CALLS, move || call_recommend(client.clone(), header)).await;
        let groups = group(&tally);
        let count = |b: &str| groups.get(b).map_or(0, |g| g.0);
        table.row([
            header.unwrap_or("(not sent)").to_string(),
            rule_label(&explained),
            AB_CALLS.to_string(),
            count("recommendation-v1").to_string(),
            count("recommendation-v2").to_string(),
            join(groups.values().map(|g| g.1.clone())),
        ]);
        checks.check(
            style,
            groups.len() == 1 && count(expected) == AB_CALLS,
            format!(
                "{EXPERIMENT_HEADER}: {} goes to {expected}",
                header.unwrap_or("(none)")
            ),
            format!("{AB_CALLS} calls: {}", summary(&groups)),
        );
    }
    table.print(style);
    Ok(())
}

/// [5/9] and [7/9] 1,000 orders; checks the split against `stable_weight`/100.
async fn canary_split(
    style: Style,
    checks: &mut Checks,
    mesh: &Mesh,
    stable_weight: u32,
) -> anyhow::Result<()> {
    let order = OrderServiceClient::new(mesh.channel(ORDER)?);
    let tally = spread(1000, move || call_order(order.clone())).await;
    split_table(style, checks, &tally, stable_weight);
    Ok(())
}

/// [6/9] `explain` for one order.
fn explain_a_call(style: Style, mesh: &Mesh) {
    style.section(
        "[6/9]",
        "Mesh::explain: what happens to a call, without making it",
    );
    let order_call = call(ORDER, ORDER_SERVICE, "PlaceOrder", None);
    print_explanation(style, &order_call, &mesh.explain(&order_call));
}

/// [7/9] Edits the canary's weights in the watched folder and waits for them.
async fn hot_reload(
    style: Style,
    checks: &mut Checks,
    mesh: &Mesh,
    folder: &Path,
) -> anyhow::Result<()> {
    style.section(
        "[7/9]",
        "Hot reload: set the canary to 50/50 in the watched folder",
    );
    let path = folder.join(CANARY_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        text.matches("weight: 90").count() == 1 && text.matches("weight: 10").count() == 1,
        "{CANARY_FILE} no longer has exactly one `weight: 90` and one `weight: 10`; update the demo"
    );
    let edited = text
        .replace("weight: 90", "weight: 50")
        .replace("weight: 10", "weight: 50");
    println!(
        "  {CANARY_FILE}: order-service-stable weight 90 -> 50, order-service-canary weight 10 -> 50"
    );
    // Write beside it and rename, as editors and `kubectl`-style tools do, so the watcher
    // never sees half a file (hidden files are not read as manifests).
    let partial = folder.join(format!(".{CANARY_FILE}.tmp"));
    let written = Instant::now();
    std::fs::write(&partial, edited).context("cannot write the edited route")?;
    std::fs::rename(&partial, &path).context("cannot replace the route file")?;
    let order_call = call(ORDER, ORDER_SERVICE, "PlaceOrder", None);
    let reload = wait_for_weights(mesh, &order_call, &[50, 50], written).await?;
    // The watcher reports the rename at once; the source also re-reads the folder every 5 s,
    // in case a file system drops events.
    let how = if reload < Duration::from_secs(1) {
        "the file watcher saw the change and waited 50 ms for more"
    } else {
        "the file watcher did not report the change; the source's 5 s re-read found it"
    };
    println!(
        "  the new weights were live {:.1} ms after the file was written ({how})",
        ms(reload)
    );
    checks.check(
        style,
        reload < Duration::from_secs(6),
        "the edited route is live within 6 s",
        format!("{:.1} ms", ms(reload)),
    );
    println!();
    Ok(())
}

/// [8/9] Namespace `web`'s consumer route.
async fn consumer_route(
    style: Style,
    checks: &mut Checks,
    mesh: &Mesh,
    folder: &Path,
) -> anyhow::Result<()> {
    style.section(
        "[8/9]",
        "A consumer route: clients in namespace web keep their orders off the canary",
    );
    println!(
        "  {}",
        style.dim("web/order-stable-only (41-web-consumer-route.yaml) is attached to app/order-service; its")
    );
    println!(
        "  {}",
        style.dim("cross-namespace backendRef is allowed by app/allow-web-routes-to-order-stable (40-reference-grant.yaml).")
    );
    let web = Mesh::builder()
        .namespace("web")
        .strict_reference_grants(true)
        .build_with_source(ManifestDir::new(folder));
    ready(&web).await?;
    const NS_CALLS: usize = 200;
    let get_order = call(ORDER, ORDER_SERVICE, "GetOrder", None);
    println!("  {NS_CALLS} GetOrder calls from each namespace (the canary is at 50/50 now):");
    let mut table = Table::new(&[
        ("client namespace", Align::Left),
        ("routes", Align::Left),
        ("matched rule", Align::Left),
        ("calls", Align::Right),
        ("order-service-stable", Align::Right),
        ("order-service-canary", Align::Right),
    ]);
    for (namespace, client_mesh) in [("app", mesh), ("web", &web)] {
        let explained = client_mesh.explain(&get_order);
        let client = OrderServiceClient::new(client_mesh.channel(ORDER)?);
        let tally = spread(NS_CALLS, move || call_get_order(client.clone())).await;
        let groups = group(&tally);
        let count = |b: &str| groups.get(b).map_or(0, |g| g.0);
        table.row([
            namespace.to_string(),
            explained.route_set.to_string(),
            rule_label(&explained),
            NS_CALLS.to_string(),
            count("order-service-stable").to_string(),
            count("order-service-canary").to_string(),
        ]);
        if namespace == "web" {
            checks.check(
                style,
                groups.len() == 1 && count("order-service-stable") == NS_CALLS,
                "namespace web's consumer route sends every order to order-service-stable",
                format!("{NS_CALLS} calls: {}", summary(&groups)),
            );
        }
    }
    table.print(style);
    Ok(())
}

/// [9/9] What the mesh counted for order-service, from its Prometheus metrics.
fn metrics(style: Style, checks: &mut Checks, mesh: &Mesh) {
    style.section(
        "[9/9]",
        "Prometheus metrics: what the mesh counted for app/order-service (Mesh::metrics)",
    );
    let text = mesh.metrics().encode();
    let frontend = "app/order-service:50051";
    let mut table = Table::new(&[
        ("route", Align::Left),
        ("rule", Align::Right),
        ("backend", Align::Left),
        ("grpc_code", Align::Left),
        ("calls", Align::Right),
    ]);
    let mut placed_orders = 0.0;
    for series in parse_calls(&text).filter(|s| s.label("frontend") == Some(frontend)) {
        if series.value == 0.0 {
            continue;
        }
        let route = series.label("route").unwrap_or_default();
        let rule = series.label("rule").unwrap_or_default();
        if route == "app/order-canary-route" && series.label("grpc_code") == Some("OK") {
            placed_orders += series.value;
        }
        table.row([
            route.to_string(),
            rule.to_string(),
            series.label("backend").unwrap_or_default().to_string(),
            series.label("grpc_code").unwrap_or_default().to_string(),
            format!("{}", series.value),
        ]);
    }
    table.print(style);
    for gauge in [
        "grpcroute_config_version",
        "grpcroute_config_rejected_objects",
        "grpcroute_endpoints",
    ] {
        if let Some(line) = text.lines().find(|l| l.starts_with(&format!("{gauge} "))) {
            println!("  {}", style.dim(line));
        }
    }
    println!(
        "  {}",
        style.dim("Serve this on /metrics; examples/kubernetes/prometheus-rule.yaml alerts on a canary's error rate.")
    );
    // Two canary splits of 1,000 calls and namespace app's 200 GetOrder calls, counted in
    // the same series before and after the hot reload.
    checks.check(
        style,
        placed_orders == 2200.0,
        "the metrics count namespace app's 2,200 order calls, across the hot reload",
        format!("{placed_orders} OK calls of app/order-canary-route"),
    );
}

/// One sample of `grpcroute_client_calls_total`.
struct Sample<'a> {
    labels: &'a str,
    value: f64,
}

impl<'a> Sample<'a> {
    fn label(&self, name: &str) -> Option<&'a str> {
        let start = self.labels.find(&format!("{name}=\""))? + name.len() + 2;
        let rest = &self.labels[start..];
        Some(&rest[..rest.find('"')?])
    }
}

fn parse_calls(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(|line| {
        let rest = line.strip_prefix("grpcroute_client_calls_total{")?;
        let (labels, value) = rest.rsplit_once("} ")?;
        Some(Sample {
            labels,
            value: value.parse().ok()?,
        })
    })
}

/// Copies the manifest files of `from` into `to`; returns the copies, in name order.
fn copy_manifests(from: &Path, to: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = file_name(&path);
        let manifest = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if manifest && !name.starts_with('.') && path.is_file() {
            let copy = to.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &copy)
                .with_context(|| format!("cannot copy {}", path.display()))?;
            files.push(copy);
        }
    }
    ensure!(!files.is_empty(), "no manifests in {}", from.display());
    files.sort();
    Ok(files)
}

async fn ready(mesh: &Mesh) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), mesh.ready())
        .await
        .map_err(|_| {
            anyhow!(
                "the manifests were not loaded within 10 s: {}",
                mesh.source_error()
                    .unwrap_or_else(|| "no error reported".into())
            )
        })
}

/// Polls `explain` until the call's backends have `weights`; returns the time since `since`.
async fn wait_for_weights(
    mesh: &Mesh,
    call: &CallDescription,
    weights: &[u32],
    since: Instant,
) -> anyhow::Result<Duration> {
    // The folder is watched; the source also re-reads it every 5 s in case events are lost.
    let limit = Duration::from_secs(15);
    loop {
        let now: Vec<u32> = mesh
            .explain(call)
            .backends
            .iter()
            .map(|b| b.weight)
            .collect();
        if now == weights {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            bail!(
                "the edited route was not picked up within {limit:?} (weights still {now:?}; source error: {})",
                mesh.source_error().unwrap_or_else(|| "none".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A call for `explain`.
fn call(
    target: &str,
    service: &str,
    method: &str,
    experiment: Option<&'static str>,
) -> CallDescription {
    let mut metadata = HeaderMap::new();
    if let Some(value) = experiment {
        metadata.insert(
            EXPERIMENT_HEADER,
            tonic::codegen::http::HeaderValue::from_static(value),
        );
    }
    CallDescription {
        target: target.into(),
        path: format!("/{service}/{method}"),
        metadata,
        client_namespace: None,
    }
}

/// Prints a weighted split and checks it: the canary's count must be within 4σ of
/// `calls × canary share` (a binomial; a false alarm about once in 16,000 runs).
fn split_table(style: Style, checks: &mut Checks, tally: &Tally, stable_weight: u32) {
    let groups = group(tally);
    let calls: usize = groups.values().map(|g| g.0).sum();
    let canary_weight = 100 - stable_weight;
    let mut table = Table::new(&[
        ("backend", Align::Left),
        ("weight", Align::Right),
        ("expected", Align::Right),
        ("calls", Align::Right),
        ("share", Align::Right),
        ("pods (calls)", Align::Left),
    ]);
    for (backend, weight) in [
        ("order-service-stable", stable_weight),
        ("order-service-canary", canary_weight),
    ] {
        let (n, pods) = groups.get(backend).cloned().unwrap_or_default();
        table.row([
            backend.to_string(),
            weight.to_string(),
            format!("{:.1} %", f64::from(weight)),
            n.to_string(),
            format!("{:.1} %", percent(n, calls)),
            pods,
        ]);
    }
    for (other, (n, _)) in groups
        .iter()
        .filter(|(b, _)| !b.starts_with("order-service-"))
    {
        table.row([
            other.clone(),
            "-".into(),
            "-".into(),
            n.to_string(),
            format!("{:.1} %", percent(*n, calls)),
            String::new(),
        ]);
    }
    table.print(style);

    let p = f64::from(canary_weight) / 100.0;
    let n = calls as f64;
    let sigma = (n * p * (1.0 - p)).sqrt();
    let (lo, hi) = ((n * p - 4.0 * sigma).ceil(), (n * p + 4.0 * sigma).floor());
    let canary = groups.get("order-service-canary").map_or(0, |g| g.0);
    let only_two = groups.keys().all(|b| b.starts_with("order-service-"));
    println!(
        "  expected canary calls: {:.0} ± {:.1} (1σ); the check allows {lo:.0}..={hi:.0} (4σ)",
        n * p,
        sigma
    );
    checks.check(
        style,
        only_two && calls > 0 && (lo..=hi).contains(&(canary as f64)),
        format!("the {stable_weight}/{canary_weight} canary split is within 4σ"),
        format!(
            "canary {canary} of {calls} calls, allowed {lo:.0}..={hi:.0}; {}",
            summary(&groups)
        ),
    );
}

fn percent(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

// --- Reporting helpers ---------------------------------------------------------------------

fn print_statuses(style: Style, statuses: &[RouteStatus]) {
    println!("  Route status, as a GAMMA implementation would write it (mesh.statuses()):");
    let mut table = Table::new(&[
        ("GRPCRoute", Align::Left),
        ("parentRef", Align::Left),
        ("Accepted", Align::Left),
        ("ResolvedRefs", Align::Left),
    ]);
    for status in statuses {
        for parent in &status.parents {
            let p = &parent.parent_ref;
            let condition = |t: &str| {
                parent
                    .conditions
                    .iter()
                    .find(|c| c.type_ == t)
                    .map_or("-".to_string(), |c| match c.status {
                        ConditionStatus::True => "True".into(),
                        other => format!("{other} ({}: {})", c.reason, c.message),
                    })
            };
            table.row([
                status.route.to_string(),
                format!(
                    "Service {}/{}{}",
                    p.namespace.as_deref().unwrap_or(status.route.namespace()),
                    p.name,
                    p.port.map(|port| format!(":{port}")).unwrap_or_default()
                ),
                condition("Accepted"),
                condition("ResolvedRefs"),
            ]);
        }
    }
    table.print(style);
}

fn check_statuses(style: Style, checks: &mut Checks, statuses: &[RouteStatus]) {
    let mut bad = Vec::new();
    for status in statuses {
        for parent in &status.parents {
            for c in &parent.conditions {
                if c.status != ConditionStatus::True {
                    bad.push(format!(
                        "{} {}: {} {}",
                        status.route, c.type_, c.reason, c.message
                    ));
                }
            }
        }
    }
    let ok = statuses.len() == 4 && bad.is_empty();
    checks.check(
        style,
        ok,
        "all 4 GRPCRoutes are Accepted with ResolvedRefs",
        if ok {
            format!("{} routes", statuses.len())
        } else {
            format!("{} routes; {}", statuses.len(), join(bad))
        },
    );
}

/// Checks that the endpoints the mesh resolved for each backend are exactly the demo's pods,
/// i.e. that `pods.rs` and the EndpointSlices agree.
fn check_endpoints(style: Style, checks: &mut Checks, mesh: &Mesh, pods: &[pods::Pod]) {
    let calls = [
        call(USER, USER_SERVICE, "GetUser", None),
        call(USER, USER_SERVICE, "CreateUser", None),
        call(RECOMMENDATION, RECOMMENDATION_SERVICE, "Recommend", None),
        call(
            RECOMMENDATION,
            RECOMMENDATION_SERVICE,
            "Recommend",
            Some("treatment-a"),
        ),
        call(ORDER, ORDER_SERVICE, "PlaceOrder", None),
    ];
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let explanations: Vec<Explanation> = calls.iter().map(|c| mesh.explain(c)).collect();
    for e in &explanations {
        for b in &e.backends {
            let mut endpoints = b.endpoints.clone();
            endpoints.sort();
            if let Some(service) = b.service.as_deref() {
                seen.insert(service, endpoints);
            }
        }
    }
    let want = pods::addresses_by_deployment(pods);
    let mut wrong = Vec::new();
    for (deployment, addrs) in &want {
        let mut addrs = addrs.clone();
        addrs.sort();
        let got = seen.get(deployment).cloned().unwrap_or_default();
        if got != addrs {
            wrong.push(format!(
                "{deployment}: the mesh has [{}], the demo started [{}]",
                join(got),
                join(addrs)
            ));
        }
    }
    checks.check(
        style,
        wrong.is_empty(),
        "each backend's endpoints are the pods the demo started",
        if wrong.is_empty() {
            format!("{} backends, {} pods", want.len(), pods.len())
        } else {
            join(wrong)
        },
    );
}

fn print_explanation(style: Style, call: &CallDescription, e: &Explanation) {
    let row = |k: &str, v: String| println!("  {}  {v}", style.bold(&format!("{k:<9}")));
    row(
        "call",
        format!("{} to {}, from namespace app", call.path, call.target),
    );
    if let Some(FrontendRef::Service {
        namespace,
        service,
        port,
    }) = &e.frontend
    {
        row(
            "frontend",
            format!(
                "Service {namespace}/{service}{}",
                port.map(|p| format!(":{p}")).unwrap_or_default()
            ),
        );
    }
    row(
        "routes",
        format!(
            "{} ({})",
            e.route_set,
            match e.route_set {
                "producer" => "routes in the Service's own namespace",
                "consumer" => "routes in the client's namespace",
                _ => "no route attached",
            }
        ),
    );
    row("rule", rule_label(e));
    row("outcome", format!("{}, status {}", e.outcome, e.status));
    row("reason", e.reason.clone());
    println!("  {}", style.bold("backends"));
    let mut table = Table::new(&[
        ("Service", Align::Left),
        ("weight", Align::Right),
        ("share", Align::Right),
        ("valid", Align::Left),
        ("endpoints", Align::Left),
    ]);
    for b in &e.backends {
        table.row([
            format!(
                "{}/{}{}",
                b.namespace.as_deref().unwrap_or_default(),
                b.service.as_deref().unwrap_or_default(),
                b.port.map(|p| format!(":{p}")).unwrap_or_default()
            ),
            b.weight.to_string(),
            format!("{:.1} %", 100.0 * b.share),
            match &b.reason {
                Some(reason) => format!("{} ({reason})", b.valid),
                None => b.valid.to_string(),
            },
            join(b.endpoints.iter().cloned()),
        ]);
    }
    table.print(style);
}

/// "app/route rule 0", or the outcome when no rule matched.
fn rule_label(e: &Explanation) -> String {
    match (&e.route, &e.rule) {
        (Some(RouteRef::GrpcRoute { namespace, name }), Some(rule)) => {
            format!("{namespace}/{name} rule {}", rule.index)
        }
        _ => format!("({})", e.outcome),
    }
}

fn count_objects(r: &Resources) -> String {
    let parts: Vec<String> = [
        (r.services.len(), "Service"),
        (r.endpoint_slices.len(), "EndpointSlice"),
        (r.routes.len(), "GRPCRoute"),
        (r.reference_grants.len(), "ReferenceGrant"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, kind)| format!("{n} {kind}{}", if n == 1 { "" } else { "s" }))
    .collect();
    if parts.is_empty() {
        "nothing the client uses (Namespaces)".into()
    } else {
        parts.join(", ")
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn join(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
