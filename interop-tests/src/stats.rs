//! Counting where calls went, and checking weighted shares with bounds wide enough never to
//! flake: at least four binomial standard deviations.

use std::{collections::BTreeMap, future::Future};

use tonic::{Code, Response, Status};

use crate::calls::backend;

/// Where a series of calls went.
#[derive(Debug, Default)]
pub struct Tally {
    /// Successful calls by answering backend (pod name; `?` if the response named none).
    pub backends: BTreeMap<String, usize>,
    /// Failed calls.
    pub errors: Vec<Status>,
}

impl Tally {
    /// Records one call.
    pub fn record<T>(&mut self, result: Result<Response<T>, Status>) {
        match result {
            Ok(r) => {
                let name = backend(r.metadata()).unwrap_or_else(|| "?".into());
                *self.backends.entry(name).or_default() += 1;
            }
            Err(status) => self.errors.push(status),
        }
    }

    /// Calls recorded.
    pub fn total(&self) -> usize {
        self.ok() + self.errors.len()
    }

    /// Successful calls.
    pub fn ok(&self) -> usize {
        self.backends.values().sum()
    }

    /// Successful calls answered by backends whose name starts with `prefix` (e.g.
    /// `echo-v1` for pods `echo-v1-0`, `echo-v1-1`).
    pub fn by_prefix(&self, prefix: &str) -> usize {
        self.backends
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Failed calls with `code`.
    pub fn errors_with(&self, code: Code) -> usize {
        self.errors.iter().filter(|s| s.code() == code).count()
    }

    /// Panics unless every call succeeded.
    #[track_caller]
    pub fn assert_no_errors(&self) {
        assert!(
            self.errors.is_empty(),
            "{} of {} calls failed; first: {:?}",
            self.errors.len(),
            self.total(),
            self.errors.first()
        );
    }
}

/// Makes `n` calls one after the other and tallies them. `call` gets the call's index.
pub async fn tally<T, F, Fut>(n: usize, mut call: F) -> Tally
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let mut t = Tally::default();
    for i in 0..n {
        t.record(call(i).await);
    }
    t
}

/// The allowed deviation of a binomial count from `n * p`: four standard deviations
/// (`sqrt(n p (1 - p))`), and exactly zero when `p` is 0 or 1.
pub fn tolerance(n: usize, p: f64) -> f64 {
    let n = n as f64;
    4.0 * (n * p * (1.0 - p)).max(0.0).sqrt()
}

/// Checks that `observed` of `n` trials is within [`tolerance`] of share `p`.
///
/// # Errors
///
/// A description of the miss.
pub fn check_share(label: &str, observed: usize, n: usize, p: f64) -> Result<(), String> {
    let expected = n as f64 * p;
    let tol = tolerance(n, p);
    let deviation = (observed as f64 - expected).abs();
    // A share of exactly 0 or 1 admits no deviation at all.
    if deviation > tol || (tol == 0.0 && observed as f64 != expected) {
        return Err(format!(
            "{label}: {observed} of {n} calls, expected {expected:.1} ± {tol:.1} (share {p})"
        ));
    }
    Ok(())
}

/// Panics unless `observed` of `n` is within four standard deviations of share `p`.
#[track_caller]
pub fn assert_share(label: &str, observed: usize, n: usize, p: f64) {
    if let Err(e) = check_share(label, observed, n, p) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_sigma_bounds() {
        // n = 1000, p = 0.7: sd = 14.49, 4 sd = 57.97.
        assert!(check_share("x", 700, 1000, 0.7).is_ok());
        assert!(check_share("x", 643, 1000, 0.7).is_ok());
        assert!(check_share("x", 641, 1000, 0.7).is_err());
        assert!(check_share("x", 758, 1000, 0.7).is_err());
        assert!(check_share("zero", 0, 1000, 0.0).is_ok());
        assert!(check_share("zero", 1, 1000, 0.0).is_err());
        assert!(check_share("all", 999, 1000, 1.0).is_err());
    }

    #[test]
    fn tally_groups_by_prefix() {
        let mut t = Tally::default();
        for name in ["echo-v1-0", "echo-v1-1", "echo-v2-0"] {
            let mut r = Response::new(());
            r.metadata_mut()
                .insert(grpcroute_echo::BACKEND_HEADER, name.parse().unwrap());
            t.record(Ok(r));
        }
        t.record::<()>(Err(Status::unavailable("x")));
        assert_eq!(t.by_prefix("echo-v1"), 2);
        assert_eq!(t.by_prefix("echo-v2"), 1);
        assert_eq!(t.total(), 4);
        assert_eq!(t.errors_with(Code::Unavailable), 1);
    }
}
