//! [`Snapshot`]: what calls read. The routing tables of one configuration, with every
//! backend they name bound to that backend's runtime state.

use std::sync::Arc;

use crate::{
    backend::Backend,
    route::table::{BackendSlot, Table},
};

/// One configuration, ready to route: immutable, swapped whole. An endpoint change does not
/// replace it (it updates the bound [`Backend`] in place); a route change does.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The GRPCRoute table.
    pub(crate) table: Arc<Table>,
    /// The backend of each of the table's slots, by slot id.
    pub(crate) backends: Box<[Arc<Backend>]>,
}

impl Snapshot {
    /// The backend a slot of the table names. Always `Some` for the table's own slots: the
    /// mesh binds one backend per slot when it builds the snapshot.
    pub(crate) fn backend(&self, slot: &BackendSlot) -> Option<&Arc<Backend>> {
        self.backends.get(slot.id)
    }
}
