//! Filters, for rules and for backendRefs. The generated API types repeat the same shapes
//! under two names (`GrpcRouteRulesFilters*` and `GrpcRouteRulesBackendRefsFilters*`); a
//! small macro gives both one converter instead of two copies.

use std::collections::HashSet;

use gateway_api::grpcroutes as api;
use http::{HeaderName, HeaderValue};

use super::{InvalidObject, ObjectKind, port};
use crate::model::{BackendRef, Filter, HeaderModifier, Mirror, ObjectKey};

const MAX_HEADER_ACTIONS: usize = 16;
const MAX_HEADER_VALUE_LEN: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
    ExtensionRef,
}

/// The parts of a filter, whichever of the two generated types it came from.
pub(super) struct RawFilter<'a> {
    kind: FilterType,
    request_headers: Option<RawHeaders<'a>>,
    response_headers: Option<RawHeaders<'a>>,
    mirror: Option<RawMirror<'a>>,
    extension: Option<(&'a str, &'a str, &'a str)>,
}

struct RawHeaders<'a> {
    set: Vec<(&'a str, &'a str)>,
    add: Vec<(&'a str, &'a str)>,
    remove: &'a [String],
}

struct RawMirror<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: &'a str,
    port: Option<i32>,
    percent: Option<i32>,
    fraction: Option<(i32, Option<i32>)>,
}

macro_rules! raw_filter {
    ($filter:ty, $type:ident) => {
        impl<'a> From<&'a $filter> for RawFilter<'a> {
            fn from(f: &'a $filter) -> Self {
                RawFilter {
                    kind: match f.r#type {
                        api::$type::RequestHeaderModifier => FilterType::RequestHeaderModifier,
                        api::$type::ResponseHeaderModifier => FilterType::ResponseHeaderModifier,
                        api::$type::RequestMirror => FilterType::RequestMirror,
                        api::$type::ExtensionRef => FilterType::ExtensionRef,
                    },
                    request_headers: f.request_header_modifier.as_ref().map(|h| RawHeaders {
                        set: h
                            .set
                            .iter()
                            .flatten()
                            .map(|s| (s.name.as_str(), s.value.as_str()))
                            .collect(),
                        add: h
                            .add
                            .iter()
                            .flatten()
                            .map(|s| (s.name.as_str(), s.value.as_str()))
                            .collect(),
                        remove: h.remove.as_deref().unwrap_or_default(),
                    }),
                    response_headers: f.response_header_modifier.as_ref().map(|h| RawHeaders {
                        set: h
                            .set
                            .iter()
                            .flatten()
                            .map(|s| (s.name.as_str(), s.value.as_str()))
                            .collect(),
                        add: h
                            .add
                            .iter()
                            .flatten()
                            .map(|s| (s.name.as_str(), s.value.as_str()))
                            .collect(),
                        remove: h.remove.as_deref().unwrap_or_default(),
                    }),
                    mirror: f.request_mirror.as_ref().map(|m| RawMirror {
                        group: m.backend_ref.group.as_deref(),
                        kind: m.backend_ref.kind.as_deref(),
                        namespace: m.backend_ref.namespace.as_deref(),
                        name: &m.backend_ref.name,
                        port: m.backend_ref.port,
                        percent: m.percent,
                        fraction: m.fraction.as_ref().map(|f| (f.numerator, f.denominator)),
                    }),
                    extension: f
                        .extension_ref
                        .as_ref()
                        .map(|e| (e.group.as_str(), e.kind.as_str(), e.name.as_str())),
                }
            }
        }
    };
}

raw_filter!(api::GrpcRouteRulesFilters, GrpcRouteRulesFiltersType);
raw_filter!(
    api::GrpcRouteRulesBackendRefsFilters,
    GrpcRouteRulesBackendRefsFiltersType
);

