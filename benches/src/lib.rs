//! Shared pieces of the grpcroute-client benchmarks (see `benches/README.md`):
//!
//! - [`fixtures`]: the routing configurations, generated in code with
//!   [`grpcroute_client::build`], that the decision benchmark (`benches/decision.rs`) and the
//!   loopback harness (`benches/loopback.rs`) run against;
//! - [`stats`]: percentiles and medians;
//! - [`machine`]: what the machine is and how busy it was, printed with every result so a
//!   figure can be read against the conditions it was taken in.

pub mod fixtures;
pub mod machine;
pub mod stats;
