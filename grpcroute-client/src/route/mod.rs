//! Routing as pure data: the compiled tables and the per-call decision over them. Nothing
//! here does I/O or holds the runtime state of a backend; the decision names a backend and
//! the dispatcher binds it.

pub(crate) mod backend_tls;
pub(crate) mod decide;
pub(crate) mod table;
#[cfg(feature = "xds")]
pub(crate) mod xds;

use std::fmt;

use crate::model::ObjectKey;

/// What identifies a backend across configuration changes: the key under which its
/// runtime state (endpoints, connections, load) is kept while tables name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum BackendKey {
    /// A port of a Kubernetes Service.
    Service {
        /// The Service.
        service: ObjectKey,
        /// Its port.
        port: u16,
    },
    /// An xDS cluster.
    #[cfg_attr(not(feature = "xds"), allow(dead_code))]
    Cluster(std::sync::Arc<str>),
}

impl fmt::Display for BackendKey {
    /// As error messages name it: `namespace/name:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service { service, port } => write!(f, "{service}:{port}"),
            Self::Cluster(name) => write!(f, "cluster {name}"),
        }
    }
}
