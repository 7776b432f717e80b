//! [`Snapshot`]: what calls read. The routing tables of one configuration, with every
//! backend they name bound to that backend's runtime state.

use std::sync::Arc;

use crate::{
    backend::Backend,
    route::table::{BackendSlot, Table},
    series::SeriesKey,
};

/// One configuration, ready to route: immutable, swapped whole. An endpoint change does not
/// replace it (it updates the bound [`Backend`] in place); a route change does.
///
/// Two sources may feed it: the Kubernetes part (GRPCRoutes, Services) and the xDS part
/// (listeners, clusters). An update of one keeps the other as it is.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    /// The GRPCRoute table.
    pub(crate) table: Arc<Table>,
    /// The backend of each of the table's slots, by slot id.
    pub(crate) backends: Arc<[Arc<Backend>]>,
    /// Whether the Kubernetes part has had its first configuration (calls to Services wait
    /// for it; a mesh fed only by xDS never has one).
    pub(crate) kube_synced: bool,
    /// The xDS listener table.
    #[cfg(feature = "xds")]
    pub(crate) xds: Arc<crate::route::xds::XdsTable>,
    /// The backend of each of the xDS table's cluster slots.
    #[cfg(feature = "xds")]
    pub(crate) xds_backends: Arc<[Arc<Backend>]>,
}

impl Snapshot {
    /// Whether calls can still be counted in the series `key` under this configuration.
    pub(crate) fn reaches(&self, key: &SeriesKey) -> bool {
        match key {
            SeriesKey::Service(k) => self.table.reaches(k),
            #[cfg(feature = "xds")]
            SeriesKey::Listener(k) => self.xds.reaches(k),
            #[cfg(not(feature = "xds"))]
            SeriesKey::Listener(_) => false,
        }
    }

    /// Every backend the configuration names (GRPCRoute and xDS).
    pub(crate) fn all_backends(&self) -> Vec<&Arc<Backend>> {
        let xds: &[Arc<Backend>] = {
            #[cfg(feature = "xds")]
            {
                &self.xds_backends
            }
            #[cfg(not(feature = "xds"))]
            {
                &[]
            }
        };
        self.backends.iter().chain(xds).collect()
    }

    /// The backend a slot of the table names. Always `Some` for the table's own slots: the
    /// mesh binds one backend per slot when it builds the snapshot.
    pub(crate) fn backend(&self, slot: &BackendSlot) -> Option<&Arc<Backend>> {
        self.backends.get(slot.id)
    }
}
