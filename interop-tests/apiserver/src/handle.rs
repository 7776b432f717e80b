//! The cloneable handle tests use while the server runs: client configuration, direct
//! object access, fault injection and counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::ApiError;
use crate::faults::{Fault, Window};
use crate::meta::meta_str;
use crate::resources::{Resource, split_api_version};
use crate::selector::{FieldSelector, LabelSelector, ObjectFilter};
use crate::server::Shared;
use crate::stats::Stats;
use crate::store::Target;

/// A cloneable handle to a running [`ApiServer`](crate::ApiServer).
///
/// Direct writes ([`apply`](Self::apply), [`delete`](Self::delete), ...) go through the
/// same store as HTTP requests, so they bump the resource version and reach open watches
/// exactly like writes from a client.
#[derive(Debug, Clone)]
pub struct ApiServerHandle {
    shared: Arc<Shared>,
}

impl ApiServerHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The bound address (127.0.0.1 and the port, which stays the same across
    /// [`refuse_connections`](Self::refuse_connections) and [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A `kube::Config` for this server: plain http, no credentials, default namespace
    /// `default`, 5 s connect timeout.
    pub fn client_config(&self) -> kube::Config {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.shared.addr.to_string())
            .path_and_query("/")
            .build()
            // Invariant: a socket address is always a valid URI authority.
            .expect("a socket address is a valid URI authority");
        let mut config = kube::Config::new(uri);
        config.connect_timeout = Some(Duration::from_secs(5));
        config
    }

    /// A `kube::Client` for this server (must be called inside a tokio runtime).
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        kube::Client::try_from(self.client_config())
    }

    /// A kubeconfig (YAML) pointing at this server, with context `test-apiserver` and
    /// namespace `default`, for kubectl.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test-apiserver\n  cluster:\n    server: {url}\ncontexts:\n- name: test-apiserver\n  context:\n    cluster: test-apiserver\n    user: test-apiserver\n    namespace: default\nusers:\n- name: test-apiserver\n  user: {{}}\ncurrent-context: test-apiserver\n",
            url = self.url()
        )
    }

    // ----- direct object access -------------------------------------------------------

    /// Creates or replaces an object, found by its `apiVersion`/`kind`,
    /// `metadata.namespace` (default `default` for namespaced kinds) and `metadata.name`.
    ///
    /// Unlike a client write this is a storage-level write: `.status` is taken as given
    /// (also for kinds with a status subresource), and `metadata.resourceVersion` is not
    /// checked. Metadata (uid, resourceVersion, generation, ...) is managed as usual, and
    /// watches see ADDED or MODIFIED (nothing if the object is unchanged).
    pub fn apply(&self, object: Value) -> Result<Value, ApiError> {
        let resource = resource_of(&object)?;
        let name = meta_str(&object, "name")
            .ok_or_else(|| ApiError::invalid(resource, "", "metadata.name: Required value"))?
            .to_owned();
        let namespace = namespace_of(resource, &object);
        self.shared
            .store
            .write(
                resource,
                namespace.as_deref(),
                &name,
                Target::Whole,
                true,
                |_| Ok(object),
            )
            .map(|(stored, _)| stored)
    }

    /// Replaces only `.status` of an existing object, as a client writing the `/status`
    /// subresource would (without the resourceVersion check).
    pub fn apply_status(&self, object: Value) -> Result<Value, ApiError> {
        let resource = resource_of(&object)?;
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        let namespace = namespace_of(resource, &object);
        let mut desired = object;
        if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        self.shared
            .store
            .write(
                resource,
                namespace.as_deref(),
                &name,
                Target::Status,
                false,
                |_| Ok(desired),
            )
            .map(|(stored, _)| stored)
    }

    /// One object (`namespace` is ignored for cluster-scoped kinds).
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store.get(resource, Some(namespace), name)
    }

    /// All objects of a kind, in one namespace or (`None`) all, ordered by namespace and
    /// name.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        let filter = ObjectFilter {
            resource,
            namespace: namespace
                .filter(|_| resource.namespaced())
                .map(str::to_owned),
            labels: LabelSelector::default(),
            fields: FieldSelector::default(),
        };
        self.shared.store.list(&filter, None, None).items
    }

    /// Deletes an object (watches see DELETED). Objects with finalizers only get a
    /// `deletionTimestamp`, as in a real cluster.
    pub fn delete(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.shared
            .store
            .delete(resource, Some(namespace), name, (None, None))
    }

    /// The latest resource version handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    // ----- faults ---------------------------------------------------------------------

    /// Ends every open watch now, cleanly (the chunked body ends, as when the real server
    /// times a watch out). Clients re-watch from their last resource version.
    pub fn drop_watches(&self) {
        self.shared.store.drop_watches();
    }

    /// Compacts the history: every resource version handed out so far becomes too old,
    /// and open watches end. The next watch from an old version gets the 410 `Expired`
    /// ERROR event and its client relists; lists report a version at or above the new
    /// floor.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Simulates an apiserver restart that keeps its storage: every connection (and so
    /// every watch) is cut; objects and the resource version counter stay.
    pub fn restart(&self) {
        self.shared.faults.drop_connections();
    }

    /// Closes the listener and cuts every connection, so connecting fails with
    /// "connection refused", for `duration` (or, with `None`, until
    /// [`accept_connections`](Self::accept_connections)). The same port is bound again
    /// afterwards. Returns once the listener is closed.
    pub async fn refuse_connections(&self, duration: Option<Duration>) {
        self.shared
            .faults
            .set(Fault::Refuse, Window::from_duration(duration));
        let mut listening = self.shared.listening.subscribe();
        tokio::select! {
            _ = listening.wait_for(|l| !*l) => {}
            () = self.shared.faults.over(Fault::Refuse) => {}
        }
    }

    /// Ends [`refuse_connections`](Self::refuse_connections) and returns once the port
    /// is bound again.
    pub async fn accept_connections(&self) {
        self.shared.faults.set(Fault::Refuse, Window::Off);
        let mut listening = self.shared.listening.subscribe();
        let mut shutdown = self.shared.shutdown.subscribe();
        // After a shutdown there is nothing to wait for.
        tokio::select! {
            _ = listening.wait_for(|l| *l) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }

    /// Answers every request with a 500 `InternalError` for `duration` (or, with `None`,
    /// until [`stop_failing_requests`](Self::stop_failing_requests)). Open watches keep
    /// streaming.
    pub fn fail_requests(&self, duration: Option<Duration>) {
        self.shared
            .faults
            .set(Fault::Fail, Window::from_duration(duration));
    }

    /// Ends [`fail_requests`](Self::fail_requests).
    pub fn stop_failing_requests(&self) {
        self.shared.faults.set(Fault::Fail, Window::Off);
    }

    /// Holds every request unanswered, and pauses every open watch (no events, no
    /// bookmarks, no timeouts), for `duration` (or, with `None`, until
    /// [`stop_stalling`](Self::stop_stalling)). Afterwards held requests are answered
    /// and watches resume where they were.
    pub fn stall_requests(&self, duration: Option<Duration>) {
        self.shared
            .faults
            .set(Fault::Stall, Window::from_duration(duration));
    }

    /// Ends [`stall_requests`](Self::stall_requests).
    pub fn stop_stalling(&self) {
        self.shared.faults.set(Fault::Stall, Window::Off);
    }

    /// Stalls every watch open now, of `resource` (or, with `None`, of every resource):
    /// it stays open but sends nothing more — no event, no bookmark, no end at its
    /// timeout — until its client gives up (or [`restart`](Self::restart) cuts it).
    /// Everything else is served as usual, watches started later included: a client that
    /// notices the stall and watches again gets the events it missed. One order stalls the
    /// watches open when it is given, not later ones.
    pub fn stall_open_watches(&self, resource: Option<Resource>) {
        self.shared.faults.stall_open_watches(resource);
    }

    /// Ends every timed fault (refusing, failing, stalling).
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    // ----- counters -------------------------------------------------------------------

    /// A snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Polls the counters (every 10 ms) until `condition` holds; false on timeout.
    /// Handy to wait until a client has its watches open.
    pub async fn wait_for_stats(
        &self,
        timeout: Duration,
        condition: impl Fn(&Stats) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(&self.stats()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn resource_of(object: &Value) -> Result<Resource, ApiError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let (group, _) = split_api_version(api_version);
    Resource::from_group_kind(group, kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no resource is served for apiVersion {api_version:?}, kind {kind:?}"
        ))
    })
}

fn namespace_of(resource: Resource, object: &Value) -> Option<String> {
    resource.namespaced().then(|| {
        meta_str(object, "namespace")
            .unwrap_or("default")
            .to_owned()
    })
}
