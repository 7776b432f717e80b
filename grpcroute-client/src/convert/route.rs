//! GRPCRoute (`gateway.networking.k8s.io/v1`) → [`model::GrpcRoute`].

use gateway_api::grpcroutes::{
    GrpcRoute as RawRoute, GrpcRouteParentRefs, GrpcRouteRules, GrpcRouteRulesBackendRefs,
    GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType,
};
use http::HeaderName;

use super::{InvalidObject, ObjectKind, filter, is_dns_subdomain, object_key, port};
use crate::model::{
    self, BackendRef, HeaderMatch, MethodMatch, ObjectKey, ParentRef, RouteMatch, Rule, StringMatch,
};

// Limits from the GRPCRoute CRD (v1.6.1) and its CEL rules.
const MAX_PARENT_REFS: usize = 32;
const MAX_RULES: usize = 16;
const MAX_MATCHES_PER_RULE: usize = 64;
const MAX_MATCHES_PER_ROUTE: usize = 128;
const MAX_HEADER_MATCHES: usize = 16;
const MAX_FILTERS: usize = 16;
const MAX_BACKEND_REFS: usize = 16;
const MAX_METHOD_LEN: usize = 1024;
const MAX_HEADER_NAME_LEN: usize = 256;
const MAX_HEADER_VALUE_LEN: usize = 4096;
const MAX_WEIGHT: i32 = 1_000_000;

/// Converts one GRPCRoute, rejecting it whole if any field is invalid (the API server would
/// have refused it, and routing half a route would be a surprise).
pub(crate) fn grpc_route(
    raw: &RawRoute,
    default_namespace: &str,
) -> Result<model::GrpcRoute, InvalidObject> {
    let key = object_key(ObjectKind::GrpcRoute, &raw.metadata, default_namespace)?;
    let generation = raw.metadata.generation;
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::GrpcRoute, &key, field, message)
    };

    // Parent refs first, so a route rejected for a later field still gets a status.
    let raw_parents = raw.spec.parent_refs.as_deref().unwrap_or_default();
    let mut parent_refs = Vec::with_capacity(raw_parents.len());
    let mut parent_error = None;
    for (i, p) in raw_parents.iter().enumerate() {
        match parent_ref(p, &key) {
            Ok(p) => parent_refs.push(p),
            Err(message) => {
                parent_error.get_or_insert_with(|| err(format!("spec.parentRefs[{i}]"), message));
            }
        }
    }
    let with_context = |e: InvalidObject| e.with_route_context(&parent_refs, generation);
    if let Some(e) = parent_error {
        return Err(with_context(e));
    }
    if raw_parents.len() > MAX_PARENT_REFS {
        return Err(with_context(err(
            "spec.parentRefs".into(),
            format!(
                "at most {MAX_PARENT_REFS} parentRefs are allowed, found {}",
                raw_parents.len()
            ),
        )));
    }

    let raw_rules = raw.spec.rules.as_deref().unwrap_or_default();
    if raw_rules.len() > MAX_RULES {
        return Err(with_context(err(
            "spec.rules".into(),
            format!(
                "at most {MAX_RULES} rules are allowed, found {}",
                raw_rules.len()
            ),
        )));
    }
    let total_matches: usize = raw_rules
        .iter()
        .map(|r| r.matches.as_ref().map_or(0, Vec::len))
        .sum();
    if total_matches > MAX_MATCHES_PER_ROUTE {
        return Err(with_context(err(
            "spec.rules".into(),
            format!(
                "at most {MAX_MATCHES_PER_ROUTE} matches are allowed across all rules, found {total_matches}"
            ),
        )));
    }

    let mut rules = Vec::with_capacity(raw_rules.len());
    let mut names = std::collections::HashSet::new();
    for (i, r) in raw_rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let rule = rule(r, &key, &path).map_err(with_context)?;
        if let Some(name) = &rule.name
            && !names.insert(name.clone())
        {
            return Err(with_context(err(
                format!("{path}.name"),
                format!("rule name {name:?} is not unique within the route"),
            )));
        }
        rules.push(rule);
    }

    Ok(model::GrpcRoute {
        created: raw
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        generation,
        key,
        parent_refs,
        rules,
    })
}

