//! Integration tests of the `grpcroute` binary: every subcommand in both output forms,
//! every exit code, bad arguments and manifests, real calls against `grpcroute echo`
//! servers started by the tests (and killed when each test ends), and `status-controller`
//! against the in-process test Kubernetes API server, its alerts evaluated by a real
//! Prometheus.

mod alerts;
mod call;
mod check;
mod echo;
mod echo_tls;
mod explain;
mod status_controller;
mod support;
mod usage;
mod xds;
