//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas of
//! `status-controller` only one writes.
//!
//! The algorithm is client-go's `leaderelection` with a Lease lock:
//!
//! - a candidate takes the Lease when it does not exist, when it has no holder (a leader
//!   that shut down cleanly released it), or when it has expired: its `renewTime` plus
//!   `leaseDurationSeconds` is in the past by this machine's clock, or the record
//!   (holder, `renewTime`) has not changed for `leaseDurationSeconds` by this process's
//!   monotonic clock (so a candidate whose clock runs behind still takes over);
//! - every write (create, take, renew, release) is a create or a replace carrying the
//!   `resourceVersion` that was read, so of two candidates racing for the Lease one gets
//!   `409 Conflict` and stays a follower;
//! - the leader renews every third of the lease duration. It stops writing when it has
//!   not renewed for two thirds of the duration (client-go's renew deadline): before the
//!   Lease can expire for anyone else, so two writers never overlap while the clocks
//!   agree within a third of the duration. It steps down at once when it finds another
//!   holder in the Lease;
//! - on shutdown the leader stops writing, then clears `holderIdentity` so that a
//!   follower takes over at its next try instead of waiting for the Lease to expire.
//!
//! [`Leadership::is_leader`] is checked before every status write; it turns false by
//! itself at the renew deadline, even if the election task is held up.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};

/// Who campaigns, and for how long a Lease holds.
#[derive(Clone, Debug)]
pub(crate) struct ElectionConfig {
    /// This candidate's `holderIdentity`; unique among the candidates.
    pub(crate) identity: String,
    /// `leaseDurationSeconds`: how long a Lease holds without renewal.
    pub(crate) lease_duration: Duration,
}

impl ElectionConfig {
    /// How often the leader renews, and followers try.
    fn retry_period(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How long the leader may go without renewing before it stops writing.
    fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Where the time written in the Lease comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    /// The system clock.
    System,
    /// `wall` at `start`, then following tokio's clock (which tests pause and advance).
    #[cfg_attr(not(test), allow(dead_code))]
    Tokio { wall: Timestamp, start: Instant },
}

impl Clock {
    fn now(self) -> Timestamp {
        match self {
            Self::System => Timestamp::now(),
            Self::Tokio { wall, start } => {
                let elapsed = i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX);
                Timestamp::from_microsecond(wall.as_microsecond().saturating_add(elapsed))
                    .unwrap_or(wall)
            }
        }
    }
}

/// Whether this instance leads: cheap to clone and to ask.
#[derive(Clone, Debug)]
pub(crate) struct Leadership {
    /// Until when the last renewal makes us the leader (`None` inside: following);
    /// `None`: no election, always the leader.
    until: Option<watch::Receiver<Option<Instant>>>,
}

impl Leadership {
    /// Whether this instance may write now.
    pub(crate) fn is_leader(&self) -> bool {
        self.until
            .as_ref()
            .is_none_or(|until| until.borrow().is_some_and(|t| Instant::now() < t))
    }

    /// Waits until leadership is gained, renewed or lost.
    pub(crate) async fn changed(&mut self) {
        match &mut self.until {
            Some(until) => {
                if until.changed().await.is_err() {
                    // The election ended: nothing changes any more.
                    std::future::pending::<()>().await;
                }
            }
            // No election: nothing ever changes.
            None => std::future::pending::<()>().await,
        }
    }

    /// Always the leader: for runs that take no part in an election.
    pub(crate) fn always() -> Self {
        Self { until: None }
    }
}

/// A failed Lease request.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// 409: someone else wrote the Lease (or created it) first.
    Conflict,
    /// Anything else, in words.
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict => f.write_str("conflict: the Lease was changed by someone else"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

/// The Lease, read and written with optimistic concurrency.
pub(crate) trait LeaseStore: Send + Sync + 'static {
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;
    fn create(&self, lease: Lease) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Fails with [`StoreError::Conflict`] unless `lease.metadata.resourceVersion` is
    /// the stored one.
    fn replace(&self, lease: Lease) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The Lease `name` in the API server.
#[derive(Clone, Debug)]
pub(crate) struct KubeLease {
    api: Api<Lease>,
    name: String,
}

impl KubeLease {
    pub(crate) fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }
}

