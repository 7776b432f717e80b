//! How configuration reaches the meshes under test: straight into [`Mesh::update`], or
//! through a Kubernetes API server ([`grpcroute_test_apiserver::ApiServer`]) that each mesh
//! follows with a [`KubeSource`]. A scenario written against [`Feed`] runs unchanged with
//! either [`Delivery`]; [`each_delivery!`](crate::each_delivery) makes one test of it per
//! delivery.
//!
//! With [`Delivery::Kube`], [`Feed::set`] writes only what changed, in the order an
//! operator rolling out a change would use (make before break: Services, EndpointSlices
//! and ReferenceGrants created or changed first, then routes, then deletions), and returns
//! once every mesh of the feed has seen each step. "Has seen" is exact, not a delay: after
//! each step the feed rewrites one marker object of every kind in namespace
//! [`SYNC_NAMESPACE`] (watch events of one kind arrive in order, so a mesh that shows all
//! four markers has processed everything written before them), and waits until
//! [`Mesh::explain`] shows them.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context as _;
use grpcroute_client::{
    CallDescription, Mesh, MeshBuilder, Object, Resources,
    build::{Backend, Match, Rule, endpoints, grant, route, service},
    source::KubeSource,
};
use grpcroute_test_apiserver::{ApiServer, Resource};
use serde_json::Value;

use crate::cluster::LOOPBACK;

/// Where the markers that tell whether a mesh has caught up live.
pub const SYNC_NAMESPACE: &str = "grpcroute-sync";
/// The namespace of the marker route's cross-namespace backend (seen through strict
/// ReferenceGrant checks).
const SYNC_PEER_NAMESPACE: &str = "grpcroute-sync-peer";
/// The gRPC service the marker route matches.
const SYNC_SERVICE: &str = "grpcroute.sync.Sync";

/// How long a mesh may take to see a configuration before the harness gives up (a hang
/// detector, not a performance bound).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the configuration reaches a mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// [`Mesh::update`] with the whole configuration.
    Direct,
    /// Objects written to a Kubernetes API server on 127.0.0.1; the mesh watches it with a
    /// [`KubeSource`].
    Kube,
}

impl Delivery {
    /// Both deliveries.
    pub const ALL: [Delivery; 2] = [Delivery::Direct, Delivery::Kube];
}

/// One object as the API server stores it: kind, namespace, name.
type Key = (Resource, String, String);

/// One step of [`Feed::set`]: objects to write, then objects to delete.
type Step = (Vec<(Key, Value)>, Vec<Key>);

/// The configuration of a test and the meshes it feeds.
#[derive(Debug)]
pub struct Feed {
    delivery: Delivery,
    api: Option<ApiServer>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The configuration, as the test last set it.
    resources: Resources,
    /// What was last written to the API server (Kube), without the markers.
    written: BTreeMap<Key, Value>,
    /// Every mesh made by [`Feed::mesh`], to update (Direct) or wait for (Kube).
    meshes: Vec<Mesh>,
    /// The generation of the markers (Kube).
    seq: u64,
}

impl Feed {
    /// A feed with no configuration; for [`Delivery::Kube`] it starts an API server on
    /// 127.0.0.1 (stopped by [`Feed::shutdown`], or when dropped).
    ///
    /// # Errors
    ///
    /// If the API server cannot start.
    pub async fn start(delivery: Delivery) -> anyhow::Result<Self> {
        let api = match delivery {
            Delivery::Direct => None,
            Delivery::Kube => Some(
                ApiServer::builder()
                    .start()
                    .await
                    .context("starting the test API server")?,
            ),
        };
        let feed = Self {
            delivery,
            api,
            inner: Mutex::new(Inner::default()),
        };
        if feed.api.is_some() {
            let seq = {
                let mut inner = feed.lock();
                inner.seq = 1;
                inner.seq
            };
            feed.write_markers(seq)?;
        }
        Ok(feed)
    }

    /// A feed whose configuration is `resources` from the start.
    ///
    /// # Errors
    ///
    /// As [`Feed::start`] and [`Feed::set`].
    pub async fn with(delivery: Delivery, resources: Resources) -> anyhow::Result<Self> {
        let feed = Self::start(delivery).await?;
        feed.set(resources).await?;
        Ok(feed)
    }

