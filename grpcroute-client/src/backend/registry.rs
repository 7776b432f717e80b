//! [`Registry`]: every live backend by key, so that successive routing tables share them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use super::{Backend, BackendKey};
use crate::transport::{Pool, TransportConfig};

/// The backends some routing table names, and the endpoint pool they draw from.
///
/// Only configuration updates take its lock; calls reach backends through the table that
/// names them. A backend no table names any more is dropped (and leaves its endpoints) when
/// the last table and call holding it are gone.
#[derive(Debug)]
pub(crate) struct Registry {
    pool: Arc<Pool>,
    backends: Mutex<HashMap<BackendKey, Weak<Backend>>>,
}

impl Registry {
    pub(crate) fn new(transport: TransportConfig) -> Self {
        Self {
            pool: Arc::new(Pool::new(transport)),
            backends: Mutex::new(HashMap::new()),
        }
    }

    /// The live backend for `key`, or a new one without endpoints (`true` when new).
    pub(crate) fn get_or_create(&self, key: &BackendKey) -> (Arc<Backend>, bool) {
        let mut map = self.lock();
        if let Some(existing) = map.get(key).and_then(Weak::upgrade) {
            return (existing, false);
        }
        let backend = Arc::new(Backend::new(key, self.pool.clone()));
        map.insert(key.clone(), Arc::downgrade(&backend));
        (backend, true)
    }

    /// The live backend for `key`, if a table still names it.
    pub(crate) fn get(&self, key: &BackendKey) -> Option<Arc<Backend>> {
        self.lock().get(key).and_then(Weak::upgrade)
    }

    /// Forgets backends that no table or call holds any more.
    pub(crate) fn prune(&self) {
        self.lock().retain(|_, b| b.strong_count() > 0);
    }

    /// Endpoints created and retired since the registry began.
    pub(crate) fn endpoint_churn(&self) -> (u64, u64) {
        self.pool.churn()
    }

    /// How many endpoint addresses some backend lists.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.pool.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BackendKey, Weak<Backend>>> {
        // Every operation leaves the map valid, even one interrupted by a panic.
        self.backends.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectKey;

    #[test]
    fn a_key_maps_to_one_backend_while_it_is_held() {
        let registry = Registry::new(TransportConfig::default());
        let key = BackendKey::Service {
            service: ObjectKey::new("ns", "a"),
            port: 80,
        };
        let (a, new) = registry.get_or_create(&key);
        assert!(new);
        let (b, new) = registry.get_or_create(&key);
        assert!(!new);
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert!(registry.get(&key).is_none(), "nobody holds it any more");
        registry.prune();
        assert!(registry.lock().is_empty());
        assert!(registry.get_or_create(&key).1, "a new one after that");
    }
}
