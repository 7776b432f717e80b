//! Helpers shared by the integration tests: object builders, a watcher harness that
//! records events and feeds a reflector, and polling.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use grpcroute_test_apiserver::{ApiServer, ApiServerBuilder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server with short bookmark intervals, as the watcher tests want.
pub async fn start_with(builder: ApiServerBuilder) -> ApiServer {
    init_tracing();
    builder
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await
        .expect("start the test apiserver")
}

pub async fn start() -> ApiServer {
    start_with(ApiServer::builder()).await
}

pub fn service(ns: &str, name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"ports": [{"name": "grpc", "port": port, "protocol": "TCP"}]},
    })
}

pub fn endpoint_slice(ns: &str, name: &str, service: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
    })
}

pub fn grpc_route(ns: &str, name: &str, backend: &str, weight: i32) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": backend}],
            "rules": [{"backendRefs": [{"name": backend, "port": 50051, "weight": weight}]}],
        },
    })
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future` with a timeout, failing the test with `what` if it takes too long.
pub async fn within<T>(timeout: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {timeout:?}: {what}"),
    }
}

/// A kube-rs watcher (with the default backoff) feeding a reflector, with every event it
/// produced recorded as a short string: `Init`, `InitApply(name)`, `InitDone`,
/// `Apply(name)`, `Delete(name)`, `Err(...)`.
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    pub store: Store<K>,
    events: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    pub fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let events = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&events);
        let stream = watcher(api, config).default_backoff().reflect(writer);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let line = match event {
                    Ok(watcher::Event::Init) => "Init".to_owned(),
                    Ok(watcher::Event::InitApply(o)) => format!("InitApply({})", o.name_any()),
                    Ok(watcher::Event::InitDone) => "InitDone".to_owned(),
                    Ok(watcher::Event::Apply(o)) => format!("Apply({})", o.name_any()),
                    Ok(watcher::Event::Delete(o)) => format!("Delete({})", o.name_any()),
                    Err(e) => format!("Err({e})"),
                };
                recorded.lock().expect("events lock").push(line);
            }
        });
        Self {
            store,
            events,
            task,
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().expect("events lock").clone()
    }

    /// Events recorded after the first `skip`.
    pub fn events_since(&self, skip: usize) -> Vec<String> {
        self.events().into_iter().skip(skip).collect()
    }

    /// Sorted names in the reflector's store.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.state().iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    pub async fn ready(&self) {
        within(
            Duration::from_secs(5),
            "the reflector's first list",
            self.store.wait_until_ready(),
        )
        .await
        .expect("store writer alive");
    }

    /// Waits until the store holds exactly `names`.
    pub async fn wait_for_names(&self, names: &[&str]) {
        let ok = eventually(Duration::from_secs(10), || self.names() == names).await;
        assert!(
            ok,
            "store never became {names:?}: {:?}; events {:?}",
            self.names(),
            self.events()
        );
    }

    /// Waits until some event satisfies `predicate`.
    pub async fn wait_for_event(&self, skip: usize, predicate: impl Fn(&str) -> bool) {
        let ok = eventually(Duration::from_secs(10), || {
            self.events_since(skip).iter().any(|e| predicate(e))
        })
        .await;
        assert!(ok, "no matching event; events {:?}", self.events());
    }
}

impl<K: Resource + 'static> Drop for Watched<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}
