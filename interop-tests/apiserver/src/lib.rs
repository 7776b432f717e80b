//! A Kubernetes API server for tests.
//!
//! [`ApiServer`] serves plain HTTP/1.1 on 127.0.0.1 and speaks the real protocol well
//! enough for unmodified kube-rs clients (watchers, reflectors, `Api` CRUD, the status
//! subresource) and for `kubectl` (discovery, `apply`, `get`, `delete`). It stores the
//! kinds a GAMMA gRPC mesh reads:
//!
//! | resource | group/version | scope |
//! |---|---|---|
//! | `namespaces` | `v1` | cluster |
//! | `services` | `v1` | namespaced, `status` subresource |
//! | `endpointslices` | `discovery.k8s.io/v1` | namespaced |
//! | `grpcroutes` | `gateway.networking.k8s.io/v1` | namespaced, `status` subresource |
//! | `referencegrants` | `gateway.networking.k8s.io/v1` and/or `v1beta1` | namespaced |
//! | `leases` | `coordination.k8s.io/v1` | namespaced |
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use grpcroute_test_apiserver::{ApiServer, Resource};
//!
//! let server = ApiServer::start().await;
//! let client = server.client()?; // a kube::Client for it
//! server.apply(serde_json::json!({
//!     "apiVersion": "v1", "kind": "Service",
//!     "metadata": {"name": "echo", "namespace": "default"},
//!     "spec": {"ports": [{"port": 50051}]},
//! }))?;
//! server.compact(); // the next watch from an old resourceVersion gets 410 and relists
//! assert!(server.get(Resource::Services, "default", "echo").is_some());
//! # drop(client);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Protocol
//!
//! * LIST with `limit`/`continue`, `labelSelector` (`k=v`, `k!=v`, `k`, `!k`,
//!   `k in (..)`, `k notin (..)`), `fieldSelector` (any dotted path; `metadata.name` and
//!   `metadata.namespace` are what real servers support) and `resourceVersion`
//!   (always answered from the latest state).
//! * WATCH (`watch=true|1`) from a `resourceVersion` (history replay), from now (`""`
//!   or `"0"`: synthetic ADDED events first), or as a streaming list
//!   (`sendInitialEvents=true`: ADDED events, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end`). `timeoutSeconds` ends the body cleanly; bookmarks
//!   come every [`ApiServerBuilder::bookmark_interval`]. An object that starts or stops
//!   matching a watch's selector arrives as ADDED or DELETED. An expired version is
//!   answered with HTTP 200 and one ERROR event (`code: 410`, `reason: Expired`).
//! * GET, POST (409 `AlreadyExists`), PUT (409 `Conflict` on a stale
//!   `metadata.resourceVersion`), PATCH (merge, strategic merge, JSON patch, server-side
//!   apply), DELETE (returns the object; finalizers only set `deletionTimestamp`),
//!   DELETE on a collection, and the `/status` subresource. Preconditions in
//!   DeleteOptions are checked.
//! * Metadata: one global resource version, `uid`, `creationTimestamp`, `generation`
//!   (bumped when anything but metadata/status changes), `generateName`.
//!
//! # Faults and counters
//!
//! [`ApiServerHandle`] (cloneable; [`ApiServer`] derefs to it) can end every watch
//! ([`drop_watches`](ApiServerHandle::drop_watches)), expire every resource version
//! handed out ([`compact`](ApiServerHandle::compact)), cut every connection
//! ([`restart`](ApiServerHandle::restart)), close the port and re-bind the same one later
//! ([`refuse_connections`](ApiServerHandle::refuse_connections)), answer 500
//! ([`fail_requests`](ApiServerHandle::fail_requests)), hold requests
//! ([`stall_requests`](ApiServerHandle::stall_requests)) and leave the open watches
//! silent while serving everything else
//! ([`stall_open_watches`](ApiServerHandle::stall_open_watches)). [`Stats`] counts lists, watches
//! and open watches per [`Resource`].
//!
//! # Simplifications
//!
//! * No schema validation, no admission, no defaulting (Services get no clusterIP), no
//!   `managedFields`; namespaces need not exist before objects are created in them, and
//!   deleting a namespace deletes nothing else.
//! * Strategic merge patch knows merge keys only for `spec.ports` (Service) and
//!   `metadata.ownerReferences`, and unions `metadata.finalizers`; other lists are
//!   replaced, as they are `atomic` in the served kinds anyway.
//! * Server-side apply merges the applied configuration into the live object (maps
//!   merged, lists replaced, creates if absent). Field ownership is not tracked: `force`
//!   is irrelevant, conflicts are never reported, and fields dropped from a later apply
//!   are not removed.
//! * `dryRun` is rejected; list `resourceVersion`/`resourceVersionMatch` are accepted but
//!   always served from the latest state; later pages of a paginated list show the
//!   current state after the continue key (and report the first page's version).
//! * JSON only (YAML accepted in request bodies): a protobuf request body is answered
//!   415, which breaks kubectl's imperative generators for core kinds (`kubectl create
//!   service ...`); `kubectl apply/get/label/patch/delete` use JSON and work. No Table
//!   output (kubectl falls back to NAME/AGE columns). `PartialObjectMetadata` responses
//!   are served for clients asking for them.
//! * Discovery: legacy documents plus aggregated discovery v2 for `/api` and `/apis`.
//!   `/openapi/v3` is a skeleton that only advertises `fieldValidation` on PATCH (so
//!   kubectl ≥ 1.27 validates on the server, which accepts everything); `/openapi/v2` is
//!   404, so older kubectl (e.g. Debian's 1.20) needs `--validate=false` for `apply`.
#![forbid(unsafe_code)]

mod body;
mod discovery;
mod error;
mod faults;
mod handle;
mod http;
mod meta;
mod openapi;
mod patch;
mod resources;
mod route;
mod rules;
mod selector;
mod server;
mod stats;
mod store;
mod watch;
mod wire;

pub use error::ApiError;
pub use handle::ApiServerHandle;
pub use resources::{ReferenceGrantVersions, Resource};
pub use server::{ApiServer, ApiServerBuilder};
pub use stats::{ResourceStats, Stats};
