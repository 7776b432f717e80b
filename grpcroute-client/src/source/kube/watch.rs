//! The watch loop: one kube-rs watcher per kind and namespace scope, merged; state kept
//! per stream; rebuilds coalesced; connection health tracked.

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt, stream::select_all};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        WatchStreamExt,
        utils::Backoff,
        watcher::{self, Event},
    },
};
use tokio::time::{Instant, sleep, sleep_until};

use super::{
    KubeSource,
    state::{ClusterState, Rebuild, StreamState, Versioned as _},
};
use crate::{
    convert::{self, ObjectKind, decode},
    source::{Update as Published, Updater},
};

/// One event of one watch stream. Boxed: objects are large and events are rare.
///
/// Gateway API objects are watched as raw JSON and decoded one by one (see
/// [`decode`]): the CRDs in the cluster may be newer than the API types, and one object
/// with a value those types do not know must be rejected alone instead of failing the
/// whole LIST, which would keep the watch from ever syncing. Core kinds keep their typed
/// watches: their types read unknown enum values as strings.
enum Update {
    Service(usize, Box<Event<Service>>),
    Slice(usize, Box<Event<EndpointSlice>>),
    Route(usize, Box<Event<DynamicObject>>),
    /// ReferenceGrants, `v1` or `v1beta1` (clusters older than Gateway API v1.5).
    Grant(usize, Box<Event<DynamicObject>>),
    /// BackendTLSPolicies, decoded one at a time like routes.
    TlsPolicy(usize, Box<Event<DynamicObject>>),
    ConfigMap(usize, Box<Event<ConfigMap>>),
}

type Item = Result<Update, watcher::Error>;
type Events = Pin<Box<dyn Stream<Item = Item> + Send>>;

/// Which ReferenceGrant version the cluster serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrantVersion {
    V1,
    V1beta1,
    /// The Gateway API CRDs are not installed: no grants, and no routes either.
    None,
}

