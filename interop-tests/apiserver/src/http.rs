//! Request handling: faults, routing, and the list/watch/CRUD verbs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::body::Body;
use crate::discovery;
use crate::error::ApiError;
use crate::faults::Fault;
use crate::openapi;
use crate::patch::{PatchType, apply_patch, parse_body};
use crate::route::{self, Route, Scope};
use crate::selector::{FieldSelector, LabelSelector, ObjectFilter};
use crate::server::Shared;
use crate::store::Target;
use crate::watch::{self, WatchRequest};
use crate::wire::Wire;

/// The query parameters this server understands (others are ignored).
#[derive(Debug, Default)]
struct Query {
    watch: bool,
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<usize>,
    continue_token: Option<String>,
    resource_version: Option<String>,
    timeout_seconds: Option<u64>,
    allow_bookmarks: bool,
    send_initial_events: bool,
    field_manager: Option<String>,
    dry_run: bool,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Self::default();
        let truthy = |v: &str| v == "true" || v == "1";
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key}: {v:?}")))
            };
            match key.as_ref() {
                "watch" => q.watch = truthy(&value),
                "labelSelector" => q.label_selector = Some(value.into_owned()),
                "fieldSelector" => q.field_selector = Some(value.into_owned()),
                "limit" => q.limit = Some(usize::try_from(number(&value)?).unwrap_or(usize::MAX)),
                "continue" => q.continue_token = Some(value.into_owned()).filter(|c| !c.is_empty()),
                "resourceVersion" => q.resource_version = Some(value.into_owned()),
                "timeoutSeconds" => q.timeout_seconds = Some(number(&value)?),
                "allowWatchBookmarks" => q.allow_bookmarks = truthy(&value),
                "sendInitialEvents" => q.send_initial_events = truthy(&value),
                "fieldManager" => q.field_manager = Some(value.into_owned()),
                "dryRun" => q.dry_run = !value.is_empty(),
                _ => {}
            }
        }
        Ok(q)
    }

    fn filter(&self, scope: &Scope) -> Result<ObjectFilter, ApiError> {
        Ok(ObjectFilter {
            resource: scope.resource,
            namespace: scope.namespace.clone(),
            labels: LabelSelector::parse(self.label_selector.as_deref().unwrap_or(""))?,
            fields: FieldSelector::parse(self.field_selector.as_deref().unwrap_or(""))?,
        })
    }
}

/// hyper's entry point: never fails, errors become `Status` responses.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = match dispatch(&shared, request).await {
        Ok(response) => response,
        Err(error) => json_response(
            StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error.to_status(),
        ),
    };
    tracing::debug!(%method, %uri, status = response.status().as_u16(), "request");
    Ok(response)
}