/// The parentRefs of a route whose spec could not be decoded, so that its status can
/// still say why: each entry that decodes and is valid, in order; the others are skipped.
pub(super) fn readable_parent_refs(spec: &serde_json::Value, route: &ObjectKey) -> Vec<ParentRef> {
    let Some(raw) = spec.get("parentRefs").and_then(serde_json::Value::as_array) else {
        return Vec::new();
    };
    raw.iter()
        .filter_map(|p| serde_json::from_value::<GrpcRouteParentRefs>(p.clone()).ok())
        .filter_map(|p| parent_ref(&p, route).ok())
        .take(MAX_PARENT_REFS)
        .collect()
}

fn parent_ref(p: &GrpcRouteParentRefs, route: &ObjectKey) -> Result<ParentRef, String> {
    if p.name.is_empty() {
        return Err("name is required".into());
    }
    let port = match p.port {
        None => None,
        Some(v) => Some(port(v).ok_or_else(|| format!("port {v} is outside 1-65535"))?),
    };
    Ok(ParentRef {
        group: p
            .group
            .clone()
            .unwrap_or_else(|| crate::GATEWAY_GROUP.to_string()),
        kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_string()),
        namespace: p
            .namespace
            .clone()
            .unwrap_or_else(|| route.namespace().to_string()),
        name: p.name.clone(),
        port,
        section_name: p.section_name.clone().filter(|s| !s.is_empty()),
        namespace_explicit: p.namespace.is_some(),
        group_explicit: p.group.is_some(),
        kind_explicit: p.kind.is_some(),
    })
}

fn rule(r: &GrpcRouteRules, key: &ObjectKey, path: &str) -> Result<Rule, InvalidObject> {
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::GrpcRoute, key, field, message)
    };

    let name = match &r.name {
        Some(n) if !is_dns_subdomain(n) => {
            return Err(err(
                format!("{path}.name"),
                format!("{n:?} is not a valid rule name (RFC 1123 subdomain)"),
            ));
        }
        n => n.clone(),
    };

    let raw_matches = r.matches.as_deref().unwrap_or_default();
    if raw_matches.len() > MAX_MATCHES_PER_RULE {
        return Err(err(
            format!("{path}.matches"),
            format!(
                "at most {MAX_MATCHES_PER_RULE} matches are allowed, found {}",
                raw_matches.len()
            ),
        ));
    }
    let mut matches = raw_matches
        .iter()
        .enumerate()
        .map(|(i, m)| route_match(m, &format!("{path}.matches[{i}]")).map_err(|(f, m)| err(f, m)))
        .collect::<Result<Vec<_>, _>>()?;
    // "If no matches are specified, the implementation MUST match every gRPC request."
    if matches.is_empty() {
        matches.push(RouteMatch::default());
    }

    let raw_filters = r.filters.as_deref().unwrap_or_default();
    if raw_filters.len() > MAX_FILTERS {
        return Err(err(
            format!("{path}.filters"),
            format!("at most {MAX_FILTERS} filters are allowed"),
        ));
    }
    let filters = filter::filters(raw_filters, key, &format!("{path}.filters"))?;

    let raw_backends = r.backend_refs.as_deref().unwrap_or_default();
    if raw_backends.len() > MAX_BACKEND_REFS {
        return Err(err(
            format!("{path}.backendRefs"),
            format!("at most {MAX_BACKEND_REFS} backendRefs are allowed"),
        ));
    }
    let backends = raw_backends
        .iter()
        .enumerate()
        .map(|(i, b)| backend_ref(b, key, &format!("{path}.backendRefs[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Rule {
        name,
        matches,
        filters,
        backends,
    })
}

fn backend_ref(
    b: &GrpcRouteRulesBackendRefs,
    key: &ObjectKey,
    path: &str,
) -> Result<BackendRef, InvalidObject> {
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::GrpcRoute, key, field, message)
    };
    let weight = match b.weight {
        None => 1,
        Some(w @ 0..=MAX_WEIGHT) => w.unsigned_abs(),
        Some(w) => {
            return Err(err(
                format!("{path}.weight"),
                format!("{w} is outside 0-{MAX_WEIGHT}"),
            ));
        }
    };
    let raw_filters = b.filters.as_deref().unwrap_or_default();
    if raw_filters.len() > MAX_FILTERS {
        return Err(err(
            format!("{path}.filters"),
            format!("at most {MAX_FILTERS} filters are allowed"),
        ));
    }
    let filters = filter::filters(raw_filters, key, &format!("{path}.filters"))?;
    let mut backend = filter::object_reference(
        b.group.as_deref(),
        b.kind.as_deref(),
        b.namespace.as_deref(),
        &b.name,
        b.port,
        key,
        path,
    )?;
    backend.weight = weight;
    backend.filters = filters;
    Ok(backend)
}

