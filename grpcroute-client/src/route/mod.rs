//! Routing as pure data: the compiled tables and the per-call decision over them. Nothing
//! here does I/O or holds the runtime state of a backend; the decision names a backend and
//! the dispatcher binds it.

pub(crate) mod decide;
pub(crate) mod table;