/// Converts a rule's or a backendRef's filter list.
pub(super) fn filters<'a, F>(
    raw: &'a [F],
    key: &ObjectKey,
    path: &str,
) -> Result<Vec<Filter>, InvalidObject>
where
    RawFilter<'a>: From<&'a F>,
{
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::GrpcRoute, key, field, message)
    };
    let mut seen_request = false;
    let mut seen_response = false;
    // At most one of each header filter per list (CEL), then the filter itself.
    let header_filter = |seen: &mut bool,
                         raw: Option<&RawHeaders<'_>>,
                         kind: &str,
                         field: &str|
     -> Result<HeaderModifier, InvalidObject> {
        if std::mem::replace(seen, true) {
            let path = field.rsplit_once('.').map_or(field, |(p, _)| p);
            return Err(err(
                path.to_string(),
                format!("{kind} filter cannot be repeated"),
            )
            .with_reason("IncompatibleFilters"));
        }
        let Some(raw) = raw else {
            unreachable_filter_shape()
        };
        header_modifier(raw, field).map_err(|(f, m)| err(f, m))
    };
    let mut out = Vec::with_capacity(raw.len());
    for (i, f) in raw.iter().enumerate() {
        let f = RawFilter::from(f);
        let path = format!("{path}[{i}]");
        // CEL: the config field must be set if and only if it matches `type`.
        let present = [
            (
                FilterType::RequestHeaderModifier,
                f.request_headers.is_some(),
                "requestHeaderModifier",
            ),
            (
                FilterType::ResponseHeaderModifier,
                f.response_headers.is_some(),
                "responseHeaderModifier",
            ),
            (
                FilterType::RequestMirror,
                f.mirror.is_some(),
                "requestMirror",
            ),
            (
                FilterType::ExtensionRef,
                f.extension.is_some(),
                "extensionRef",
            ),
        ];
        for (kind, is_set, field) in present {
            if (kind == f.kind) != is_set {
                let message = if is_set {
                    format!("must be unset when type is not {field}")
                } else {
                    "must be specified for this filter type".to_string()
                };
                return Err(err(format!("{path}.{field}"), message));
            }
        }
        let filter = match f.kind {
            FilterType::RequestHeaderModifier => Filter::RequestHeaders(header_filter(
                &mut seen_request,
                f.request_headers.as_ref(),
                "RequestHeaderModifier",
                &format!("{path}.requestHeaderModifier"),
            )?),
            FilterType::ResponseHeaderModifier => Filter::ResponseHeaders(header_filter(
                &mut seen_response,
                f.response_headers.as_ref(),
                "ResponseHeaderModifier",
                &format!("{path}.responseHeaderModifier"),
            )?),
            FilterType::RequestMirror => {
                let Some(m) = &f.mirror else {
                    unreachable_filter_shape()
                };
                Filter::Mirror(mirror(m, key, &format!("{path}.requestMirror"))?)
            }
            FilterType::ExtensionRef => {
                let (group, kind, name) = f.extension.unwrap_or_default();
                Filter::Unsupported {
                    kind: "ExtensionRef".into(),
                    detail: format!(
                        "extension {kind}.{group} {name:?} is not supported by this client"
                    ),
                }
            }
        };
        out.push(filter);
    }
    Ok(out)
}

// The loop above returns an error whenever the config field of the declared type is
// missing, so the `let ... else` branches that call this cannot be reached.
fn unreachable_filter_shape() -> ! {
    unreachable!("filter config presence is checked before conversion")
}

type FieldError = (String, String);