pub(super) async fn run(cfg: KubeSource, updater: Updater) {
    let mut backoff = WatchBackoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let client = match cfg.client.clone() {
        Some(c) => c,
        None => loop {
            match Client::try_default().await {
                Ok(c) => break c,
                Err(e) => {
                    if !updater.report_error(format!("cannot create a Kubernetes client: {e}")) {
                        return;
                    }
                    sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
                }
            }
        },
    };
    // Every request the source makes, its watches above all, gets the stall bound.
    let client = super::stall::guard(client, cfg.stall_timeout);
    let (grants, backend_tls) = loop {
        match discover(&client).await {
            Ok(v) => break v,
            Err(e) => {
                if !updater.report_error(format!("Kubernetes API discovery failed: {e}")) {
                    return;
                }
                updater.report_connection(false);
                sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
            }
        }
    };
    backoff.reset();
    let backend_tls = backend_tls && cfg.backend_tls_policies;
    tracing::info!(?grants, backend_tls, namespaces = ?cfg.namespaces, "watching the Kubernetes API");

    let mut state = ClusterState::default();
    let streams = streams(&cfg, &client, (grants, backend_tls), &mut state);
    let mut events = select_all(streams);
    let mut batch_started: Option<Instant> = None;
    let mut deadline: Option<Instant> = None;
    let mut connected = true;
    let mut probe_at: Option<Instant> = None;
    updater.report_connection(true);

    loop {
        tokio::select! {
            biased;
            item = events.next() => {
                let Some(item) = item else { return };
                match item {
                    Ok(update) => {
                        if !connected {
                            connected = true;
                            probe_at = None;
                            updater.report_connection(true);
                        }
                        if apply(&mut state, update) {
                            let now = Instant::now();
                            let first = *batch_started.get_or_insert(now);
                            deadline = Some((now + cfg.quiet).min(first + cfg.max_delay));
                        }
                    }
                    Err(error) => {
                        if connected {
                            connected = false;
                            probe_at = Some(Instant::now() + Duration::from_secs(1));
                            updater.report_connection(false);
                        }
                        tracing::debug!(%error, "watch error; retrying with backoff");
                        updater.report_error(format!("watch error: {error}"));
                    }
                }
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && state.synced() => {
                deadline = None;
                let started = batch_started.take();
                let objects = state.object_count();
                let published = match state.rebuild() {
                    Rebuild::Nothing => continue,
                    Rebuild::Full(model) => Published::Model(model),
                    Rebuild::Endpoints(changes) => Published::Endpoints(changes),
                };
                let Some(report) = updater.apply(published) else { return };
                let latency = started.map(|s| s.elapsed());
                if let Some(latency) = latency {
                    updater.report_latency(latency);
                }
                tracing::debug!(version = report.version, objects, ?latency, "configuration rebuilt from the Kubernetes API");
            }
            () = sleep_until(probe_at.unwrap_or_else(Instant::now)), if probe_at.is_some() => {
                // Watches only report recovery with their next event, which may be long
                // in a quiet cluster; ask the API server directly.
                match client.apiserver_version().await {
                    Ok(_) => {
                        connected = true;
                        probe_at = None;
                        updater.report_connection(true);
                    }
                    Err(_) => probe_at = Some(Instant::now() + Duration::from_secs(1)),
                }
            }
        }
    }
}

/// Applies an event to its stream's state; `true` if the visible objects changed.
fn apply(state: &mut ClusterState, update: Update) -> bool {
    const NS: &str = "default";
    match update {
        Update::Service(i, e) => {
            let applied = state.services[i].apply(*e, |o| convert::service(o, NS));
            state.note(&applied)
        }
        Update::Slice(i, e) => {
            let applied = state.slices[i].apply(*e, |o| convert::endpoint_slice(o, NS));
            state.note_slice(applied)
        }
        // A route (or grant) that no longer decodes is dropped like one that no longer
        // validates: its previous version does not keep routing, and the rejection shows
        // in status, metrics and logs (see `decode` and `StreamState`).
        Update::Route(i, e) => {
            let applied = state.routes[i].apply(*e, |o| {
                let decoded = decode::grpc_route(&o.metadata, &o.data, NS)?;
                decode::warn_unknown(ObjectKind::GrpcRoute, &o.key(), &decoded.unknown);
                convert::grpc_route(&decoded.object, NS)
            });
            state.note(&applied)
        }
        Update::Grant(i, e) => {
            let applied = state.grants[i].apply(*e, |o| {
                let decoded = decode::reference_grant(&o.metadata, &o.data, NS)?;
                decode::warn_unknown(ObjectKind::ReferenceGrant, &o.key(), &decoded.unknown);
                convert::reference_grant(&decoded.object, NS)
            });
            state.note(&applied)
        }
        Update::TlsPolicy(i, e) => {
            let applied = state.tls_policies[i].apply(*e, |o| {
                let decoded = decode::backend_tls_policy(&o.metadata, &o.data, NS)?;
                decode::warn_unknown(ObjectKind::BackendTlsPolicy, &o.key(), &decoded.unknown);
                convert::backend_tls_policy(&decoded.object, NS)
            });
            state.note(&applied)
        }
        Update::ConfigMap(i, e) => {
            let applied = state.ca_bundles[i].apply(*e, |o| convert::ca_bundle(o, NS));
            state.note_if_converted_changed(&applied)
        }
    }
}

fn streams(
    cfg: &KubeSource,
    client: &Client,
    (grants, backend_tls): (GrantVersion, bool),
    state: &mut ClusterState,
) -> Vec<Events> {
    let scopes: Vec<Option<&str>> = if cfg.namespaces.is_empty() {
        vec![None]
    } else {
        cfg.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    // Every stream gets its own backoff state.
    let backoff = || WatchBackoff::new(cfg.backoff_initial, cfg.backoff_max);
    let config = || {
        let c = watcher::Config::default();
        match cfg.watch_timeout {
            Some(t) => c.timeout(t),
            None => c,
        }
    };
    let mut out: Vec<Events> = Vec::new();
    for ns in scopes {
        let mut services = config();
        if let Some(selector) = &cfg.service_selector {
            services = services.labels(selector);
        }
        let i = push(&mut state.services);
        out.push(stream(
            typed_api::<Service>(client, ns),
            (services, backoff()),
            move |e| Update::Service(i, Box::new(e)),
        ));
        let i = push(&mut state.slices);
        out.push(stream(
            typed_api::<EndpointSlice>(client, ns),
            (config(), backoff()),
            move |e| Update::Slice(i, Box::new(e)),
        ));
        let grant_version = match grants {
            GrantVersion::V1 => Some("v1"),
            GrantVersion::V1beta1 => Some("v1beta1"),
            // No Gateway API CRDs: neither routes nor grants.
            GrantVersion::None => None,
        };
        if let Some(grant_version) = grant_version {
            let i = push(&mut state.routes);
            out.push(stream(
                dynamic_api(client, ns, "v1", "GRPCRoute", "grpcroutes"),
                (config(), backoff()),
                move |e| Update::Route(i, Box::new(e)),
            ));
            let i = push(&mut state.grants);
            out.push(stream(
                dynamic_api(
                    client,
                    ns,
                    grant_version,
                    "ReferenceGrant",
                    "referencegrants",
                ),
                (config(), backoff()),
                move |e| Update::Grant(i, Box::new(e)),
            ));
        }
        if backend_tls {
            let i = push(&mut state.tls_policies);
            out.push(stream(
                dynamic_api(client, ns, "v1", "BackendTLSPolicy", "backendtlspolicies"),
                (config(), backoff()),
                move |e| Update::TlsPolicy(i, Box::new(e)),
            ));
            // Which ConfigMaps policies will name is only known once they are read, and
            // a watch cannot follow a changing set of names: every ConfigMap of the scope
            // is watched (narrowed by `config_map_selector`), and only `ca.crt` is kept.
            let mut config_maps = config();
            if let Some(selector) = &cfg.config_map_selector {
                config_maps = config_maps.labels(selector);
            }
            let i = push(&mut state.ca_bundles);
            out.push(stream(
                typed_api::<ConfigMap>(client, ns),
                (config_maps, backoff()),
                move |e| Update::ConfigMap(i, Box::new(e)),
            ));
        }
    }
    out
}

/// A Gateway API resource, read as raw JSON.
fn dynamic_api(
    client: &Client,
    ns: Option<&str>,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crate::GATEWAY_GROUP, version, kind),
        plural,
    );
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

fn push<M>(streams: &mut Vec<StreamState<M>>) -> usize {
    streams.push(StreamState::default());
    streams.len() - 1
}

fn typed_api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn stream<K>(
    api: Api<K>,
    (config, backoff): (watcher::Config, WatchBackoff),
    tag: impl Fn(Event<K>) -> Update + Send + 'static,
) -> Events
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
        .backoff(backoff)
        .map(move |r| r.map(&tag))
        .boxed()
}

