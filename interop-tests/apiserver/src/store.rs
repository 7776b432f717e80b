//! The object store: objects, the global resource version, the event history watches
//! replay from, and the live event broadcast.
//!
//! Every mutation takes one `std::sync::Mutex` (never held across an await), assigns the
//! next resource version, appends to the history and broadcasts while still holding the
//! lock. A watch subscribes under the same lock, so its replayed history and its live
//! events neither overlap nor leave a gap.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::meta::{meta_str, metadata_mut, now_rfc3339, random_u64, resource_version, uid};
use crate::resources::{ReferenceGrantVersions, Resource};
use crate::rules::{self, Update, check_name};
use crate::selector::ObjectFilter;

/// Capacity of the live-event broadcast; a watch that falls this far behind is ended and
/// its client re-watches from its last resource version (replayed from the history).
const BROADCAST_CAPACITY: usize = 16 * 1024;

/// (resource, namespace or "" for cluster-scoped, name). Ordered, so lists and
/// pagination are deterministic.
type Key = (Resource, String, String);

/// The kind of a stored change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as kept in the history and broadcast to watches.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) rv: u64,
    pub(crate) kind: EventType,
    pub(crate) resource: Resource,
    /// The new state; for a deletion, the last state with the deletion's resource version.
    pub(crate) object: Value,
    /// The state before the change (to turn a MODIFIED into ADDED/DELETED for a watch
    /// whose selector the object starts or stops matching).
    pub(crate) prev: Option<Value>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The main resource: `.status` is ignored for kinds with a status subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
    /// Direct writes from test code: everything, without resourceVersion checks.
    Whole,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchFrom {
    /// Synthetic ADDED events for the current state, then live events.
    Now,
    /// Replay history after this resource version, then live events.
    Rv(u64),
}

/// What a new watch gets: its initial events, and its subscriptions.
#[derive(Debug)]
pub(crate) struct WatchStart {
    pub(crate) initial: Vec<Arc<StoredEvent>>,
    pub(crate) events: broadcast::Receiver<Arc<StoredEvent>>,
    pub(crate) kill: watch::Receiver<u64>,
    /// The resource version the initial events bring the client to.
    pub(crate) rv: u64,
}

/// One page of a list.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub(crate) items: Vec<Value>,
    pub(crate) rv: u64,
    /// (namespace, name) of the last item, when more items follow.
    pub(crate) last_key: Option<(String, String)>,
    pub(crate) remaining: usize,
}

#[derive(Debug)]
struct Inner {
    rv: u64,
    /// A watch may start from any rv >= floor: every event after it is in `history`.
    floor: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<StoredEvent>>,
    uid_seq: u64,
}

/// The shared object store.
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    /// Bumped to end every open watch ("drop watches", compaction, restart).
    kill: watch::Sender<u64>,
    rg: ReferenceGrantVersions,
    history_limit: usize,
    uid_seed: u64,
}

fn key(resource: Resource, namespace: Option<&str>, name: &str) -> Key {
    let ns = if resource.namespaced() {
        namespace.unwrap_or("")
    } else {
        ""
    };
    (resource, ns.to_owned(), name.to_owned())
}

