//! What the watches have seen, per watch stream, converted once per object version.
//!
//! A watch (re)lists between `Init` and `InitDone`; objects listed then are buffered and
//! replace the stream's objects atomically at `InitDone`, so a relist (after a 410 or a
//! reconnect) never shows a half-loaded view, and objects deleted while the watch was
//! down disappear.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use kube::runtime::watcher::Event;

use crate::{
    model::InvalidObject,
    model::{EndpointSlice, Model, ObjectKey},
    source::EndpointsChange,
};

/// What one watch event did to a stream's visible objects.
#[derive(Debug)]
pub(super) enum Applied<M> {
    /// Nothing visible changed.
    Nothing,
    /// A (re)list completed: any object may have changed.
    Relisted,
    /// One object changed: its conversion before and after (`None`: absent).
    Object {
        old: Option<Result<Arc<M>, InvalidObject>>,
        new: Option<Result<Arc<M>, InvalidObject>>,
    },
}

impl<M> Applied<M> {
    pub(super) fn changed(&self) -> bool {
        !matches!(self, Self::Nothing)
    }
}

/// One object as last seen: its `resourceVersion` and its conversion.
#[derive(Clone, Debug)]
struct Entry<M> {
    version: Option<String>,
    converted: Result<Arc<M>, InvalidObject>,
}

/// The objects of one watch stream.
#[derive(Debug)]
pub(super) struct StreamState<M> {
    live: HashMap<ObjectKey, Entry<M>>,
    relisting: Option<HashMap<ObjectKey, Entry<M>>>,
    synced: bool,
}

impl<M> Default for StreamState<M> {
    fn default() -> Self {
        Self {
            live: HashMap::new(),
            relisting: None,
            synced: false,
        }
    }
}

/// Identity and version of a raw object.
pub(super) trait Versioned {
    fn key(&self) -> ObjectKey;
    fn version(&self) -> Option<&str>;
}

impl<K: kube::Resource> Versioned for K {
    fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    fn version(&self) -> Option<&str> {
        self.meta().resource_version.as_deref()
    }
}

impl<M> StreamState<M> {
    /// Applies one watch event, and says what it changed.
    pub(super) fn apply<K: Versioned>(
        &mut self,
        event: Event<K>,
        convert: impl Fn(&K) -> Result<M, InvalidObject>,
    ) -> Applied<M> {
        match event {
            Event::Init => {
                self.relisting = Some(HashMap::new());
                Applied::Nothing
            }
            Event::InitApply(obj) => {
                let entry = self.entry(&obj, &convert);
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(obj.key(), entry);
                Applied::Nothing
            }
            Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.live = listed;
                }
                self.synced = true;
                Applied::Relisted
            }
            Event::Apply(obj) => {
                let entry = self.entry(&obj, &convert);
                let new = Some(entry.converted.clone());
                let old = self.live.insert(obj.key(), entry).map(|e| e.converted);
                Applied::Object { old, new }
            }
            Event::Delete(obj) => match self.live.remove(&obj.key()) {
                Some(old) => Applied::Object {
                    old: Some(old.converted),
                    new: None,
                },
                None => Applied::Nothing,
            },
        }
    }

    /// Reuses the conversion of an unchanged object (same `resourceVersion`).
    fn entry<K: Versioned>(
        &self,
        obj: &K,
        convert: &impl Fn(&K) -> Result<M, InvalidObject>,
    ) -> Entry<M> {
        let key = obj.key();
        let version = obj.version().map(str::to_string);
        let known = self
            .relisting
            .as_ref()
            .and_then(|r| r.get(&key))
            .or_else(|| self.live.get(&key));
        if let Some(known) = known
            && version.is_some()
            && known.version == version
        {
            return Entry {
                version: known.version.clone(),
                converted: known.converted.clone(),
            };
        }
        Entry {
            version,
            converted: convert(obj).map(Arc::new),
        }
    }

    pub(super) fn is_synced(&self) -> bool {
        self.synced
    }

    /// Adds this stream's objects to `out` and its rejects to `rejected`.
    pub(super) fn collect(&self, out: &mut Vec<Arc<M>>, rejected: &mut Vec<InvalidObject>) {
        for entry in self.live.values() {
            match &entry.converted {
                Ok(m) => out.push(m.clone()),
                Err(e) => rejected.push(e.clone()),
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }
}

/// The state of every stream of every kind, and what changed since the last rebuild.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    pub(super) services: Vec<StreamState<crate::model::Service>>,
    pub(super) slices: Vec<StreamState<EndpointSlice>>,
    pub(super) routes: Vec<StreamState<crate::model::GrpcRoute>>,
    pub(super) grants: Vec<StreamState<crate::model::ReferenceGrant>>,
    pub(super) tls_policies: Vec<StreamState<crate::model::BackendTlsPolicy>>,
    pub(super) ca_bundles: Vec<StreamState<crate::model::CaBundle>>,
    /// Something other than a valid EndpointSlice changed: the next rebuild is whole.
    full: bool,
    /// Services some of whose valid EndpointSlices changed.
    touched: HashSet<ObjectKey>,
    /// The valid EndpointSlices of each Service, so that an endpoint update reads only the
    /// Services it touches. Rebuilt by every whole rebuild.
    slices_by_service: HashMap<ObjectKey, HashMap<ObjectKey, Arc<EndpointSlice>>>,
}

