//! Endpoints and their connections: one lazily created HTTP/2 connection per endpoint
//! address, shared by every channel, route and backend that sends there, with load
//! tracking for the balancer and connect backoff.

mod body;
mod connect;
mod load;
mod replay;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

pub(crate) use self::{
    body::{LoadGuard, ResponseBody, status_from_hyper},
    connect::{ConnectError, Connection},
    load::Load,
    replay::{Replay, refused},
};

/// How connections are made and how long a failing endpoint is avoided.
#[derive(Clone, Debug)]
pub(crate) struct TransportConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    /// The RTT assumed for an endpoint whose calls fail, so the balancer stops
    /// preferring it for failing fast.
    pub(crate) failure_penalty: Duration,
    /// How quickly old latency samples are forgotten.
    pub(crate) ewma_decay: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(10),
            failure_penalty: Duration::from_millis(500),
            ewma_decay: Duration::from_secs(10),
        }
    }
}

/// Hands out the one [`Endpoint`] for each address, so that a configuration change that
/// keeps an endpoint keeps its connection and load history.
#[derive(Debug)]
pub(crate) struct Pool {
    config: Arc<TransportConfig>,
    /// The zero of the endpoints' atomic timestamps.
    epoch: Instant,
    endpoints: Mutex<HashMap<SocketAddr, Weak<Endpoint>>>,
}

impl Pool {
    pub(crate) fn new(config: TransportConfig) -> Self {
        Self {
            config: Arc::new(config),
            epoch: Instant::now(),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// The live endpoint for `addr`, or a new one. Called only while compiling a snapshot.
    pub(crate) fn endpoint(&self, addr: SocketAddr) -> Arc<Endpoint> {
        // A poisoned lock only means another compile panicked mid-insert; the map itself
        // is still a valid cache.
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(&addr).and_then(Weak::upgrade)
            && !existing.is_retired()
        {
            return existing;
        }
        let endpoint = Arc::new(Endpoint::new(addr, self.config.clone(), self.epoch));
        map.insert(addr, Arc::downgrade(&endpoint));
        // Keep the map from growing with every address ever seen.
        if map.len() > 64 && map.len().is_power_of_two() {
            map.retain(|_, e| e.strong_count() > 0);
        }
        endpoint
    }
}

/// One backend address: its connection, load and health.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    config: Arc<TransportConfig>,
    epoch: Instant,
    connection: ArcSwapOption<Connection>,
    /// Serialises connection attempts; only the cold path takes it.
    connecting: tokio::sync::Mutex<()>,
    pub(crate) load: Load,
    failures: AtomicU32,
    /// Nanoseconds since `epoch` before which no new connection is attempted.
    retry_at: AtomicU64,
    retired: AtomicBool,
}

impl Endpoint {
    fn new(addr: SocketAddr, config: Arc<TransportConfig>, epoch: Instant) -> Self {
        let load = Load::new(config.ewma_decay);
        Self {
            addr,
            config,
            epoch,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            load,
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Nanoseconds since this endpoint's pool was created.
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    /// Whether a call may be sent here now: not removed from the configuration, and not
    /// waiting out a connect backoff.
    pub(crate) fn is_available(&self, now: u64) -> bool {
        !self.is_retired() && self.retry_at.load(Ordering::Acquire) <= now
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Removes the endpoint from service: no new call is sent here, and the pooled
    /// connection is released so it closes once the calls in flight on it have finished.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.connection.store(None);
    }

    pub(crate) fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// The connection to send on, connecting if there is none (or it has closed).
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, ConnectError> {
        if let Some(conn) = self.connection.load_full()
            && conn.is_usable()
        {
            return Ok(conn);
        }
        self.connect_slow().await
    }

    async fn connect_slow(&self) -> Result<Arc<Connection>, ConnectError> {
        let _guard = self.connecting.lock().await;
        // Whoever held the lock before us may have connected, or failed.
        if let Some(conn) = self.connection.load_full()
            && conn.is_usable()
        {
            return Ok(conn);
        }
        if self.is_retired() {
            return Err(ConnectError::Retired);
        }
        if self.retry_at.load(Ordering::Acquire) > self.now() {
            return Err(ConnectError::BackingOff);
        }
        match Connection::connect(self.addr, &self.config).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.failures.store(0, Ordering::Release);
                if !self.is_retired() {
                    self.connection.store(Some(conn.clone()));
                }
                Ok(conn)
            }
            Err(e) => {
                self.record_connect_failure();
                self.connection.store(None);
                Err(e)
            }
        }
    }

    /// Exponential backoff with ±20 % jitter, so clients that lost the same endpoint do not
    /// retry in lockstep.
    fn record_connect_failure(&self) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let base = self.config.backoff_initial.as_nanos() as f64
            * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
        let capped = base.min(self.config.backoff_max.as_nanos() as f64);
        let jitter = 0.8 + 0.4 * (jitter_seed(self.addr, failures) as f64 / u64::MAX as f64);
        let until = self.now().saturating_add((capped * jitter) as u64);
        self.retry_at.store(until, Ordering::Release);
    }
}

/// A cheap, per-attempt jitter source; it needs no quality beyond decorrelating clients.
fn jitter_seed(addr: SocketAddr, failures: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(failures);
    h.write_u16(addr.port());
    h.finish()
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_shares_live_endpoints_and_replaces_retired_ones() {
        let pool = Pool::new(TransportConfig::default());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let a = pool.endpoint(addr);
        let b = pool.endpoint(addr);
        assert!(Arc::ptr_eq(&a, &b), "one endpoint per address");
        a.retire();
        let c = pool.endpoint(addr);
        assert!(
            !Arc::ptr_eq(&a, &c),
            "a retired endpoint is never handed out again"
        );
        assert!(!c.is_retired());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_with_jitter() {
        let pool = Pool::new(TransportConfig::default());
        let e = pool.endpoint("127.0.0.1:9".parse().unwrap());
        assert!(e.is_available(e.now()));
        e.record_connect_failure();
        assert!(!e.is_available(e.now()), "avoided right after a failure");
        tokio::time::advance(Duration::from_millis(79)).await;
        assert!(
            !e.is_available(e.now()),
            "first backoff is at least 80 ms (100 ms - 20 %)"
        );
        tokio::time::advance(Duration::from_millis(42)).await;
        assert!(e.is_available(e.now()), "first backoff is at most 120 ms");
        e.record_connect_failure();
        tokio::time::advance(Duration::from_millis(159)).await;
        assert!(
            !e.is_available(e.now()),
            "second backoff is at least 160 ms"
        );
        tokio::time::advance(Duration::from_millis(82)).await;
        assert!(e.is_available(e.now()), "second backoff is at most 240 ms");
        for _ in 0..40 {
            e.record_connect_failure();
        }
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(e.is_available(e.now()), "capped at 10 s (+20 %)");
    }

    #[tokio::test]
    async fn refused_connect_puts_the_endpoint_in_backoff() {
        let pool = Pool::new(TransportConfig::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = pool.endpoint(addr);
        assert!(matches!(
            e.connection().await,
            Err(ConnectError::Connect(_))
        ));
        assert!(!e.is_available(e.now()));
        assert!(
            matches!(e.connection().await, Err(ConnectError::BackingOff)),
            "no new attempt while backing off"
        );
    }

    #[tokio::test]
    async fn retired_endpoint_does_not_connect() {
        let pool = Pool::new(TransportConfig::default());
        let e = pool.endpoint("127.0.0.1:9".parse().unwrap());
        e.retire();
        assert!(!e.is_available(e.now()));
        assert!(matches!(e.connection().await, Err(ConnectError::Retired)));
    }
}
