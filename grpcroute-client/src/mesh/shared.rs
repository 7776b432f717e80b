//! The state behind a [`Mesh`](super::Mesh): what calls read (the [`Core`]), the backends
//! they reach (the [`Registry`]), and how configuration updates change both.
//!
//! An update that changes routes, Services or grants compiles a new table and binds its
//! backends; one that only changes EndpointSlices updates the affected backends in place
//! and leaves the table alone, so its cost follows the change, not the cluster.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use super::health::HealthState;
use crate::{
    backend::{
        Backend, BackendKey, EndpointsDelta, EndpointsSpec, Policy, Registry, service_endpoints,
    },
    dispatch::Core,
    model::InvalidObject,
    model::{EndpointSlice, Model, ObjectKey, Service},
    route::table::{self, GrantPolicy, Table},
    snapshot::Snapshot,
    source::{ChangeSummary, EndpointsChange, Update, UpdateReport},
    transport::SecurityPolicy,
};

pub(crate) struct Shared {
    pub(crate) core: Arc<Core>,
    pub(super) grant_policy: GrantPolicy,
    pub(crate) registry: Registry,
    /// Failure accrual: what the backends of Services apply, and the template of xDS
    /// clusters' outlier detection. `None`: off.
    pub(crate) accrual: Option<crate::backend::accrual::FailureAccrual>,
    /// How each backend's endpoints are connected to (plaintext or TLS).
    pub(super) security: SecurityPolicy,
    /// Only updates (and health reports) take this lock; calls never do.
    pub(super) state: Mutex<UpdateState>,
    pub(super) tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The xDS client, started by the first `xds:` channel.
    #[cfg(feature = "xds")]
    pub(super) xds: Mutex<super::xds::XdsSlot>,
}