async fn dispatch(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    shared.stats.request();
    if shared.faults.active(Fault::Stall) {
        shared.faults.over(Fault::Stall).await;
    }
    if shared.faults.active(Fault::Fail) {
        shared.stats.injected_failure();
        return Err(ApiError::internal(
            "injected fault: the server is failing every request",
        ));
    }
    let (parts, body) = request.into_parts();
    let rg = shared.store.reference_grant_versions();
    let route = route::parse(parts.uri.path(), rg)?;
    let query = Query::parse(parts.uri.query())?;
    if query.dry_run {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this test server",
        ));
    }
    let body = body
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let method = parts.method;
    let ok = |value: &Value| Ok(json_response(StatusCode::OK, value));
    let accept = parts
        .headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let aggregated = discovery::wants_aggregated(&accept);
    match route {
        Route::Version => ok(&discovery::version()),
        Route::Health => Ok(Response::new(Body::full("ok"))),
        Route::CoreVersions | Route::GroupList if aggregated => {
            let doc = discovery::aggregated(route == Route::CoreVersions, rg);
            let mut response = json_response(StatusCode::OK, &doc);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
            );
            Ok(response)
        }
        Route::CoreVersions => ok(&discovery::core_versions(shared.addr)),
        Route::OpenApiRoot => ok(&openapi::root(rg)),
        Route::OpenApiGroupVersion { group, version } => {
            ok(&openapi::group_version(&group, &version, rg).ok_or_else(ApiError::no_route)?)
        }
        Route::GroupList => ok(&discovery::group_list(rg)),
        Route::Group(group) => ok(&discovery::group(&group, rg)),
        Route::ResourceList { group, version } => {
            ok(&discovery::resource_list(&group, &version, rg))
        }
        Route::Collection(scope) => {
            let wire = Wire::new(&scope, &accept);
            match method {
                Method::GET if query.watch => watch(shared, &scope, &query, wire),
                Method::GET => list(shared, &scope, &query, &wire),
                Method::POST => create(shared, &scope, &body, &content_type, &wire),
                Method::DELETE => delete_collection(shared, &scope, &query, &wire),
                other => Err(ApiError::method_not_allowed(&other)),
            }
        }
        Route::Object {
            scope,
            name,
            status,
        } => {
            let wire = Wire::new(&scope, &accept);
            let target = if status { Target::Status } else { Target::Main };
            let request = ObjectRequest {
                shared,
                scope: &scope,
                name: &name,
                wire: &wire,
            };
            match method {
                Method::GET => request.get(),
                Method::PUT => request.replace(target, &body, &content_type),
                Method::PATCH => request.patch(target, &body, &content_type, &query),
                Method::DELETE if !status => request.delete(&body),
                other => Err(ApiError::method_not_allowed(&other)),
            }
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn list(
    shared: &Shared,
    scope: &Scope,
    query: &Query,
    wire: &Wire,
) -> Result<Response<Body>, ApiError> {
    let filter = query.filter(scope)?;
    // Continue tokens are `{rv}/{namespace}/{name}`: later pages report the first page's
    // resource version (so a watch from it replays whatever changed meanwhile), and are
    // refused once that version is compacted away, like the real server.
    let token = match &query.continue_token {
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            match (
                parts.next().and_then(|rv| rv.parse::<u64>().ok()),
                parts.next(),
                parts.next(),
            ) {
                (Some(rv), Some(ns), Some(name)) => Some((rv, ns, name)),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid continue token {token:?}"
                    )));
                }
            }
        }
        None => None,
    };
    if let Some((rv, _, _)) = token {
        shared.store.check_not_compacted(rv)?;
    }
    let page = shared
        .store
        .list(&filter, token.map(|(_, ns, name)| (ns, name)), query.limit);
    shared.stats.list(scope.resource);
    let list_rv = token.map_or(page.rv, |(rv, _, _)| rv);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some((ns, name)) = page.last_key {
        metadata["continue"] = json!(format!("{list_rv}/{ns}/{name}"));
        metadata["remainingItemCount"] = json!(page.remaining);
    }
    let items = page
        .items
        .into_iter()
        .map(|item| wire.object(item))
        .collect();
    Ok(json_response(StatusCode::OK, &wire.list(metadata, items)))
}

