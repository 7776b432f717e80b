//! Endpoints and their connections: one lazily created HTTP/2 connection per endpoint
//! address and [`Security`] (plaintext, or TLS with given settings), shared by every
//! channel, route and backend that sends there, with load tracking for the balancer and
//! connect backoff.

mod body;
mod connect;
mod load;
mod replay;
mod security;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

pub(crate) use self::{
    body::{
        BodyDeadline, CountGuard, LoadGuard, Outcome, OutcomeSink, ProbeGuard, ResponseBody,
        status_from_hyper,
    },
    connect::{ConnectError, Connection},
    load::Load,
    replay::{Replay, refused},
    security::{Resolved as ResolvedSecurity, Security, SecurityPolicy},
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
    /// How quickly old latency samples are forgotten: the time constant of the peak-EWMA,
    /// so also how long a latency peak is remembered.
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
            // 2 s, not Finagle's and linkerd's 10 s: a client's own scheduling stalls show
            // as latency peaks on every endpoint, and a fast endpoint held at such a peak
            // for 10 s kept losing picks to an idle endpoint 20 ms slower (issue 10's tail
            // test on a loaded 2-CPU machine, interleaved runs: 0.30-0.87 % of calls to the
            // slow endpoint at 10 s, 0.18-0.26 % at 2 s, no better at 0.5 s). A slow
            // endpoint is re-probed when its estimate decays to the others' cost, every few
            // seconds either way: one call.
            ewma_decay: Duration::from_secs(2),
        }
    }
}

/// Hands out the one [`Endpoint`] for each address and security, so that every backend that
/// lists an address (and connects to it the same way) shares its connection and load
/// history, and a configuration change that keeps an address keeps both. Backends that
/// reach one address with different TLS settings get an endpoint each: a connection's TLS
/// session proves one identity to one expectation.
///
/// An endpoint lives as long as some backend's endpoint set lists it: backends
/// [`join`](Pool::join) the addresses they add and [`leave`](Pool::leave) the ones they
/// drop. When the last one leaves, the endpoint is retired (no new call goes there; its
/// connection closes once the calls in flight on it finish), and the address gets a fresh
/// endpoint if it comes back. Joins and retirements take the pool's lock, so an address can
/// never be joined while it is being retired; calls never take it.
#[derive(Debug)]
pub(crate) struct Pool {
    config: Arc<TransportConfig>,
    /// The zero of the endpoints' atomic timestamps.
    epoch: Instant,
    endpoints: Mutex<HashMap<(SocketAddr, Security), Arc<Endpoint>>>,
    /// Endpoints created and retired so far, so that an update can say how many it added
    /// and removed.
    created: AtomicU64,
    retired: AtomicU64,
}

impl Pool {
    pub(crate) fn new(config: TransportConfig) -> Self {
        Self {
            config: Arc::new(config),
            epoch: Instant::now(),
            endpoints: Mutex::new(HashMap::new()),
            created: AtomicU64::new(0),
            retired: AtomicU64::new(0),
        }
    }

    /// Endpoints created and retired since the pool began.
    pub(crate) fn churn(&self) -> (u64, u64) {
        (
            self.created.load(Ordering::Acquire),
            self.retired.load(Ordering::Acquire),
        )
    }

    /// The plaintext endpoint for `addr`, counting one more backend that lists it.
    #[cfg(test)]
    pub(crate) fn join(&self, addr: SocketAddr) -> Arc<Endpoint> {
        self.join_locked(&mut self.lock(), addr, &Security::Plaintext)
    }

    /// The endpoint for each address with `security`, counting one more backend that lists
    /// it, under one lock.
    pub(crate) fn join_all(&self, addrs: &[SocketAddr], security: &Security) -> Vec<Arc<Endpoint>> {
        let mut map = self.lock();
        addrs
            .iter()
            .map(|&addr| self.join_locked(&mut map, addr, security))
            .collect()
    }