    /// How this feed delivers.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The API server, with [`Delivery::Kube`]: for tests that write to it themselves or
    /// inject faults.
    pub fn api(&self) -> Option<&ApiServer> {
        self.api.as_ref()
    }

    /// The configuration last set.
    pub fn resources(&self) -> Resources {
        self.lock().resources.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A mesh configured by this feed, from `builder` (namespace, seed, options). Direct:
    /// built and updated with the current configuration. Kube: built with a
    /// [`KubeSource`] on the API server, returned once it is ready and has seen everything
    /// written so far. Later [`Feed::set`] calls reach it too.
    ///
    /// # Errors
    ///
    /// If the mesh rejects an object (every object of these tests must be valid), or (Kube)
    /// never syncs.
    pub async fn mesh(&self, builder: MeshBuilder) -> anyhow::Result<Mesh> {
        let mesh = match &self.api {
            None => {
                let mesh = builder.build();
                let resources = self.resources();
                let report = mesh.update(&resources);
                anyhow::ensure!(
                    report.rejected.is_empty(),
                    "the mesh rejected objects: {:?}",
                    report.rejected
                );
                mesh
            }
            Some(api) => {
                let source = KubeSource::with_client(api.client()?);
                let mesh = builder.build_with_source(source);
                tokio::time::timeout(CATCH_UP_TIMEOUT, mesh.ready())
                    .await
                    .context("the mesh never finished its initial sync with the API server")?;
                let seq = self.lock().seq;
                caught_up(&mesh, seq).await?;
                let rejected = mesh.rejected();
                anyhow::ensure!(
                    rejected.is_empty(),
                    "the mesh rejected objects: {rejected:?}"
                );
                mesh
            }
        };
        self.lock().meshes.push(mesh.clone());
        Ok(mesh)
    }

    /// Replaces the whole configuration, for every mesh of the feed. Direct: one
    /// [`Mesh::update`] each. Kube: the changed objects are written (see the module
    /// documentation for the order), and this returns once every mesh has seen them.
    ///
    /// # Errors
    ///
    /// A rejected object, an object the API server refuses, or a mesh that does not catch
    /// up within [`CATCH_UP_TIMEOUT`].
    pub async fn set(&self, resources: Resources) -> anyhow::Result<()> {
        let Some(api) = &self.api else {
            let meshes = {
                let mut inner = self.lock();
                inner.resources = resources.clone();
                inner.meshes.clone()
            };
            for mesh in meshes {
                let report = mesh.update(&resources);
                anyhow::ensure!(
                    report.rejected.is_empty(),
                    "the mesh rejected objects: {:?}",
                    report.rejected
                );
            }
            return Ok(());
        };
        let desired = objects(&resources)?;
        let written = {
            let mut inner = self.lock();
            inner.resources = resources;
            inner.written.clone()
        };
        let changed = |key: &Key, value: &Value| written.get(key) != Some(value);
        let upserts = |kinds: &[Resource]| -> Vec<(Key, Value)> {
            desired
                .iter()
                .filter(|(k, v)| kinds.contains(&k.0) && changed(k, v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let deletes = |kinds: &[Resource]| -> Vec<Key> {
            written
                .keys()
                .filter(|k| kinds.contains(&k.0) && !desired.contains_key(*k))
                .cloned()
                .collect()
        };
        let backends = [
            Resource::Services,
            Resource::EndpointSlices,
            Resource::ReferenceGrants,
        ];
        let steps: [Step; 3] = [
            (upserts(&backends), Vec::new()),
            (
                upserts(&[Resource::GrpcRoutes]),
                deletes(&[Resource::GrpcRoutes]),
            ),
            (Vec::new(), deletes(&backends)),
        ];
        for (upserts, deletes) in steps {
            if upserts.is_empty() && deletes.is_empty() {
                continue;
            }
            for (key, value) in upserts {
                api.apply(value.clone())
                    .with_context(|| format!("writing {key:?}"))?;
                self.lock().written.insert(key, value);
            }
            for key in deletes {
                api.delete(key.0, &key.1, &key.2)
                    .with_context(|| format!("deleting {key:?}"))?;
                self.lock().written.remove(&key);
            }
            self.sync().await?;
        }
        let meshes = self.lock().meshes.clone();
        for mesh in meshes {
            let rejected = mesh.rejected();
            anyhow::ensure!(
                rejected.is_empty(),
                "the mesh rejected objects: {rejected:?}"
            );
        }
        Ok(())
    }

    /// Kube: waits until every mesh of the feed has seen everything written to the API
    /// server so far, including writes a test made itself (e.g. `api().apply(..)`).
    /// Direct: nothing to wait for.
    ///
    /// # Errors
    ///
    /// A mesh that does not catch up within [`CATCH_UP_TIMEOUT`].
    pub async fn sync(&self) -> anyhow::Result<()> {
        if self.api.is_none() {
            return Ok(());
        }
        let (seq, meshes) = {
            let mut inner = self.lock();
            inner.seq += 1;
            (inner.seq, inner.meshes.clone())
        };
        self.write_markers(seq)?;
        for mesh in &meshes {
            caught_up(mesh, seq).await?;
        }
        Ok(())
    }

    fn write_markers(&self, seq: u64) -> anyhow::Result<()> {
        let Some(api) = &self.api else {
            return Ok(());
        };
        for object in markers(seq) {
            api.apply(object_value(&object)?)
                .context("writing a sync marker")?;
        }
        Ok(())
    }

    /// Stops the API server (if any) and lets go of the meshes.
    pub async fn shutdown(self) {
        let Self { api, inner, .. } = self;
        drop(inner);
        if let Some(api) = api {
            api.shutdown().await;
        }
    }
}

/// The port of the marker Service at generation `seq`.
fn marker_port(seq: u64) -> u16 {
    // 1024..=61023: never 0, never the same for two consecutive generations.
    1024 + u16::try_from(seq % 60_000).unwrap_or_default()
}

/// The marker objects of generation `seq`: a Service whose port, an EndpointSlice whose
/// endpoint port, a GRPCRoute whose matched method and a ReferenceGrant whose allowed
/// Service name all change with `seq`.
fn markers(seq: u64) -> Vec<Object> {
    let port = marker_port(seq);
    let peer = format!("g{seq}");
    vec![
        service(SYNC_NAMESPACE, "sync").port("grpc", port).into(),
        endpoints(SYNC_NAMESPACE, "sync")
            .name("sync")
            .port("grpc", port)
            .ready(LOOPBACK)
            .into(),
        grant(SYNC_PEER_NAMESPACE, "sync", SYNC_NAMESPACE, Some(&peer)).into(),
        route(SYNC_NAMESPACE, "sync")
            .parent_service("sync", None)
            .rule(
                Rule::new()
                    .matches(Match::method(SYNC_SERVICE, &format!("S{seq}")))
                    .backend(Backend::service("sync", port))
                    .backend(Backend::service(&peer, port).namespace(SYNC_PEER_NAMESPACE)),
            )
            .into(),
    ]
}

/// Whether `mesh` shows the markers of generation `seq`: the route's rule matches (the
/// route), its first backend has exactly the marker endpoint on the marker port (the
/// Service and the EndpointSlice), and its cross-namespace backend is not refused for want
/// of a grant (the ReferenceGrant, in strict meshes; permissive ones never refuse).
fn shows_markers(mesh: &Mesh, seq: u64) -> bool {
    let port = marker_port(seq);
    let e = mesh.explain(&CallDescription {
        target: format!("sync.{SYNC_NAMESPACE}:{port}"),
        path: format!("/{SYNC_SERVICE}/S{seq}"),
        ..Default::default()
    });
    let endpoint = format!("{LOOPBACK}:{port}");
    e.rule.is_some()
        && e.backends
            .first()
            .is_some_and(|b| b.endpoints == [endpoint.clone()])
        && e.backends.get(1).is_some_and(|b| {
            !b.reason
                .as_deref()
                .is_some_and(|r| r.contains("RefNotPermitted"))
        })
}

/// Waits until `mesh` shows the markers of generation `seq`.
async fn caught_up(mesh: &Mesh, seq: u64) -> anyhow::Result<()> {
    let mut updates = mesh.updates();
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    while !shows_markers(mesh, seq) {
        tokio::time::timeout_at(deadline, updates.changed())
            .await
            .with_context(|| {
                format!(
                    "the mesh did not see the configuration within {CATCH_UP_TIMEOUT:?} \
                     (source health: {:?})",
                    mesh.source_health()
                )
            })?
            .context("the mesh is gone")?;
    }
    Ok(())
}

/// Every object of `resources` as the JSON the API server takes, by key.
fn objects(resources: &Resources) -> anyhow::Result<BTreeMap<Key, Value>> {
    let all = resources
        .services
        .iter()
        .cloned()
        .map(Object::from)
        .chain(resources.endpoint_slices.iter().cloned().map(Object::from))
        .chain(resources.reference_grants.iter().cloned().map(Object::from))
        .chain(resources.routes.iter().cloned().map(Object::from))
        .chain(
            resources
                .backend_tls_policies
                .iter()
                .cloned()
                .map(Object::from),
        )
        .chain(resources.config_maps.iter().cloned().map(Object::from));
    let mut out = BTreeMap::new();
    for object in all {
        let value = object_value(&object)?;
        let key = key_of(&object, &value)?;
        anyhow::ensure!(
            out.insert(key.clone(), value).is_none(),
            "{key:?} is defined twice"
        );
    }
    Ok(out)
}

/// The JSON of one object, with its namespace made explicit (`default` when absent, as
/// `kubectl` and [`Mesh::update`] take it).
pub fn object_value(object: &Object) -> anyhow::Result<Value> {
    let mut value = match object {
        Object::GrpcRoute(o) => serde_json::to_value(o),
        Object::Service(o) => serde_json::to_value(o),
        Object::EndpointSlice(o) => serde_json::to_value(o),
        Object::ReferenceGrant(o) => serde_json::to_value(o),
        Object::BackendTlsPolicy(o) => serde_json::to_value(o),
        Object::ConfigMap(o) => serde_json::to_value(o),
    }?;
    let metadata = value
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .context("an object without metadata")?;
    metadata
        .entry("namespace")
        .or_insert_with(|| Value::String("default".into()));
    Ok(value)
}

fn key_of(object: &Object, value: &Value) -> anyhow::Result<Key> {
    let resource = match object {
        Object::GrpcRoute(_) => Resource::GrpcRoutes,
        Object::Service(_) => Resource::Services,
        Object::EndpointSlice(_) => Resource::EndpointSlices,
        Object::ReferenceGrant(_) => Resource::ReferenceGrants,
        Object::BackendTlsPolicy(_) => Resource::BackendTlsPolicies,
        Object::ConfigMap(_) => Resource::ConfigMaps,
    };
    let meta = |field: &str| {
        value["metadata"][field]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("an object without metadata.{field}: {value}"))
    };
    Ok((resource, meta("namespace")?, meta("name")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kube_feed_follows_sets_and_removes_objects() -> anyhow::Result<()> {
        let feed = Feed::start(Delivery::Kube).await?;
        let mesh = feed
            .mesh(Mesh::builder().namespace("a").strict_reference_grants(true))
            .await?;
        let base = Resources::new()
            .with(service("a", "front").port("grpc", 7070))
            .with(service("b", "back").port("grpc", 7070))
            .with(
                route("a", "r")
                    .parent_service("front", None)
                    .rule(Rule::new().backend(Backend::service("back", 7070).namespace("b"))),
            );
        let refused = |mesh: &Mesh| {
            let e = mesh.explain(&CallDescription {
                target: "front:7070".into(),
                path: "/x.Y/Z".into(),
                ..Default::default()
            });
            e.backends[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("RefNotPermitted"))
        };
        feed.set(base.clone()).await?;
        assert!(refused(&mesh));
        feed.set(base.clone().with(grant("b", "g", "a", Some("back"))))
            .await?;
        assert!(!refused(&mesh), "the grant was seen");
        feed.set(base).await?;
        assert!(refused(&mesh), "the grant's deletion was seen");
        let api = feed.api().context("no API server")?;
        assert!(api.get(Resource::ReferenceGrants, "b", "g").is_none());
        assert!(api.get(Resource::GrpcRoutes, "a", "r").is_some());
        feed.set(Resources::new()).await?;
        assert!(api.get(Resource::GrpcRoutes, "a", "r").is_none());
        assert!(api.get(Resource::Services, "a", "front").is_none());
        feed.shutdown().await;
        Ok(())
    }
}
