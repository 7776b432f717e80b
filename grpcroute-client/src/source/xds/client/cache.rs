//! The resource cache: per (type, name), the last good copy and the CSDS state (A40, A88).

use std::{collections::BTreeMap, time::SystemTime};

use tokio::time::Instant;

use super::super::resource::{Resource, ResourceType};

/// CSDS `ClientResourceStatus` (A40), as far as this client produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceStatus {
    /// Subscribed, nothing received yet.
    Requested,
    /// The server does not have it: the does-not-exist timer fired, or the server
    /// deleted it (LDS/CDS), in which case a cached copy may still be in use (A88).
    DoesNotExist,
    /// The last update was valid.
    Acked,
    /// The last update was invalid; a previous good copy, if any, is still used.
    Nacked,
}

impl ResourceStatus {
    /// The CSDS name (`REQUESTED`, `DOES_NOT_EXIST`, `ACKED`, `NACKED`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            ResourceStatus::Requested => "REQUESTED",
            ResourceStatus::DoesNotExist => "DOES_NOT_EXIST",
            ResourceStatus::Acked => "ACKED",
            ResourceStatus::Nacked => "NACKED",
        }
    }
}

/// A rejected update (A40 `UpdateFailureState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedUpdate {
    /// The version of the rejected response.
    pub(crate) version: String,
    /// Why it was rejected.
    pub(crate) error: String,
    /// When.
    pub(crate) time: SystemTime,
}

/// One cached resource.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    /// CSDS state.
    pub(crate) status: ResourceStatus,
    /// The last good copy (kept through NACKs, deletions and connectivity errors: A88).
    pub(crate) resource: Option<Resource>,
    /// The version of `resource`.
    pub(crate) version: String,
    /// When `resource` was last updated.
    pub(crate) update_time: Option<SystemTime>,
    /// The last rejected update, cleared by the next valid one.
    pub(crate) failed: Option<FailedUpdate>,
    /// An ambient error: the control plane is unreachable, or deleted a resource we keep.
    pub(crate) ambient_error: Option<String>,
    /// A57 does-not-exist deadline, armed only while connected.
    pub(crate) deadline: Option<Instant>,
}

impl CacheEntry {
    fn requested() -> Self {
        Self {
            status: ResourceStatus::Requested,
            resource: None,
            version: String::new(),
            update_time: None,
            failed: None,
            ambient_error: None,
            deadline: None,
        }
    }
}

/// Per-type maps of cache entries for the subscribed names.
#[derive(Debug, Default)]
pub(crate) struct ResourceCache {
    types: [BTreeMap<String, CacheEntry>; 4],
}

/// Lookup result for the dependency manager.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// Usable (possibly an older, kept copy).
    Ready(&'a Resource),
    /// Not known yet.
    Pending,
    /// Failed, with no usable copy.
    Failed(LookupFailure, String),
}

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupFailure {
    /// Does not exist.
    DoesNotExist,
    /// Rejected, and never had a good copy.
    Nacked,
    /// The control plane could not be reached before it arrived.
    Unreachable,
}

/// What the dependency manager reads.
pub(crate) trait ResourceLookup {
    /// The state of (type, name).
    fn lookup(&self, ty: ResourceType, name: &str) -> Lookup<'_>;
}

impl ResourceLookup for ResourceCache {
    fn lookup(&self, ty: ResourceType, name: &str) -> Lookup<'_> {
        let Some(e) = self.get(ty, name) else {
            return Lookup::Pending;
        };
        if let Some(r) = &e.resource {
            return Lookup::Ready(r);
        }
        match e.status {
            ResourceStatus::DoesNotExist => Lookup::Failed(
                LookupFailure::DoesNotExist,
                format!("{ty} resource {name} does not exist"),
            ),
            ResourceStatus::Nacked => Lookup::Failed(
                LookupFailure::Nacked,
                format!(
                    "{ty} resource {name} is invalid: {}",
                    e.failed.as_ref().map_or("", |f| f.error.as_str())
                ),
            ),
            ResourceStatus::Requested | ResourceStatus::Acked => match &e.ambient_error {
                Some(err) => Lookup::Failed(
                    LookupFailure::Unreachable,
                    format!("{ty} resource {name}: {err}"),
                ),
                None => Lookup::Pending,
            },
        }
    }
}

impl ResourceCache {
    /// The entry for (type, name).
    pub(crate) fn get(&self, ty: ResourceType, name: &str) -> Option<&CacheEntry> {
        self.types[ty.index()].get(name)
    }