#[derive(Default)]
pub(super) struct UpdateState {
    /// What the xDS source last published.
    #[cfg(feature = "xds")]
    pub(super) xds: super::xds::XdsState,
    pub(super) health: HealthState,
    pub(super) version: u64,
    /// Object contents of the configuration in force, to describe what the next update
    /// changes.
    objects: HashMap<(&'static str, ObjectKey), ObjectDigest>,
    /// The Services and their EndpointSlices, from which backends take their endpoints.
    services: HashMap<ObjectKey, Arc<Service>>,
    slices: HashMap<ObjectKey, Vec<Arc<EndpointSlice>>>,
}

/// An object of the configuration in force, kept to tell whether an update changes it.
enum ObjectDigest {
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Route(Arc<crate::model::GrpcRoute>),
    Grant(Arc<crate::model::ReferenceGrant>),
    TlsPolicy(Arc<crate::model::BackendTlsPolicy>),
    CaBundle(Arc<crate::model::CaBundle>),
    Rejected(InvalidObject),
}

const SLICE: &str = "EndpointSlice";

impl PartialEq for ObjectDigest {
    /// Equal contents. The same object (a source that keeps the objects it did not
    /// change, as the Kubernetes source does) is equal without comparing them.
    fn eq(&self, other: &Self) -> bool {
        fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
            Arc::ptr_eq(a, b) || a == b
        }
        match (self, other) {
            (Self::Service(a), Self::Service(b)) => same(a, b),
            (Self::EndpointSlice(a), Self::EndpointSlice(b)) => same(a, b),
            (Self::Route(a), Self::Route(b)) => same(a, b),
            (Self::Grant(a), Self::Grant(b)) => same(a, b),
            (Self::TlsPolicy(a), Self::TlsPolicy(b)) => same(a, b),
            (Self::CaBundle(a), Self::CaBundle(b)) => same(a, b),
            (Self::Rejected(a), Self::Rejected(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("namespace", &self.core.namespace)
            .field("ready", &self.core.snapshot.load().is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Shared {
    pub(crate) fn apply(&self, update: Update) -> UpdateReport {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.registry.endpoint_churn();
        let (changes, rejected, kind) = match update {
            Update::Model(model) => self.apply_model(&mut state, model),
            Update::Endpoints(changes) => (
                self.apply_endpoints(&mut state, changes),
                self.current()
                    .map(|s| s.table.rejected.clone())
                    .unwrap_or_default(),
                "endpoints",
            ),
        };
        let after = self.registry.endpoint_churn();
        self.published(&mut state, kind);

        let (endpoints_added, endpoints_removed) =
            ((after.0 - before.0) as usize, (after.1 - before.1) as usize);
        tracing::info!(
            version = state.version,
            kind,
            added = changes.added,
            changed = changes.changed,
            removed = changes.removed,
            endpoints_added,
            endpoints_removed,
            services = state.services.len(),
            rejected = rejected.len(),
            "routing configuration updated"
        );
        UpdateReport {
            version: state.version,
            changes,
            endpoints_added,
            endpoints_removed,
            rejected,
        }
    }

    /// Records that an update took effect and wakes the calls waiting for one.
    pub(super) fn published(&self, state: &mut UpdateState, kind: &'static str) {
        state.version += 1;
        state.health.last_update = Some(SystemTime::now());
        if state.health.disconnected_since.is_none() {
            state.health.connected = true;
        }
        *self
            .core
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.core.ready.send_replace(state.version);
        tracing::debug!(version = state.version, kind, "configuration published");
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.core.snapshot.load_full()
    }

    /// A whole configuration. When it differs from the one in force only in EndpointSlices,
    /// it is applied as an endpoint update.
    fn apply_model(
        &self,
        state: &mut UpdateState,
        model: Model,
    ) -> (ChangeSummary, Vec<InvalidObject>, &'static str) {
        let objects = digest(&model);
        let (changes, changed_kinds) = summarize(&state.objects, &objects);
        let routing_changed = self.current().is_none() || changed_kinds.routing;

        let mut slices: HashMap<ObjectKey, Vec<Arc<EndpointSlice>>> = HashMap::new();
        for slice in &model.endpoint_slices {
            slices
                .entry(slice.service_key())
                .or_default()
                .push(slice.clone());
        }
        if !routing_changed {
            // Only EndpointSlices changed: the Services whose slices differ.
            let changes_list = changed_kinds
                .slices_of
                .into_iter()
                .map(|service| EndpointsChange {
                    slices: slices.remove(&service).unwrap_or_default(),
                    service,
                })
                .collect();
            self.update_endpoints(state, changes_list);
            state.objects = objects;
            let rejected = self
                .current()
                .map(|s| s.table.rejected.clone())
                .unwrap_or_default();
            return (changes, rejected, "endpoints");
        }

        // The table in force lets the compile reuse what this update does not change.
        let previous = self.current();
        let table = Arc::new(table::compile(
            &model,
            self.grant_policy,
            previous.as_ref().map(|s| &*s.table),
        ));
        drop(previous);
        state.services = model
            .services
            .iter()
            .map(|s| (s.key.clone(), s.clone()))
            .collect();
        state.slices = slices;
        state.objects = objects;
        let rejected = table.rejected.clone();
        self.bind(state, table);
        for invalid in &rejected {
            tracing::warn!(%invalid, "object rejected");
        }
        (changes, rejected, "full")
    }

    /// Binds every backend a new table names, gives each its current endpoints, and swaps
    /// the snapshot in. Backends the previous table named and this one does not stop
    /// taking calls at once (their endpoints are dropped; calls already on them finish).
    fn bind(&self, state: &UpdateState, table: Arc<Table>) {
        let backends: Arc<[Arc<Backend>]> = table
            .backends
            .iter()
            .map(|key| {
                let (backend, _) = self.registry.get_or_create(key);
                backend.set_resolved_security(self.security.security_for(
                    key,
                    table.backend_tls.get(key).map(|a| &**a),
                    &backend.security(),
                ));
                backend.set_spec(self.service_spec(state, key));
                backend
            })
            .collect();
        // The xDS part (with the `xds` feature) stays as it is.
        #[allow(clippy::needless_update)]
        let snapshot = Arc::new(Snapshot {
            table,
            backends,
            kube_synced: true,
            ..self.current().as_deref().cloned().unwrap_or_default()
        });
        // Backends the new table no longer binds keep their endpoints: a call that loaded
        // the previous snapshot an instant ago still picks from them. They leave the pool
        // when the last snapshot or call holding them drops them (`Backend`'s `Drop`).
        drop(self.core.snapshot.swap(Some(snapshot.clone())));
        self.registry.prune();
        // Series of routes, rules and backends that are gone leave with them.
        self.core
            .series
            .retain_reachable(|key| snapshot.reaches(key));
    }

    fn apply_endpoints(
        &self,
        state: &mut UpdateState,
        changes: Vec<EndpointsChange>,
    ) -> ChangeSummary {
        let mut summary = ChangeSummary::default();
        for change in &changes {
            let old: HashMap<&ObjectKey, &Arc<EndpointSlice>> = state
                .slices
                .get(&change.service)
                .into_iter()
                .flatten()
                .map(|s| (&s.key, s))
                .collect();
            for s in &change.slices {
                match old.get(&s.key) {
                    None => summary.added += 1,
                    Some(o) if ***o != **s => summary.changed += 1,
                    Some(_) => {}
                }
            }
            summary.removed += old
                .keys()
                .filter(|k| !change.slices.iter().any(|s| &s.key == **k))
                .count();
        }
        for change in &changes {
            if let Some(old) = state.slices.get(&change.service) {
                for s in old {
                    state.objects.remove(&(SLICE, s.key.clone()));
                }
            }
            for s in &change.slices {
                state.objects.insert(
                    (SLICE, s.key.clone()),
                    ObjectDigest::EndpointSlice(s.clone()),
                );
            }
        }
        self.update_endpoints(state, changes);
        summary
    }

    /// Stores the Services' new slices and gives their live backends the endpoints those
    /// slices list. Touches nothing else.
    fn update_endpoints(&self, state: &mut UpdateState, changes: Vec<EndpointsChange>) {
        let mut delta = EndpointsDelta::default();
        for EndpointsChange { service, slices } in changes {
            if slices.is_empty() {
                state.slices.remove(&service);
            } else {
                state.slices.insert(service.clone(), slices);
            }
            let Some(svc) = state.services.get(&service) else {
                continue;
            };
            for port in &svc.ports {
                let key = BackendKey::Service {
                    service: service.clone(),
                    port: port.port,
                };
                if let Some(backend) = self.registry.get(&key) {
                    delta += backend.set_spec(self.service_spec(state, &key));
                }
            }
        }
        tracing::debug!(
            added = delta.added,
            removed = delta.removed,
            "backend endpoints updated"
        );
    }

    /// What a Service port's backend has under the configuration in `state`: its
    /// endpoints, under the mesh's policy for Services (P2C, failure accrual).
    fn service_spec(&self, state: &UpdateState, key: &BackendKey) -> EndpointsSpec {
        EndpointsSpec::flat(endpoints_of(state, key)).with_policy(Policy {
            accrual: self.accrual.as_ref().map(Into::into),
            ..Policy::default()
        })
    }

    pub(crate) fn report_error(&self, error: String) {
        tracing::warn!(%error, "configuration source error; keeping the last good configuration");
        *self
            .core
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

/// The endpoints `key` has under the configuration in `state`.
fn endpoints_of(state: &UpdateState, key: &BackendKey) -> Vec<std::net::SocketAddr> {
    match key {
        BackendKey::Service { service, port } => match state.services.get(service) {
            Some(svc) => service_endpoints(
                svc,
                *port,
                state.slices.get(service).map_or(&[][..], Vec::as_slice),
            ),
            None => Vec::new(),
        },
        BackendKey::Cluster(_) => Vec::new(),
    }
}

/// What kinds of objects an update changes, besides how many.
#[derive(Default)]
struct ChangedKinds {
    /// Some object other than an EndpointSlice was added, changed or removed.
    routing: bool,
    /// The Services whose EndpointSlices were added, changed or removed.
    slices_of: HashSet<ObjectKey>,
}

/// Compares the objects in force with an update's, once each: a whole-configuration
/// update at 10,000 routes compares tens of thousands of objects.
fn summarize(
    before: &HashMap<(&'static str, ObjectKey), ObjectDigest>,
    after: &HashMap<(&'static str, ObjectKey), ObjectDigest>,
) -> (ChangeSummary, ChangedKinds) {
    let mut changes = ChangeSummary::default();
    let mut kinds = ChangedKinds::default();
    let mut note = |key: &(&'static str, ObjectKey), digest: &ObjectDigest| {
        if let ObjectDigest::EndpointSlice(s) = digest {
            kinds.slices_of.insert(s.service_key());
        } else if key.0 != SLICE {
            kinds.routing = true;
        }
    };
    for (key, digest) in after {
        match before.get(key) {
            None => changes.added += 1,
            Some(old) if old != digest => changes.changed += 1,
            Some(_) => continue,
        }
        note(key, digest);
    }
    for (key, digest) in before {
        if !after.contains_key(key) {
            changes.removed += 1;
            note(key, digest);
        }
    }
    (changes, kinds)
}

fn digest(model: &Model) -> HashMap<(&'static str, ObjectKey), ObjectDigest> {
    let mut out = HashMap::new();
    for s in &model.services {
        out.insert(("Service", s.key.clone()), ObjectDigest::Service(s.clone()));
    }
    for s in &model.endpoint_slices {
        out.insert(
            (SLICE, s.key.clone()),
            ObjectDigest::EndpointSlice(s.clone()),
        );
    }
    for r in &model.routes {
        out.insert(("GRPCRoute", r.key.clone()), ObjectDigest::Route(r.clone()));
    }
    for g in &model.grants {
        out.insert(
            ("ReferenceGrant", g.key.clone()),
            ObjectDigest::Grant(g.clone()),
        );
    }
    // BackendTLSPolicies and their ConfigMaps change how backends connect: a change to
    // either compiles a new table, whose binding gives each backend its new security.
    for p in &model.tls_policies {
        out.insert(
            ("BackendTLSPolicy", p.key.clone()),
            ObjectDigest::TlsPolicy(p.clone()),
        );
    }
    for b in &model.ca_bundles {
        out.insert(
            ("ConfigMap", b.key.clone()),
            ObjectDigest::CaBundle(b.clone()),
        );
    }
    for r in &model.rejected {
        out.insert(
            ("Rejected", r.key().clone()),
            ObjectDigest::Rejected(r.clone()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use crate::{
        Mesh, Resources,
        build::{Backend, Rule, endpoints, route, service},
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(pod: &str) -> Resources {
        Resources::new()
            .with(service("shop", "front").port("grpc", 50051))
            .with(service("shop", "b").port("grpc", 50051))
            .with(endpoints("shop", "b").port("grpc", 8080).ready(ip(pod)))
            .with(
                route("shop", "r")
                    .parent_service("front", Some(50051))
                    .rule(Rule::new().backend(Backend::service("b", 50051))),
            )
    }

    fn endpoints_of_b(mesh: &Mesh) -> Vec<String> {
        let snapshot = mesh.shared.core.snapshot.load_full().unwrap();
        let b = snapshot
            .backends
            .iter()
            .find(|b| &**b.label() == "shop/b:50051")
            .unwrap();
        b.endpoints()
            .all()
            .iter()
            .map(|e| e.addr().to_string())
            .collect()
    }

    #[test]
    fn an_endpoint_only_change_updates_the_backend_without_compiling_routes() {
        let mesh = Mesh::builder().namespace("shop").build();
        mesh.update(&config("10.0.0.1"));
        let table = mesh.shared.core.snapshot.load_full().unwrap().table.clone();
        let report = mesh.update(&config("10.0.0.2"));
        assert_eq!(report.changes.changed, 1, "{report:?}");
        assert_eq!((report.endpoints_added, report.endpoints_removed), (1, 1));
        let after = mesh.shared.core.snapshot.load_full().unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&table, &after.table),
            "the same table: no route was compiled"
        );
        assert_eq!(endpoints_of_b(&mesh), ["10.0.0.2:8080"]);
        assert_eq!(mesh.shared.source_health().version, 2);
    }

    #[test]
    fn a_route_change_compiles_a_new_table_and_keeps_the_backends() {
        let mesh = Mesh::builder().namespace("shop").build();
        mesh.update(&config("10.0.0.1"));
        let before = mesh.shared.core.snapshot.load_full().unwrap();
        let changed = config("10.0.0.1").with(
            route("shop", "r2")
                .parent_service("front", Some(50051))
                .rule(Rule::new().backend(Backend::service("b", 50051))),
        );
        let report = mesh.update(&changed);
        assert_eq!(report.changes.added, 1);
        let after = mesh.shared.core.snapshot.load_full().unwrap();
        assert!(!std::sync::Arc::ptr_eq(&before.table, &after.table));
        let b = |s: &crate::snapshot::Snapshot| {
            s.backends
                .iter()
                .find(|b| &**b.label() == "shop/b:50051")
                .unwrap()
                .clone()
        };
        assert!(
            std::sync::Arc::ptr_eq(&b(&before), &b(&after)),
            "the backend object survives the change"
        );
        assert_eq!(endpoints_of_b(&mesh), ["10.0.0.1:8080"]);
    }

    #[test]
    fn a_backend_no_table_names_drains_once_its_last_holder_drops_it() {
        let mesh = Mesh::builder().namespace("shop").build();
        mesh.update(&config("10.0.0.1"));
        let before = mesh.shared.core.snapshot.load_full().unwrap();
        let endpoint = before
            .backends
            .iter()
            .find(|b| &**b.label() == "shop/b:50051")
            .unwrap()
            .endpoints()
            .all()[0]
            .clone();
        // Service b and its route go away while `before` is held, as by a call that loaded
        // it an instant earlier: that call can still pick b's endpoint (emptying b at once
        // failed such calls UNAVAILABLE during ordinary route changes).
        mesh.update(&Resources::new().with(service("shop", "front").port("grpc", 50051)));
        assert!(!endpoint.is_retired());
        drop(before);
        assert!(
            endpoint.is_retired(),
            "once no snapshot or call holds the backend, its endpoint leaves the pool"
        );
    }
}
