//! xDS routing: the compiled listener table and the per-call decision over it.

pub(crate) mod matching;