    // `Security` hashes and compares by its TLS settings, which never change: the
    // connector's interior mutability (rustls' caches) takes no part in the key.
    #[allow(clippy::mutable_key_type)]
    fn join_locked(
        &self,
        map: &mut HashMap<(SocketAddr, Security), Arc<Endpoint>>,
        addr: SocketAddr,
        security: &Security,
    ) -> Arc<Endpoint> {
        let key = (addr, security.clone());
        if let Some(existing) = map.get(&key) {
            existing.members.fetch_add(1, Ordering::AcqRel);
            return existing.clone();
        }
        let endpoint = Arc::new(Endpoint::new(
            addr,
            security.clone(),
            self.config.clone(),
            self.epoch,
        ));
        endpoint.members.store(1, Ordering::Release);
        self.created.fetch_add(1, Ordering::AcqRel);
        map.insert(key, endpoint.clone());
        endpoint
    }

    /// One backend fewer lists `endpoint`; the last one to leave retires it.
    pub(crate) fn leave(&self, endpoint: &Arc<Endpoint>) {
        if endpoint.members.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut map = self.lock();
        // Another backend may have joined between the decrement and the lock.
        if endpoint.members.load(Ordering::Acquire) == 0 && !endpoint.is_retired() {
            endpoint.retire();
            self.retired.fetch_add(1, Ordering::AcqRel);
            let key = (endpoint.addr, endpoint.security.clone());
            if map.get(&key).is_some_and(|e| Arc::ptr_eq(e, endpoint)) {
                map.remove(&key);
            }
        }
    }

    /// How many endpoints some backend lists.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    #[allow(clippy::type_complexity, clippy::mutable_key_type)]
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SocketAddr, Security), Arc<Endpoint>>> {
        // A poisoned lock only means a panic elsewhere mid-update; every operation leaves
        // the map valid.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One backend address: its connection, load and health.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    /// How connections are made: plaintext, or TLS with the settings of the backends that
    /// share this endpoint.
    security: Security,
    config: Arc<TransportConfig>,
    epoch: Instant,
    connection: ArcSwapOption<Connection>,
    /// Serialises connection attempts; only the cold path takes it.
    connecting: tokio::sync::Mutex<()>,
    pub(crate) load: Load,
    failures: AtomicU32,
    /// Nanoseconds since `epoch` before which no new connection is attempted.
    retry_at: AtomicU64,
    /// Why the last connect failed, while it has not succeeded since (failure path only).
    last_failure: Mutex<Option<Arc<str>>>,
    retired: AtomicBool,
    /// How many backends list this endpoint (see [`Pool`]).
    members: AtomicUsize,
    /// Failure accrual: consecutive failures and ejection (see `backend::accrual`).
    pub(crate) health: Health,
}

/// An endpoint's failure-accrual state, in atomics so that calls record outcomes without a
/// lock. The rules that drive it are in `backend::accrual`.
#[derive(Debug, Default)]
pub(crate) struct Health {
    consecutive: AtomicU32,
    /// Nanoseconds since the pool's epoch until which the endpoint is ejected; 0: in
    /// service. Once passed, the endpoint takes one probe call.
    ejected_until: AtomicU64,
    /// Ejections in a row, for the back-off.
    ejections: AtomicU32,
    /// A probe call is in flight.
    probing: AtomicBool,
}

impl Health {
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_consecutive(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }

    /// Counts one more failure in a row; the new count.
    pub(crate) fn add_failure(&self) -> u32 {
        self.consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1)
    }

    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Acquire)
    }

    /// One more ejection in a row; its number (from 1).
    pub(crate) fn next_ejection(&self) -> u32 {
        self.ejections
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1)
    }

    /// Ejects until `until` (non-zero).
    pub(crate) fn eject_until(&self, until: u64) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.probing.store(false, Ordering::Release);
        self.ejected_until.store(until, Ordering::Release);
    }

    /// Back in service; the back-off starts over.
    pub(crate) fn restore(&self) {
        self.ejections.store(0, Ordering::Relaxed);
        self.probing.store(false, Ordering::Release);
        self.ejected_until.store(0, Ordering::Release);
    }

    /// Ends the probe in flight; whether there was one.
    pub(crate) fn end_probe(&self) -> bool {
        self.probing.swap(false, Ordering::AcqRel)
    }

    /// Whether a call may go to the endpoint at `now`, claiming the probe if the
    /// endpoint's ejection is over (one call only, until it ends).
    pub(crate) fn claim_probe(&self, now: u64) -> bool {
        match self.ejected_until() {
            0 => true,
            until if until > now => false,
            _ => self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    /// Whether the balancer may pick the endpoint at `now`: in service, or due for a probe
    /// that nobody runs yet.
    pub(crate) fn in_service(&self, now: u64) -> bool {
        match self.ejected_until() {
            0 => true,
            until => until <= now && !self.probing.load(Ordering::Acquire),
        }
    }

    /// Whether the endpoint is ejected at `now` (not counting a due probe), and until when.
    pub(crate) fn ejected_at(&self, now: u64) -> Option<u64> {
        let until = self.ejected_until();
        (until > now || (until != 0 && self.probing.load(Ordering::Acquire))).then_some(until)
    }
}

impl Endpoint {
    fn new(
        addr: SocketAddr,
        security: Security,
        config: Arc<TransportConfig>,
        epoch: Instant,
    ) -> Self {
        let load = Load::new(config.ewma_decay);
        Self {
            addr,
            security,
            config,
            epoch,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            load,
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            retired: AtomicBool::new(false),
            members: AtomicUsize::new(0),
            health: Health::default(),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Nanoseconds since this endpoint's pool was created.
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    /// Whether a call may be sent here now: not removed from the configuration, not
    /// waiting out a connect backoff, and not ejected by failure accrual.
    pub(crate) fn is_available(&self, now: u64) -> bool {
        !self.is_retired()
            && self.retry_at.load(Ordering::Acquire) <= now
            && self.health.in_service(now)
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Removes the endpoint from service: no new call is sent here, and the pooled
    /// connection is released so it closes once the calls in flight on it have finished.
    fn retire(&self) {
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
        // Boxed: inline, the connect path's state (TCP, TLS and HTTP/2 handshakes, ~7 KB)
        // would be part of every call's future, which grew to 16 KB; each call moved that
        // into its box and touched it, though a connection exists for nearly every call
        // (issue 10: a memmove of the call future was the routed path's top symbol).
        Box::pin(self.connect_slow()).await
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
        match Connection::connect(self.addr, &self.config, &self.security).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.failures.store(0, Ordering::Release);
                *self.lock_last_failure() = None;
                if !self.is_retired() {
                    self.connection.store(Some(conn.clone()));
                }
                Ok(conn)
            }
            Err(e) => {
                self.record_connect_failure();
                *self.lock_last_failure() = Some(e.to_string().into());
                self.connection.store(None);
                Err(e)
            }
        }
    }

    /// Why the last connect failed, if none has succeeded since.
    pub(crate) fn last_failure(&self) -> Option<Arc<str>> {
        self.lock_last_failure().clone()
    }

    fn lock_last_failure(&self) -> std::sync::MutexGuard<'_, Option<Arc<str>>> {
        // Every write leaves a whole value.
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner())
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
    fn pool_shares_listed_endpoints_and_retires_them_with_the_last_backend() {
        let pool = Pool::new(TransportConfig::default());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let a = pool.join(addr);
        let b = pool.join(addr);
        assert!(Arc::ptr_eq(&a, &b), "one endpoint per address");
        assert_eq!(pool.len(), 1);
        pool.leave(&a);
        assert!(!a.is_retired(), "another backend still lists it");
        pool.leave(&b);
        assert!(a.is_retired(), "the last backend to leave retires it");
        assert_eq!(pool.len(), 0);
        let c = pool.join(addr);
        assert!(
            !Arc::ptr_eq(&a, &c),
            "a retired endpoint is never handed out again"
        );
        assert!(!c.is_retired());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_with_jitter() {
        let pool = Pool::new(TransportConfig::default());
        let e = pool.join("127.0.0.1:9".parse().unwrap());
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
        let e = pool.join(addr);
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
        let e = pool.join("127.0.0.1:9".parse().unwrap());
        pool.leave(&e);
        assert!(!e.is_available(e.now()));
        assert!(matches!(e.connection().await, Err(ConnectError::Retired)));
    }
}