/// What the next rebuild publishes.
#[derive(Debug)]
pub(super) enum Rebuild {
    /// Nothing changed.
    Nothing,
    /// The whole configuration.
    Full(Model),
    /// Only these Services' EndpointSlices changed.
    Endpoints(Vec<EndpointsChange>),
}

impl ClusterState {
    /// Notes a change of a non-EndpointSlice kind.
    pub(super) fn note<M>(&mut self, applied: &Applied<M>) -> bool {
        self.full |= applied.changed();
        applied.changed()
    }

    /// Notes a change of a kind whose conversion keeps little of the object (ConfigMaps:
    /// only `ca.crt`): an event that leaves the conversion equal changes nothing, so the
    /// ConfigMaps other controllers rewrite all the time cost no rebuild.
    pub(super) fn note_if_converted_changed<M: PartialEq>(&mut self, applied: &Applied<M>) -> bool {
        let changed = match applied {
            Applied::Object {
                old: Some(Ok(old)),
                new: Some(Ok(new)),
            } => old != new,
            other => other.changed(),
        };
        self.full |= changed;
        changed
    }

    /// Notes what an EndpointSlice event changed.
    pub(super) fn note_slice(&mut self, applied: Applied<EndpointSlice>) -> bool {
        match applied {
            Applied::Nothing => false,
            Applied::Relisted => {
                self.full = true;
                true
            }
            Applied::Object { old, new } => {
                for side in [&old, &new] {
                    match side {
                        // A rejected slice shows in the rejected objects: a whole rebuild.
                        Some(Err(_)) => self.full = true,
                        Some(Ok(slice)) => {
                            self.touched.insert(slice.service_key());
                        }
                        None => {}
                    }
                }
                if let Some(Ok(old)) = &old
                    && let Some(by_key) = self.slices_by_service.get_mut(&old.service_key())
                {
                    by_key.remove(&old.key);
                }
                if let Some(Ok(new)) = new {
                    self.slices_by_service
                        .entry(new.service_key())
                        .or_default()
                        .insert(new.key.clone(), new);
                }
                true
            }
        }
    }

    /// What to publish for the changes noted since the last call, and forgets them.
    pub(super) fn rebuild(&mut self) -> Rebuild {
        if std::mem::take(&mut self.full) {
            self.touched.clear();
            let model = self.model();
            self.slices_by_service.clear();
            for slice in &model.endpoint_slices {
                self.slices_by_service
                    .entry(slice.service_key())
                    .or_default()
                    .insert(slice.key.clone(), slice.clone());
            }
            return Rebuild::Full(model);
        }
        if self.touched.is_empty() {
            return Rebuild::Nothing;
        }
        let mut changes: Vec<EndpointsChange> = std::mem::take(&mut self.touched)
            .into_iter()
            .map(|service| {
                let mut slices: Vec<Arc<EndpointSlice>> = self
                    .slices_by_service
                    .get(&service)
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default();
                slices.sort_by(|a, b| a.key.cmp(&b.key));
                EndpointsChange { service, slices }
            })
            .collect();
        changes.sort_by(|a, b| a.service.cmp(&b.service));
        Rebuild::Endpoints(changes)
    }

    pub(super) fn synced(&self) -> bool {
        self.services.iter().all(StreamState::is_synced)
            && self.slices.iter().all(StreamState::is_synced)
            && self.routes.iter().all(StreamState::is_synced)
            && self.grants.iter().all(StreamState::is_synced)
            && self.tls_policies.iter().all(StreamState::is_synced)
            && self.ca_bundles.iter().all(StreamState::is_synced)
    }

    pub(super) fn model(&self) -> Model {
        let mut m = Model::default();
        for s in &self.services {
            s.collect(&mut m.services, &mut m.rejected);
        }
        for s in &self.slices {
            s.collect(&mut m.endpoint_slices, &mut m.rejected);
        }
        for s in &self.routes {
            s.collect(&mut m.routes, &mut m.rejected);
        }
        for s in &self.grants {
            s.collect(&mut m.grants, &mut m.rejected);
        }
        for s in &self.tls_policies {
            s.collect(&mut m.tls_policies, &mut m.rejected);
        }
        for s in &self.ca_bundles {
            s.collect(&mut m.ca_bundles, &mut m.rejected);
        }
        // A BackendTLSPolicy that did not decode but whose targets did still claims them.
        m.claim_for_rejected_policies();
        // Deterministic order, whatever the hash maps did.
        m.services.sort_by(|a, b| a.key.cmp(&b.key));
        m.endpoint_slices.sort_by(|a, b| a.key.cmp(&b.key));
        m.routes.sort_by(|a, b| a.key.cmp(&b.key));
        m.grants.sort_by(|a, b| a.key.cmp(&b.key));
        m.tls_policies.sort_by(|a, b| a.key.cmp(&b.key));
        m.ca_bundles.sort_by(|a, b| a.key.cmp(&b.key));
        m.rejected
            .sort_by(|a, b| (a.kind(), a.key()).cmp(&(b.kind(), b.key())));
        m
    }