type FieldError = (String, String);

fn route_match(m: &GrpcRouteRulesMatches, path: &str) -> Result<RouteMatch, FieldError> {
    let method = match &m.method {
        None => None,
        Some(method) => {
            let path = format!("{path}.method");
            let service = method.service.as_deref().filter(|s| !s.is_empty());
            let name = method.method.as_deref().filter(|s| !s.is_empty());
            if service.is_none() && name.is_none() {
                return Err((
                    path,
                    "one or both of 'service' or 'method' must be specified".into(),
                ));
            }
            let regex = matches!(
                method.r#type,
                Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
            );
            Some(MethodMatch {
                service: service
                    .map(|s| method_part(s, regex, is_exact_service, &format!("{path}.service")))
                    .transpose()?,
                method: name
                    .map(|s| method_part(s, regex, is_exact_method, &format!("{path}.method")))
                    .transpose()?,
            })
        }
    };

    let raw_headers = m.headers.as_deref().unwrap_or_default();
    if raw_headers.len() > MAX_HEADER_MATCHES {
        return Err((
            format!("{path}.headers"),
            format!("at most {MAX_HEADER_MATCHES} header matches are allowed"),
        ));
    }
    let mut headers: Vec<HeaderMatch> = Vec::with_capacity(raw_headers.len());
    for (i, h) in raw_headers.iter().enumerate() {
        let path = format!("{path}.headers[{i}]");
        let name = header_name(&h.name).map_err(|m| (format!("{path}.name"), m))?;
        if h.value.is_empty() || h.value.len() > MAX_HEADER_VALUE_LEN {
            return Err((
                format!("{path}.value"),
                format!("must be 1-{MAX_HEADER_VALUE_LEN} characters"),
            ));
        }
        let value = match h.r#type {
            Some(GrpcRouteRulesMatchesHeadersType::RegularExpression) => {
                StringMatch::regex(&h.value)
                    .map_err(|e| (format!("{path}.value"), regex_message(&e)))?
            }
            _ => StringMatch::Exact(h.value.as_str().into()),
        };
        // "If multiple entries specify equivalent header names, only the first entry with an
        // equivalent name MUST be considered for a match."
        if headers.iter().all(|existing| existing.name != name) {
            headers.push(HeaderMatch { name, value });
        }
    }
    Ok(RouteMatch { method, headers })
}

fn method_part(
    value: &str,
    regex: bool,
    exact_syntax: fn(&str) -> bool,
    path: &str,
) -> Result<StringMatch, FieldError> {
    if value.len() > MAX_METHOD_LEN {
        return Err((
            path.to_string(),
            format!("must be at most {MAX_METHOD_LEN} characters"),
        ));
    }
    if regex {
        return StringMatch::regex(value).map_err(|e| (path.to_string(), regex_message(&e)));
    }
    if !exact_syntax(value) {
        return Err((
            path.to_string(),
            format!("{value:?} is not a valid exact gRPC name"),
        ));
    }
    // The schema allows a leading dot on a fully qualified service (`.pkg.Svc`); the
    // request path never has one.
    Ok(StringMatch::Exact(
        value.strip_prefix('.').unwrap_or(value).into(),
    ))
}

fn regex_message(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("regular expression is too complex (compiled size exceeds {limit} bytes)")
        }
        other => format!("invalid regular expression: {other}"),
    }
}

/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`
fn is_exact_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    !s.is_empty() && s.split('.').all(is_identifier)
}

/// `^[A-Za-z_][A-Za-z_0-9]*$`
fn is_exact_method(s: &str) -> bool {
    is_identifier(s)
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `HeaderName` as the schema defines it (an HTTP token, 1-256 characters), lower-cased.
pub(super) fn header_name(name: &str) -> Result<HeaderName, String> {
    const TOKEN_PUNCT: &[u8] = b"!#$%&'*+-.^_`|~";
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
        return Err(format!("must be 1-{MAX_HEADER_NAME_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || TOKEN_PUNCT.contains(&b))
    {
        return Err(format!("{name:?} is not a valid header name"));
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name:?}: {e}"))
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
