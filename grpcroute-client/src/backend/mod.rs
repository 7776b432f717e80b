//! The runtime state of backends: their endpoint sets, the balancer that picks among them,
//! and (per endpoint) load and health. Backends survive configuration changes.

pub(crate) mod balance;