    pub(super) fn object_count(&self) -> usize {
        self.services.iter().map(StreamState::len).sum::<usize>()
            + self.slices.iter().map(StreamState::len).sum::<usize>()
            + self.routes.iter().map(StreamState::len).sum::<usize>()
            + self.grants.iter().map(StreamState::len).sum::<usize>()
            + self
                .tls_policies
                .iter()
                .map(StreamState::len)
                .sum::<usize>()
            + self.ca_bundles.iter().map(StreamState::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::apis::meta::v1::ObjectMeta};

    use super::*;

    fn svc(name: &str, rv: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn convert(s: &Service) -> Result<crate::model::Service, InvalidObject> {
        crate::convert::service(s, "default")
    }

    fn names(state: &StreamState<crate::model::Service>) -> Vec<String> {
        let mut out = Vec::new();
        state.collect(&mut out, &mut Vec::new());
        let mut names: Vec<_> = out.iter().map(|s| s.key.name().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn relist_replaces_atomically_and_drops_what_vanished() {
        let mut state = StreamState::default();
        assert!(!state.is_synced());
        state.apply(Event::Init, convert);
        state.apply(Event::InitApply(svc("a", "1")), convert);
        state.apply(Event::InitApply(svc("b", "2")), convert);
        assert!(names(&state).is_empty(), "nothing visible before InitDone");
        assert!(state.apply(Event::<Service>::InitDone, convert).changed());
        assert!(state.is_synced());
        assert_eq!(names(&state), ["a", "b"]);

        // A relist (e.g. after 410 Gone): `b` was deleted while the watch was down.
        state.apply(Event::Init, convert);
        state.apply(Event::InitApply(svc("a", "1")), convert);
        state.apply(Event::InitApply(svc("c", "5")), convert);
        assert_eq!(
            names(&state),
            ["a", "b"],
            "the old view serves until the relist completes"
        );
        state.apply(Event::<Service>::InitDone, convert);
        assert_eq!(names(&state), ["a", "c"]);
    }

    #[test]
    fn live_events_and_conversion_reuse() {
        let mut state = StreamState::default();
        state.apply(Event::Init, convert);
        state.apply(Event::<Service>::InitDone, convert);
        assert!(state.apply(Event::Apply(svc("a", "1")), convert).changed());
        let first = state.live[&ObjectKey::new("ns", "a")]
            .converted
            .clone()
            .unwrap();
        state.apply(Event::Apply(svc("a", "1")), convert);
        let again = state.live[&ObjectKey::new("ns", "a")]
            .converted
            .clone()
            .unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "same resourceVersion: converted once"
        );
        state.apply(Event::Apply(svc("a", "2")), convert);
        let changed = state.live[&ObjectKey::new("ns", "a")]
            .converted
            .clone()
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(state.apply(Event::Delete(svc("a", "3")), convert).changed());
        assert!(names(&state).is_empty());
        assert!(
            !state.apply(Event::Delete(svc("a", "3")), convert).changed(),
            "deleting the absent changes nothing"
        );
    }

    #[test]
    fn a_config_map_change_that_keeps_its_ca_crt_causes_no_rebuild() {
        use k8s_openapi::api::core::v1::ConfigMap;

        let cm = |rv: &str, ca: &str, other: &str| ConfigMap {
            metadata: ObjectMeta {
                name: Some("ca".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            data: Some(
                [
                    ("ca.crt".to_string(), ca.to_string()),
                    ("other".to_string(), other.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let convert = |c: &ConfigMap| crate::convert::ca_bundle(c, "default");
        let mut cluster = ClusterState::default();
        let mut state = StreamState::default();
        state.apply(Event::Init, convert);
        state.apply(Event::<ConfigMap>::InitDone, convert);
        let added = state.apply(Event::Apply(cm("1", "A", "x")), convert);
        assert!(cluster.note_if_converted_changed(&added));
        assert!(matches!(cluster.rebuild(), Rebuild::Full(_)));
        let other_key = state.apply(Event::Apply(cm("2", "A", "y")), convert);
        assert!(
            !cluster.note_if_converted_changed(&other_key),
            "only another key changed"
        );
        assert!(matches!(cluster.rebuild(), Rebuild::Nothing));
        let new_ca = state.apply(Event::Apply(cm("3", "B", "y")), convert);
        assert!(cluster.note_if_converted_changed(&new_ca));
        assert!(matches!(cluster.rebuild(), Rebuild::Full(_)));
    }
}