fn header_modifier(raw: &RawHeaders<'_>, path: &str) -> Result<HeaderModifier, FieldError> {
    // "Only one action for a given header name is permitted."
    let mut names: HashSet<HeaderName> = HashSet::new();
    let mut claim = |name: &HeaderName, field: &str| -> Result<(), FieldError> {
        if names.insert(name.clone()) {
            Ok(())
        } else {
            Err((
                field.to_string(),
                format!("header {name:?} is given more than one action"),
            ))
        }
    };
    let mut out = HeaderModifier::default();
    for (list, entries, target) in [
        ("set", &raw.set, &mut out.set),
        ("add", &raw.add, &mut out.add),
    ] {
        if entries.len() > MAX_HEADER_ACTIONS {
            return Err((
                format!("{path}.{list}"),
                format!("at most {MAX_HEADER_ACTIONS} entries are allowed"),
            ));
        }
        for (i, (name, value)) in entries.iter().enumerate() {
            let field = format!("{path}.{list}[{i}]");
            let name = super::route::header_name(name).map_err(|m| (format!("{field}.name"), m))?;
            claim(&name, &format!("{field}.name"))?;
            if value.is_empty() || value.len() > MAX_HEADER_VALUE_LEN {
                return Err((
                    format!("{field}.value"),
                    format!("must be 1-{MAX_HEADER_VALUE_LEN} characters"),
                ));
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                (
                    format!("{field}.value"),
                    "contains characters not allowed in a header value".to_string(),
                )
            })?;
            target.push((name, value));
        }
    }
    if raw.remove.len() > MAX_HEADER_ACTIONS {
        return Err((
            format!("{path}.remove"),
            format!("at most {MAX_HEADER_ACTIONS} entries are allowed"),
        ));
    }
    for (i, name) in raw.remove.iter().enumerate() {
        let field = format!("{path}.remove[{i}]");
        let name = super::route::header_name(name).map_err(|m| (field.clone(), m))?;
        claim(&name, &field)?;
        out.remove.push(name);
    }
    Ok(out)
}

fn mirror(m: &RawMirror<'_>, key: &ObjectKey, path: &str) -> Result<Mirror, InvalidObject> {
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::GrpcRoute, key, field, message)
    };
    let (numerator, denominator) = match (m.percent, m.fraction) {
        (Some(_), Some(_)) => {
            return Err(err(
                path.to_string(),
                "only one of percent or fraction may be specified".into(),
            ));
        }
        (Some(p @ 0..=100), None) => (p.unsigned_abs(), 100),
        (Some(p), None) => {
            return Err(err(
                format!("{path}.percent"),
                format!("{p} is outside 0-100"),
            ));
        }
        (None, Some((num, den))) => {
            let den = den.unwrap_or(100);
            if den < 1 {
                return Err(err(
                    format!("{path}.fraction.denominator"),
                    format!("{den} must be at least 1"),
                ));
            }
            if !(0..=den).contains(&num) {
                return Err(err(
                    format!("{path}.fraction.numerator"),
                    format!("{num} must be between 0 and the denominator ({den})"),
                ));
            }
            (num.unsigned_abs(), den.unsigned_abs())
        }
        // "If neither field is specified, 100% of requests will be mirrored."
        (None, None) => (1, 1),
    };
    let backend = object_reference(
        m.group,
        m.kind,
        m.namespace,
        m.name,
        m.port,
        key,
        &format!("{path}.backendRef"),
    )?;
    Ok(Mirror {
        backend,
        numerator,
        denominator,
    })
}

/// A `BackendObjectReference` with its defaults. Weight and filters are the caller's.
pub(super) fn object_reference(
    group: Option<&str>,
    kind: Option<&str>,
    namespace: Option<&str>,
    name: &str,
    raw_port: Option<i32>,
    key: &ObjectKey,
    path: &str,
) -> Result<BackendRef, InvalidObject> {
    let err = |field: String, message: String| {
        InvalidObject::new(ObjectKind::GrpcRoute, key, field, message)
    };
    if name.is_empty() {
        return Err(err(format!("{path}.name"), "is required".into()));
    }
    let port = match raw_port {
        None => None,
        Some(v) => Some(
            port(v)
                .ok_or_else(|| err(format!("{path}.port"), format!("{v} is outside 1-65535")))?,
        ),
    };
    Ok(BackendRef {
        group: group.unwrap_or_default().to_string(),
        kind: kind.unwrap_or("Service").to_string(),
        namespace: namespace.unwrap_or(key.namespace()).to_string(),
        name: name.to_string(),
        port,
        weight: 1,
        filters: Vec::new(),
    })
}