fn watch(
    shared: &Arc<Shared>,
    scope: &Scope,
    query: &Query,
    wire: Wire,
) -> Result<Response<Body>, ApiError> {
    let request = WatchRequest {
        filter: query.filter(scope)?,
        wire,
        from: watch::watch_from(query.resource_version.as_deref(), query.send_initial_events)?,
        timeout: query.timeout_seconds.map(Duration::from_secs),
        bookmarks: query.allow_bookmarks,
        initial_events_end: query.send_initial_events,
    };
    let mut response = Response::new(watch::start(shared, request));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Parses a create/update body: JSON, or YAML if the client says so.
fn object_body(body: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    parse_body(body)
}

fn create(
    shared: &Shared,
    scope: &Scope,
    body: &Bytes,
    content_type: &str,
    wire: &Wire,
) -> Result<Response<Body>, ApiError> {
    if scope.resource.namespaced() && scope.namespace.is_none() {
        return Err(ApiError::method_not_allowed(&Method::POST));
    }
    let object = object_body(body, content_type)?;
    let created = shared.store.create(
        scope.resource,
        scope.namespace.as_deref(),
        object,
        Target::Main,
    )?;
    shared.stats.write(scope.resource);
    Ok(json_response(StatusCode::CREATED, &wire.object(created)))
}

fn delete_collection(
    shared: &Shared,
    scope: &Scope,
    query: &Query,
    wire: &Wire,
) -> Result<Response<Body>, ApiError> {
    let filter = query.filter(scope)?;
    let page = shared.store.list(&filter, None, None);
    let mut deleted = Vec::new();
    for item in page.items {
        let ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
        let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        // Objects deleted concurrently are simply skipped.
        if let Ok(gone) = shared.store.delete(scope.resource, ns, name, (None, None)) {
            deleted.push(wire.object(gone));
        }
    }
    shared.stats.write(scope.resource);
    let metadata = json!({"resourceVersion": shared.store.resource_version().to_string()});
    Ok(json_response(StatusCode::OK, &wire.list(metadata, deleted)))
}

/// A request on one object (or its `/status`).
struct ObjectRequest<'a> {
    shared: &'a Shared,
    scope: &'a Scope,
    name: &'a str,
    wire: &'a Wire,
}

impl ObjectRequest<'_> {
    fn respond(&self, status: StatusCode, object: Value) -> Result<Response<Body>, ApiError> {
        Ok(json_response(status, &self.wire.object(object)))
    }

    fn namespace(&self) -> Option<&str> {
        self.scope.namespace.as_deref()
    }

    fn get(&self) -> Result<Response<Body>, ApiError> {
        let object = self
            .shared
            .store
            .get(self.scope.resource, self.namespace(), self.name)
            .ok_or_else(|| ApiError::not_found(self.scope.resource, self.name))?;
        self.respond(StatusCode::OK, object)
    }

    fn replace(
        &self,
        target: Target,
        body: &Bytes,
        content_type: &str,
    ) -> Result<Response<Body>, ApiError> {
        let object = object_body(body, content_type)?;
        let (stored, _) = self.shared.store.write(
            self.scope.resource,
            self.namespace(),
            self.name,
            target,
            false,
            |_| Ok(object),
        )?;
        self.shared.stats.write(self.scope.resource);
        self.respond(StatusCode::OK, stored)
    }

    fn patch(
        &self,
        target: Target,
        body: &Bytes,
        content_type: &str,
        query: &Query,
    ) -> Result<Response<Body>, ApiError> {
        let patch_type = PatchType::from_content_type(content_type)?;
        let apply = patch_type == PatchType::Apply;
        if apply && query.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let (stored, created) = self.shared.store.write(
            self.scope.resource,
            self.namespace(),
            self.name,
            target,
            // Server-side apply creates missing objects; other patches need one to patch.
            apply && target == Target::Main,
            |current| match current {
                Some(current) => apply_patch(current, patch_type, body),
                None => parse_body(body),
            },
        )?;
        self.shared.stats.write(self.scope.resource);
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        self.respond(status, stored)
    }

    fn delete(&self, body: &Bytes) -> Result<Response<Body>, ApiError> {
        let options = if body.is_empty() {
            Value::Null
        } else {
            parse_body(body)?
        };
        let precondition = |field: &str| {
            options
                .get("preconditions")
                .and_then(|p| p.get(field))
                .and_then(Value::as_str)
        };
        let deleted = self.shared.store.delete(
            self.scope.resource,
            self.namespace(),
            self.name,
            (precondition("uid"), precondition("resourceVersion")),
        )?;
        self.shared.stats.write(self.scope.resource);
        self.respond(StatusCode::OK, deleted)
    }
}
