//! The settings of a validated Cluster that the data plane applies.

use std::time::Duration;

/// The endpoint-picking policy within a locality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LbPolicyConfig {
    /// `round_robin`.
    RoundRobin,
    /// `least_request` (A48): `choice_count` in [2, 10].
    LeastRequest {
        /// Candidates sampled per pick.
        choice_count: u32,
    },
}

/// A50 outlier detection settings, with gRPC's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutlierDetectionConfig {
    /// How often ejection is evaluated (default 10 s).
    pub(crate) interval: Duration,
    /// Base ejection time (default 30 s).
    pub(crate) base_ejection_time: Duration,
    /// Maximum ejection time (default 300 s; the data plane uses max(base, this)).
    pub(crate) max_ejection_time: Duration,
    /// Percentage of endpoints that may be ejected (default 10, at least one is).
    pub(crate) max_ejection_percent: u32,
    /// Success-rate ejection: only when `enforcing_success_rate` is set and non-zero (as
    /// C-core reads A50; unset means no success-rate ejection).
    pub(crate) success_rate: Option<SuccessRateEjection>,
    /// Failure-percentage ejection: only when `enforcing_failure_percentage` is set and
    /// non-zero.
    pub(crate) failure_percentage: Option<FailurePercentageEjection>,
}

/// A50 success-rate ejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SuccessRateEjection {
    /// Standard deviation factor × 1000 (default 1900).
    pub(crate) stdev_factor: u32,
    /// Percentage enforced (default 100).
    pub(crate) enforcement_percentage: u32,
    /// Minimum endpoints with enough volume (default 5).
    pub(crate) minimum_hosts: u32,
    /// Minimum calls per interval for an endpoint to count (default 100).
    pub(crate) request_volume: u32,
}

/// A50 failure-percentage ejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailurePercentageEjection {
    /// Failure percentage that ejects (default 85).
    pub(crate) threshold: u32,
    /// Percentage enforced (set, non-zero).
    pub(crate) enforcement_percentage: u32,
    /// Minimum endpoints (default 5).
    pub(crate) minimum_hosts: u32,
    /// Minimum calls per interval (default 50).
    pub(crate) request_volume: u32,
}

/// A cluster's TLS (gRFC A29): CDS `transport_socket` with an `UpstreamTlsContext` whose
/// certificates come from the bootstrap's `certificate_providers` instances.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamTls {
    /// The instance whose CA certificates verify the server's chain.
    pub(crate) ca_instance: String,
    /// The instance whose certificate and key the client presents (mutual TLS), if any.
    pub(crate) identity_instance: Option<String>,
    /// `match_subject_alt_names`: a SAN of the server's leaf must match one; empty: only
    /// the chain is verified.
    pub(crate) san_matchers: Vec<super::route::StringMatch>,
}
