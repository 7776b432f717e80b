//! Integration tests of the `grpcroute` binary: every subcommand in both output forms,
//! every exit code, bad arguments and manifests, and real calls against `grpcroute echo`
//! servers started by the tests (and killed when each test ends).

mod call;
mod check;
mod echo;
mod explain;
mod support;
mod usage;