fn store_error(e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(status) if status.code == 409 => StoreError::Conflict,
        e => StoreError::Other(e.to_string()),
    }
}

impl LeaseStore for KubeLease {
    async fn get(&self) -> Result<Option<Lease>, StoreError> {
        self.api.get_opt(&self.name).await.map_err(store_error)
    }

    async fn create(&self, mut lease: Lease) -> Result<(), StoreError> {
        lease.metadata.name = Some(self.name.clone());
        self.api
            .create(&PostParams::default(), &lease)
            .await
            .map(drop)
            .map_err(store_error)
    }

    async fn replace(&self, lease: Lease) -> Result<(), StoreError> {
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(drop)
            .map_err(store_error)
    }
}

/// A running election: campaigns until [`stop`](Self::stop).
#[derive(Debug)]
pub(crate) struct Election {
    leadership: Leadership,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Election {
    /// Starts campaigning (on the current tokio runtime).
    pub(crate) fn start(store: impl LeaseStore, config: ElectionConfig, clock: Clock) -> Self {
        let (tx, until) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(campaign(store, config, clock, tx, stopped));
        Self {
            leadership: Leadership { until: Some(until) },
            stop,
            task,
        }
    }

    pub(crate) fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Stops writing at once, then releases the Lease if this instance holds it.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The last Lease record seen held by someone else, and when it was first seen.
#[derive(Debug)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease (taken or renewed).
    Leader,
    /// Someone else does (`None`: not known, e.g. they created it first).
    Follower(Option<String>),
}

async fn campaign(
    store: impl LeaseStore,
    config: ElectionConfig,
    clock: Clock,
    until: watch::Sender<Option<Instant>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut observed: Option<Observed> = None;
    // When the last successful take or renewal was sent, while we lead.
    let mut renewed: Option<Instant> = None;
    let mut follower_of: Option<Option<String>> = None;
    loop {
        let sent = Instant::now();
        let attempt = timeout(
            config.retry_period(),
            try_acquire_or_renew(&store, &config, clock, &mut observed),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Other(format!(
                "no answer within {:?}",
                config.retry_period()
            )))
        });
        let pause = match attempt {
            Ok(Attempt::Leader) => {
                if renewed.is_none() {
                    tracing::info!(
                        identity = %config.identity,
                        "became the leader: writing status"
                    );
                }
                renewed = Some(sent);
                follower_of = None;
                until.send_replace(Some(sent + config.renew_deadline()));
                config.retry_period()
            }
            Ok(Attempt::Follower(holder)) => {
                if renewed.take().is_some() {
                    until.send_replace(None);
                    tracing::warn!(
                        holder = ?holder,
                        "another instance holds the lease: stepped down"
                    );
                }
                if follower_of.as_ref() != Some(&holder) {
                    tracing::info!(holder = ?holder, "standing by: another instance is the leader");
                    follower_of = Some(holder);
                }
                jitter(config.retry_period())
            }
            Err(error) => match renewed {
                // Writing already stopped by itself at the deadline (see `Leadership`).
                Some(at) if Instant::now() >= at + config.renew_deadline() => {
                    renewed = None;
                    until.send_replace(None);
                    tracing::warn!(%error, "could not renew the lease in time: stepped down");
                    jitter(config.retry_period())
                }
                Some(_) => {
                    tracing::warn!(%error, "could not renew the lease; retrying");
                    config.retry_period() / 2
                }
                None => {
                    tracing::debug!(%error, "could not read or take the lease; retrying");
                    jitter(config.retry_period())
                }
            },
        };
        tokio::select! {
            () = sleep(pause) => {}
            _ = &mut stop => break,
        }
    }
    // Stop writing first, then let a follower take over without waiting for expiry.
    let leading = until.send_replace(None).is_some_and(|t| Instant::now() < t);
    if leading {
        match timeout(config.retry_period(), release(&store, &config, clock)).await {
            Ok(Ok(())) => tracing::info!("released the lease"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not release the lease; it expires by itself")
            }
            Err(_) => tracing::warn!("could not release the lease in time; it expires by itself"),
        }
    }
}