impl Store {
    pub(crate) fn new(rg: ReferenceGrantVersions, history_limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rv: 0,
                floor: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                uid_seq: 0,
            }),
            events: broadcast::channel(BROADCAST_CAPACITY).0,
            kill: watch::channel(0).0,
            rg,
            history_limit: history_limit.max(1),
            uid_seed: random_u64(),
        }
    }

    pub(crate) fn reference_grant_versions(&self) -> ReferenceGrantVersions {
        self.rg
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every mutation completes
        // its bookkeeping before anything that could panic), so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The latest resource version.
    pub(crate) fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub(crate) fn get(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.lock()
            .objects
            .get(&key(resource, namespace, name))
            .cloned()
    }

    /// Objects matching `filter`, ordered by (namespace, name), starting after `after`.
    pub(crate) fn list(
        &self,
        filter: &ObjectFilter,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
    ) -> ListPage {
        let inner = self.lock();
        let start = (filter.resource, String::new(), String::new());
        let mut matching = inner
            .objects
            .range(start..)
            .take_while(|(k, _)| k.0 == filter.resource)
            .filter(|(k, _)| {
                after.is_none_or(|(ns, name)| (k.1.as_str(), k.2.as_str()) > (ns, name))
            })
            .filter(|(_, v)| filter.matches(v));
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let items: Vec<Value> = matching
            .by_ref()
            .take(limit)
            .map(|(_, v)| v.clone())
            .collect();
        let remaining = matching.count();
        let last_key = (remaining > 0).then(|| items.last()).flatten().map(|v| {
            let ns = meta_str(v, "namespace").unwrap_or("").to_owned();
            (ns, meta_str(v, "name").unwrap_or("").to_owned())
        });
        ListPage {
            items,
            rv: inner.rv,
            last_key,
            remaining,
        }
    }

    /// Whether a list continuation from `rv` can still be served.
    pub(crate) fn check_not_compacted(&self, rv: u64) -> Result<(), ApiError> {
        let floor = self.lock().floor;
        if rv < floor {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        Ok(())
    }

    /// Starts a watch: its initial events and subscriptions, atomically.
    pub(crate) fn watch(
        &self,
        resource: Resource,
        from: WatchFrom,
    ) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let initial = match from {
            WatchFrom::Rv(rv) if rv < inner.floor => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    inner.floor
                )));
            }
            WatchFrom::Rv(rv) => inner
                .history
                .iter()
                .filter(|e| e.rv > rv && e.resource == resource)
                .cloned()
                .collect(),
            WatchFrom::Now => inner
                .objects
                .iter()
                .filter(|(k, _)| k.0 == resource)
                .map(|(_, v)| {
                    Arc::new(StoredEvent {
                        rv: resource_version(v),
                        kind: EventType::Added,
                        resource,
                        object: v.clone(),
                        prev: None,
                    })
                })
                .collect(),
        };
        Ok(WatchStart {
            initial,
            events: self.events.subscribe(),
            kill: self.kill.subscribe(),
            rv: inner.rv,
        })
    }

    /// The resource version a watch may announce in a BOOKMARK now: the global one,
    /// but only when the watch has consumed every event already broadcast (otherwise a
    /// client resuming from the bookmark would skip them) and is not being killed (a
    /// bookmark sent after a compaction would move the client past the floor).
    pub(crate) fn bookmark_rv(
        &self,
        events: &broadcast::Receiver<Arc<StoredEvent>>,
        kill: &watch::Receiver<u64>,
    ) -> Option<u64> {
        let inner = self.lock();
        let killed = kill.has_changed().unwrap_or(true);
        (!killed && events.is_empty()).then_some(inner.rv)
    }

    /// Ends every open watch (clients re-watch from their last resource version).
    pub(crate) fn drop_watches(&self) {
        let _inner = self.lock();
        self.kill.send_modify(|epoch| *epoch += 1);
    }

    /// Forgets the history and moves the floor past every resource version handed out so
    /// far, then ends open watches: their clients' next watch gets the 410 `Expired`
    /// event and relists. Lists keep working (they report the new, valid version).
    pub(crate) fn compact(&self) {
        let mut inner = self.lock();
        inner.rv += 1;
        inner.floor = inner.rv;
        inner.history.clear();
        self.kill.send_modify(|epoch| *epoch += 1);
    }

    /// Creates an object. `namespace` is the URL's (or, for direct writes, `None` to take
    /// it from the object, defaulting to `default`).
    pub(crate) fn create(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        object: Value,
        target: Target,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        self.create_locked(&mut inner, resource, namespace, object, target)
    }

    /// Read-modify-write of one object: `op` computes the desired object from the current
    /// one (`None` if absent). Creates it if absent and `allow_create`. Returns the stored
    /// object and whether it was created.
    pub(crate) fn write(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        target: Target,
        allow_create: bool,
        op: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<(Value, bool), ApiError> {
        let mut inner = self.lock();
        let k = key(resource, namespace, name);
        let old = inner.objects.get(&k).cloned();
        let mut desired = op(old.as_ref())?;
        // Like the real server, a name mismatch is a 400 before the object is looked at.
        check_name(resource, &desired, name)?;
        match old {
            Some(old) => self
                .update_locked(&mut inner, resource, k, old, desired, target)
                .map(|v| (v, false)),
            None if allow_create => {
                if let Some(meta) = metadata_mut(&mut desired) {
                    meta.entry("name").or_insert_with(|| json!(name));
                }
                let ns = namespace
                    .or_else(|| meta_str(&desired, "namespace"))
                    .map(str::to_owned);
                self.create_locked(&mut inner, resource, ns.as_deref(), desired, target)
                    .map(|v| (v, true))
            }
            None => Err(ApiError::not_found(resource, name)),
        }
    }

    /// Deletes an object (or, if it has finalizers, marks it with a deletionTimestamp).
    /// `preconditions` are the DeleteOptions' (uid, resourceVersion).
    pub(crate) fn delete(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        preconditions: (Option<&str>, Option<&str>),
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let k = key(resource, namespace, name);
        let old = inner
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        for (field, expected) in [
            ("uid", preconditions.0),
            ("resourceVersion", preconditions.1),
        ] {
            let actual = meta_str(&old, field).unwrap_or("");
            if let Some(expected) = expected.filter(|e| *e != actual) {
                return Err(ApiError::conflict(
                    resource,
                    name,
                    &format!(
                        "Precondition failed: {field} in precondition: {expected}, {field} in object meta: {actual}"
                    ),
                ));
            }
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if meta_str(&old, "deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut marked = old.clone();
            if let Some(meta) = metadata_mut(&mut marked) {
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            return Ok(self.commit(
                &mut inner,
                EventType::Modified,
                resource,
                k,
                marked,
                Some(old),
            ));
        }
        Ok(self.commit(
            &mut inner,
            EventType::Deleted,
            resource,
            k,
            old.clone(),
            Some(old),
        ))
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        resource: Resource,
        namespace: Option<&str>,
        object: Value,
        target: Target,
    ) -> Result<Value, ApiError> {
        let mut prepared = rules::prepare_create(resource, self.rg, namespace, object, target)?;
        let k = key(resource, prepared.namespace.as_deref(), &prepared.name);
        if inner.objects.contains_key(&k) {
            return Err(ApiError::already_exists(resource, &prepared.name));
        }
        inner.uid_seq += 1;
        if let Some(meta) = metadata_mut(&mut prepared.object) {
            meta.insert("uid".into(), json!(uid(self.uid_seed, inner.uid_seq)));
        }
        Ok(self.commit(inner, EventType::Added, resource, k, prepared.object, None))
    }

    fn update_locked(
        &self,
        inner: &mut Inner,
        resource: Resource,
        k: Key,
        old: Value,
        desired: Value,
        target: Target,
    ) -> Result<Value, ApiError> {
        match rules::prepare_update(resource, self.rg, (&k.1, &k.2), &old, desired, target)? {
            Update::Unchanged => Ok(old),
            Update::Modified(new) => {
                Ok(self.commit(inner, EventType::Modified, resource, k, new, Some(old)))
            }
            Update::Finalized(new) => {
                Ok(self.commit(inner, EventType::Deleted, resource, k, new, Some(old)))
            }
        }
    }

    /// Assigns the next resource version, applies the change, records and broadcasts it.
    fn commit(
        &self,
        inner: &mut Inner,
        kind: EventType,
        resource: Resource,
        k: Key,
        mut object: Value,
        prev: Option<Value>,
    ) -> Value {
        inner.rv += 1;
        if let Some(meta) = metadata_mut(&mut object) {
            meta.insert("resourceVersion".into(), json!(inner.rv.to_string()));
        }
        if kind == EventType::Deleted {
            inner.objects.remove(&k);
        } else {
            inner.objects.insert(k, object.clone());
        }
        let event = Arc::new(StoredEvent {
            rv: inner.rv,
            kind,
            resource,
            object: object.clone(),
            prev,
        });
        inner.history.push_back(Arc::clone(&event));
        while inner.history.len() > self.history_limit {
            if let Some(dropped) = inner.history.pop_front() {
                inner.floor = dropped.rv;
            }
        }
        // An error only means no watch is open.
        let _ = self.events.send(event);
        object
    }
}
