//! ReferenceGrant → model. `v1` and `v1beta1` have the same shape; both arrive here as the
//! `v1` type.

use gateway_api::referencegrants::ReferenceGrant as RawGrant;

use super::{InvalidObject, ObjectKind, object_key};
use crate::model::{GrantFrom, GrantTo, ReferenceGrant};

pub(crate) fn reference_grant(
    raw: &RawGrant,
    default_namespace: &str,
) -> Result<ReferenceGrant, InvalidObject> {
    let key = object_key(ObjectKind::ReferenceGrant, &raw.metadata, default_namespace)?;
    let err = |field: String, message: &str| {
        InvalidObject::new(ObjectKind::ReferenceGrant, &key, field, message)
    };
    if raw.spec.from.is_empty() {
        return Err(err("spec.from".into(), "at least one entry is required"));
    }
    if raw.spec.to.is_empty() {
        return Err(err("spec.to".into(), "at least one entry is required"));
    }
    let mut from = Vec::with_capacity(raw.spec.from.len());
    for (i, f) in raw.spec.from.iter().enumerate() {
        if f.kind.is_empty() {
            return Err(err(format!("spec.from[{i}].kind"), "is required"));
        }
        if f.namespace.is_empty() {
            return Err(err(format!("spec.from[{i}].namespace"), "is required"));
        }
        from.push(GrantFrom {
            group: f.group.clone(),
            kind: f.kind.clone(),
            namespace: f.namespace.clone(),
        });
    }
    let mut to = Vec::with_capacity(raw.spec.to.len());
    for (i, t) in raw.spec.to.iter().enumerate() {
        if t.kind.is_empty() {
            return Err(err(format!("spec.to[{i}].kind"), "is required"));
        }
        to.push(GrantTo {
            group: t.group.clone(),
            kind: t.kind.clone(),
            name: t.name.clone().filter(|n| !n.is_empty()),
        });
    }
    Ok(ReferenceGrant { key, from, to })
}
