//! Shared pieces of the grpcroute-client benchmarks (see `benches/README.md`):
//!
//! - [`fixtures`]: the routing configurations, generated in code with
//!   [`grpcroute_client::build`], that the decision benchmark (`benches/decision.rs`) and the
//!   loopback harness (`benches/loopback.rs`) run against;
//! - [`stats`]: percentiles and medians;
//! - [`machine`]: what the machine is and how busy it was, printed with every result so a
//!   figure can be read against the conditions it was taken in;
//! - [`cpu`]: CPU time and memory of processes and threads, from `/proc`;
//! - [`harness`]: knobs from the environment, and the quick mode CI runs;
//! - [`echo_child`]: the echo servers in a child process (their CPU apart from the
//!   client's);
//! - [`proxies`]: nginx and HAProxy as one proxy hop, configured and run by the harness;
//! - [`rawh2`]: the floor, a gRPC call on a bare hyper HTTP/2 connection.

pub mod cpu;
pub mod echo_child;
pub mod fixtures;
pub mod harness;
pub mod machine;
pub mod proxies;
pub mod rawh2;
pub mod stats;