    /// The mutable entry for (type, name).
    pub(crate) fn get_mut(&mut self, ty: ResourceType, name: &str) -> Option<&mut CacheEntry> {
        self.types[ty.index()].get_mut(name)
    }

    /// Every entry of a type.
    pub(crate) fn entries(&self, ty: ResourceType) -> &BTreeMap<String, CacheEntry> {
        &self.types[ty.index()]
    }

    /// Every entry of a type, mutably.
    pub(crate) fn entries_mut(&mut self, ty: ResourceType) -> &mut BTreeMap<String, CacheEntry> {
        &mut self.types[ty.index()]
    }

    /// Every entry of every type, mutably.
    pub(crate) fn all_mut(&mut self) -> impl Iterator<Item = &mut CacheEntry> {
        self.types.iter_mut().flat_map(|m| m.values_mut())
    }

    /// Adds a REQUESTED entry (no-op if present). Returns whether it was added.
    pub(crate) fn subscribe(&mut self, ty: ResourceType, name: &str) -> bool {
        let map = &mut self.types[ty.index()];
        if map.contains_key(name) {
            return false;
        }
        map.insert(name.to_owned(), CacheEntry::requested());
        true
    }

    /// Drops an entry (A28: the cache entry goes with the last watcher).
    pub(crate) fn unsubscribe(&mut self, ty: ResourceType, name: &str) {
        self.types[ty.index()].remove(name);
    }

    /// Records a valid update. An update equal to the cached copy keeps the old `Arc`, so
    /// that consumers comparing by pointer see no change.
    pub(crate) fn accept(
        &mut self,
        name: &str,
        resource: Resource,
        version: &str,
        now: SystemTime,
    ) {
        let ty = resource.resource_type();
        let Some(e) = self.get_mut(ty, name) else {
            return;
        };
        if e.resource.as_ref() != Some(&resource) {
            e.resource = Some(resource);
        }
        e.status = ResourceStatus::Acked;
        e.version = version.to_owned();
        e.update_time = Some(now);
        e.failed = None;
        e.ambient_error = None;
        e.deadline = None;
    }

    /// Records an invalid update: NACKED, keeping the last good copy unless
    /// `fail_on_data_errors` (A88).
    pub(crate) fn reject(
        &mut self,
        ty: ResourceType,
        name: &str,
        version: &str,
        error: String,
        now: SystemTime,
        fail_on_data_errors: bool,
    ) {
        let Some(e) = self.get_mut(ty, name) else {
            return;
        };
        e.status = ResourceStatus::Nacked;
        if fail_on_data_errors {
            e.resource = None;
        }
        e.failed = Some(FailedUpdate {
            version: version.to_owned(),
            error,
            time: now,
        });
        e.deadline = None;
    }

    /// The CSDS-style dump, in (type, name) order.
    pub(crate) fn dump(&self) -> Vec<ResourceDump> {
        let mut out = Vec::new();
        for ty in ResourceType::ALL {
            for (name, e) in self.entries(ty) {
                out.push(ResourceDump {
                    resource_type: ty,
                    name: name.clone(),
                    // The version of the copy in use: none once a data error dropped it
                    // (`fail_on_data_errors`), as C-core's CSDS shows it.
                    version: if e.resource.is_some() {
                        e.version.clone()
                    } else {
                        String::new()
                    },
                    state: e.status,
                    has_cached_copy: e.resource.is_some(),
                    last_error: e
                        .failed
                        .as_ref()
                        .map(|f| f.error.clone())
                        .or_else(|| e.ambient_error.clone()),
                    rejected_version: e.failed.as_ref().map(|f| f.version.clone()),
                    rejected_time: e.failed.as_ref().map(|f| f.time),
                    update_time: e.update_time,
                });
            }
        }
        out
    }
}

/// One resource as CSDS (A40) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceDump {
    /// Listener, RouteConfiguration, Cluster or ClusterLoadAssignment.
    pub(crate) resource_type: ResourceType,
    /// The resource name.
    pub(crate) name: String,
    /// The version of the copy in use (empty before the first).
    pub(crate) version: String,
    /// REQUESTED / DOES_NOT_EXIST / ACKED / NACKED.
    pub(crate) state: ResourceStatus,
    /// Whether a good copy is in use (a NACKED resource may still have one).
    pub(crate) has_cached_copy: bool,
    /// The last rejection's reason, else the ambient error (unreachable, deleted).
    pub(crate) last_error: Option<String>,
    /// The version of the last rejected update.
    pub(crate) rejected_version: Option<String>,
    /// When it was rejected.
    pub(crate) rejected_time: Option<SystemTime>,
    /// When the copy in use arrived.
    pub(crate) update_time: Option<SystemTime>,
}