/// Asks discovery which ReferenceGrant version is served, and whether BackendTLSPolicy
/// (`v1`, Gateway API v1.4 and later) is: a watch of a resource the cluster does not serve
/// would never sync, and the mesh would never become ready.
async fn discover(client: &Client) -> Result<(GrantVersion, bool), kube::Error> {
    let grants = grant_version(client).await?;
    if grants == GrantVersion::None {
        return Ok((grants, false));
    }
    let v1 = client
        .list_api_group_resources(&format!("{}/v1", crate::GATEWAY_GROUP))
        .await;
    let backend_tls = match v1 {
        Ok(list) => list
            .resources
            .iter()
            .any(|r| r.name == "backendtlspolicies"),
        // The group has no v1 (a very old Gateway API): no BackendTLSPolicy v1 either.
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(e) => return Err(e),
    };
    if !backend_tls {
        tracing::info!("the cluster serves no BackendTLSPolicy v1: no backend TLS from policies");
    }
    Ok((grants, backend_tls))
}

/// Which ReferenceGrant version is served: `v1` from Gateway API v1.5, only `v1beta1`
/// before.
async fn grant_version(client: &Client) -> Result<GrantVersion, kube::Error> {
    let groups = client.list_api_groups().await?;
    let Some(group) = groups
        .groups
        .iter()
        .find(|g| g.name == crate::GATEWAY_GROUP)
    else {
        tracing::warn!("the Gateway API CRDs are not installed: no GRPCRoute will apply");
        return Ok(GrantVersion::None);
    };
    for (version, tag) in [("v1", GrantVersion::V1), ("v1beta1", GrantVersion::V1beta1)] {
        if !group.versions.iter().any(|v| v.version == version) {
            continue;
        }
        let resources = client
            .list_api_group_resources(&format!("{}/{version}", crate::GATEWAY_GROUP))
            .await?;
        if resources
            .resources
            .iter()
            .any(|r| r.name == "referencegrants")
        {
            return Ok(tag);
        }
    }
    tracing::warn!(
        "the cluster serves no ReferenceGrant: cross-namespace backends fail in strict mode"
    );
    Ok(GrantVersion::V1)
}

/// Exponential backoff with ±50 % jitter, so the many clients of a mesh that lost the API
/// server at the same moment do not come back in lockstep.
#[derive(Debug)]
struct WatchBackoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl WatchBackoff {
    fn new(initial: Duration, max: Duration) -> Self {
        use rand::Rng as _;
        Self {
            initial,
            max,
            current: initial,
            seed: rand::rng().next_u64(),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: only decorrelation is needed here.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.5 + (self.seed % 1000) as f64 / 1000.0;
        let delay = self.current.mul_f64(jitter);
        self.current = (self.current * 2).min(self.max);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = WatchBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next().unwrap();
        assert!(
            (Duration::from_millis(50)..=Duration::from_millis(150)).contains(&first),
            "{first:?}"
        );
        for _ in 0..10 {
            let d = b.next().unwrap();
            assert!(d <= Duration::from_millis(1500), "{d:?}");
        }
        assert!(
            b.next().unwrap() >= Duration::from_millis(500),
            "at the cap"
        );
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(150));
    }
}