async fn try_acquire_or_renew(
    store: &impl LeaseStore,
    config: &ElectionConfig,
    clock: Clock,
    observed: &mut Option<Observed>,
) -> Result<Attempt, StoreError> {
    let now = MicroTime(clock.now());
    let Some(lease) = store.get().await? else {
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(config.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match store.create(lease).await {
            Ok(()) => Ok(Attempt::Leader),
            Err(StoreError::Conflict) => Ok(Attempt::Follower(None)),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(config.identity.as_str());
    if !mine && holder.is_some() && !expired(&spec, &now, observed, config) {
        return Ok(Attempt::Follower(holder));
    }
    let mut taken = lease;
    let new = taken.spec.get_or_insert_with(LeaseSpec::default);
    new.holder_identity = Some(config.identity.clone());
    new.lease_duration_seconds = Some(config.lease_seconds());
    new.renew_time = Some(now.clone());
    if !mine {
        new.acquire_time = Some(now);
        new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    match store.replace(taken).await {
        Ok(()) => {
            *observed = None;
            if !mine {
                tracing::debug!(previous = ?holder, "took the lease");
            }
            Ok(Attempt::Leader)
        }
        // Someone took it first.
        Err(StoreError::Conflict) if !mine => Ok(Attempt::Follower(holder)),
        Err(e) => Err(e),
    }
}

/// Whether the Lease held by someone else has expired (see the module docs).
fn expired(
    spec: &LeaseSpec,
    now: &MicroTime,
    observed: &mut Option<Observed>,
    config: &ElectionConfig,
) -> bool {
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(config.lease_duration, Duration::from_secs);
    let same = observed
        .as_ref()
        .is_some_and(|o| o.holder == spec.holder_identity && o.renew_time == spec.renew_time);
    if !same {
        *observed = Some(Observed {
            holder: spec.holder_identity.clone(),
            renew_time: spec.renew_time.clone(),
            at: Instant::now(),
        });
    }
    let unchanged_for = observed.as_ref().map_or(Duration::ZERO, |o| o.at.elapsed());
    let by_clock = spec.renew_time.as_ref().is_some_and(|renewed| {
        let age = now.0.as_microsecond() - renewed.0.as_microsecond();
        u128::try_from(age).is_ok_and(|age| age > duration.as_micros())
    });
    by_clock || unchanged_for >= duration
}

async fn release(
    store: &impl LeaseStore,
    config: &ElectionConfig,
    clock: Clock,
) -> Result<(), StoreError> {
    let Some(mut lease) = store.get().await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(clock.now()));
    spec.lease_duration_seconds = Some(1);
    store.replace(lease).await
}

/// `d` plus up to 20 %, so followers do not all try at the same moment.
fn jitter(d: Duration) -> Duration {
    use rand::RngExt as _;
    d.mul_f64(1.0 + rand::rng().random_range(0.0..0.2))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A Lease in memory, with the API server's optimistic concurrency.
    #[derive(Clone, Debug, Default)]
    struct FakeLease(Arc<Mutex<FakeState>>);

    #[derive(Debug, Default)]
    struct FakeState {
        lease: Option<Lease>,
        version: u64,
        failing: bool,
        writes: u64,
    }

    impl FakeLease {
        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().unwrap()
        }

        fn holder(&self) -> Option<String> {
            self.state()
                .lease
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.clone())
        }

        fn spec(&self) -> LeaseSpec {
            self.state().lease.clone().unwrap().spec.unwrap()
        }

        /// Writes the Lease as someone else would, without any check.
        fn force(&self, spec: LeaseSpec) {
            let mut state = self.state();
            state.version += 1;
            state.lease = Some(Lease {
                metadata: ObjectMeta {
                    resource_version: Some(state.version.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            });
        }

        fn fail(&self, failing: bool) {
            self.state().failing = failing;
        }
    }

    impl LeaseStore for FakeLease {
        async fn get(&self) -> Result<Option<Lease>, StoreError> {
            let state = self.state();
            if state.failing {
                return Err(StoreError::Other("500 injected".into()));
            }
            Ok(state.lease.clone())
        }

        async fn create(&self, mut lease: Lease) -> Result<(), StoreError> {
            let mut state = self.state();
            if state.failing {
                return Err(StoreError::Other("500 injected".into()));
            }
            if state.lease.is_some() {
                return Err(StoreError::Conflict);
            }
            state.version += 1;
            state.writes += 1;
            lease.metadata.resource_version = Some(state.version.to_string());
            state.lease = Some(lease);
            Ok(())
        }

        async fn replace(&self, mut lease: Lease) -> Result<(), StoreError> {
            let mut state = self.state();
            if state.failing {
                return Err(StoreError::Other("500 injected".into()));
            }
            let stored = state
                .lease
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
            if stored.is_none() || lease.metadata.resource_version != stored {
                return Err(StoreError::Conflict);
            }
            state.version += 1;
            state.writes += 1;
            lease.metadata.resource_version = Some(state.version.to_string());
            state.lease = Some(lease);
            Ok(())
        }
    }

    const LEASE: Duration = Duration::from_secs(15);

    fn clock() -> Clock {
        Clock::Tokio {
            wall: Timestamp::from_second(1_900_000_000).unwrap(),
            start: Instant::now(),
        }
    }

    fn elect(store: &FakeLease, identity: &str, clock: Clock) -> Election {
        let config = ElectionConfig {
            identity: identity.into(),
            lease_duration: LEASE,
        };
        Election::start(store.clone(), config, clock)
    }

    /// Advances (paused) time in 100 ms steps until `condition` holds; the time it took.
    async fn wait_until(limit: Duration, condition: impl Fn() -> bool) -> Duration {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < limit, "not within {limit:?}");
            sleep(Duration::from_millis(100)).await;
        }
        start.elapsed()
    }

    fn held_by(holder: &str, clock: Clock) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(clock.now())),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn takes_a_missing_lease_renews_it_and_releases_it_on_stop() {
        let store = FakeLease::default();
        let election = elect(&store, "a", clock());
        let leadership = election.leadership();
        let took = wait_until(Duration::from_secs(1), || leadership.is_leader()).await;
        assert!(took < Duration::from_millis(200));
        let spec = store.spec();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        let first_renewal = spec.renew_time.clone();

        sleep(Duration::from_secs(60)).await;
        assert!(leadership.is_leader());
        // One create, then a renewal every 5 s.
        let writes = store.state().writes;
        assert!((12..=14).contains(&writes), "{writes} writes in 60 s");
        assert!(store.spec().renew_time > first_renewal);

        election.stop().await;
        assert!(!leadership.is_leader());
        let spec = store.spec();
        assert_eq!(spec.holder_identity, None, "released");
        assert_eq!(spec.lease_duration_seconds, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_while_the_holder_renews_and_takes_over_when_it_stops() {
        let clock = clock();
        let store = FakeLease::default();
        store.force(held_by("other", clock));
        let election = elect(&store, "a", clock);
        let leadership = election.leadership();
        // The other holder renews every 5 s for 30 s, then dies without releasing.
        let renewing = store.clone();
        tokio::spawn(async move {
            for _ in 0..6 {
                sleep(Duration::from_secs(5)).await;
                renewing.force(held_by("other", clock));
            }
        });
        sleep(Duration::from_millis(30_100)).await;
        assert!(!leadership.is_leader());
        assert_eq!(store.holder().as_deref(), Some("other"));
        // Expired 15 s after its last renewal, seen at a try every 5 s (+ jitter).
        let took = wait_until(Duration::from_secs(30), || leadership.is_leader()).await;
        assert!(
            (Duration::from_secs(14)..=Duration::from_secs(22)).contains(&took),
            "took over {took:?} after the last renewal"
        );
        let spec = store.spec();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
        election.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_whose_clock_runs_ahead_is_taken_over_by_observation() {
        let clock = clock();
        let store = FakeLease::default();
        // Its renewTime is an hour in our future: by the clocks it never expires.
        let mut ahead = held_by("other", clock);
        ahead.renew_time = Some(MicroTime(
            Timestamp::from_second(1_900_000_000 + 3600).unwrap(),
        ));
        store.force(ahead);
        let election = elect(&store, "a", clock);
        let leadership = election.leadership();
        sleep(Duration::from_secs(14)).await;
        assert!(!leadership.is_leader());
        // Unchanged for 15 s since first seen: taken at the next try.
        let took = wait_until(Duration::from_secs(10), || leadership.is_leader()).await;
        assert!(took <= Duration::from_secs(7), "{took:?}");
        election.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_expired_by_the_clock_is_taken_at_once() {
        let clock = clock();
        let store = FakeLease::default();
        let mut stale = held_by("crashed", clock);
        stale.renew_time = Some(MicroTime(
            Timestamp::from_second(1_900_000_000 - 3600).unwrap(),
        ));
        store.force(stale);
        let election = elect(&store, "a", clock);
        let leadership = election.leadership();
        let took = wait_until(Duration::from_secs(1), || leadership.is_leader()).await;
        assert!(took < Duration::from_millis(200));
        election.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn two_candidates_never_lead_together_and_a_release_hands_over_fast() {
        let clock = clock();
        let store = FakeLease::default();
        let a = elect(&store, "a", clock);
        let b = elect(&store, "b", clock);
        let (la, lb) = (a.leadership(), b.leadership());
        wait_until(Duration::from_secs(1), || la.is_leader() || lb.is_leader()).await;
        for _ in 0..600 {
            assert!(!(la.is_leader() && lb.is_leader()), "two leaders");
            assert!(la.is_leader() || lb.is_leader(), "no leader");
            sleep(Duration::from_millis(100)).await;
        }
        let (leader, follower) = if la.is_leader() { (a, lb) } else { (b, la) };
        leader.stop().await;
        // The follower sees the released Lease at its next try: within 5 s + 20 %.
        let took = wait_until(Duration::from_secs(10), || follower.is_leader()).await;
        assert!(took <= Duration::from_secs(6), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_writing_when_renewals_fail_past_the_deadline() {
        let store = FakeLease::default();
        let election = elect(&store, "a", clock());
        let leadership = election.leadership();
        wait_until(Duration::from_secs(1), || leadership.is_leader()).await;
        let renewed = Instant::now();
        store.fail(true);
        sleep(Duration::from_secs(9)).await;
        assert!(
            leadership.is_leader(),
            "still within the 10 s renew deadline"
        );
        let lost = wait_until(Duration::from_secs(5), || !leadership.is_leader()).await;
        let since_renewal = Instant::now() - renewed;
        assert!(
            since_renewal <= Duration::from_secs(10) + Duration::from_millis(100),
            "stepped down {since_renewal:?} after the last renewal ({lost:?})"
        );
        // Well before the Lease expires for anyone else (15 s).
        store.fail(false);
        // The Lease still names us: the next try renews it and we lead again.
        wait_until(Duration::from_secs(10), || leadership.is_leader()).await;
        election.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn steps_down_when_another_holder_takes_the_lease() {
        let clock = clock();
        let store = FakeLease::default();
        let election = elect(&store, "a", clock);
        let leadership = election.leadership();
        wait_until(Duration::from_secs(1), || leadership.is_leader()).await;
        store.force(held_by("usurper", clock));
        // Seen at the next renewal, at most 5 s later.
        wait_until(Duration::from_secs(6), || !leadership.is_leader()).await;
        election.stop().await;
        assert_eq!(
            store.holder().as_deref(),
            Some("usurper"),
            "not released: not ours"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn always_leads_without_an_election() {
        let leadership = Leadership::always();
        sleep(Duration::from_secs(86_400)).await;
        assert!(leadership.is_leader());
    }
}
