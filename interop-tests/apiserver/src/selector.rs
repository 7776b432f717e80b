//! Label and field selectors, and the filter a list or watch applies to objects.

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::Resource;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector`: every requirement must hold (comma means AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the set-based grammar: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
    /// `k notin (a,b)`, joined by commas.
    pub(crate) fn parse(selector: &str) -> Result<Self, ApiError> {
        let bad = |term: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid label selector term {term:?} in {selector:?}"
            ))
        };
        let mut requirements = Vec::new();
        for term in split_top_level(selector) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_owned())
            } else if let Some((key, values)) = split_set(term, " notin ") {
                Requirement::NotIn(key, values.ok_or_else(|| bad(term))?)
            } else if let Some((key, values)) = split_set(term, " in ") {
                Requirement::In(key, values.ok_or_else(|| bad(term))?)
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if term.contains(['<', '>', '(', ')', ' ']) {
                return Err(bad(term));
            } else {
                Requirement::Exists(term.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether an object's labels satisfy every requirement.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            // As in Kubernetes, `!=` also matches objects without the label.
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside parentheses (`a in (x,y),b` has two terms).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

/// `key op (a, b)` → `(key, Some([a, b]))`; `None` values when the parentheses are missing.
fn split_set(term: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (key, rest) = term.split_once(op)?;
    let values = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| {
            inner
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        });
    Some((key.trim().to_owned(), values))
}

/// A parsed `fieldSelector`: `path=value`, `path==value` or `path!=value`, comma-AND.
///
/// The real server accepts only a few fields per kind (`metadata.name` and
/// `metadata.namespace` everywhere); this one looks up any dotted path and compares its
/// string form, which is a superset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    requirements: Vec<(Vec<String>, bool, String)>,
}

impl FieldSelector {
    pub(crate) fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {term:?}"
                )));
            };
            let path = path.trim().split('.').map(str::to_owned).collect();
            requirements.push((path, equal, value.trim().to_owned()));
        }
        Ok(Self { requirements })
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(path, equal, value)| {
            let found = path
                .iter()
                .try_fold(object, |v, segment| v.get(segment))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (found == *value) == *equal
        })
    }
}

/// Which objects a list or watch returns: one resource, optionally one namespace, and
/// the selectors.
#[derive(Debug, Clone)]
pub(crate) struct ObjectFilter {
    pub(crate) resource: Resource,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl ObjectFilter {
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let namespace_ok = match &self.namespace {
            Some(ns) => {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(ns)
            }
            None => true,
        };
        namespace_ok && self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selector_grammar() -> Result<(), ApiError> {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app",
            "!missing",
            "app in (db, web)",
            "tier notin (back)",
            "app=web,tier in (front,x),!missing",
            "",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s)?.matches(&o), "{s} should match");
        }
        let no = [
            "app=db",
            "app!=web",
            "missing",
            "!app",
            "app in (db)",
            "app notin (web,x)",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s)?.matches(&o),
                "{s} should not match"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a>1").is_err());
        Ok(())
    }

    #[test]
    fn field_selector() -> Result<(), ApiError> {
        let o = obj(json!({}));
        assert!(FieldSelector::parse("metadata.name=a")?.matches(&o));
        assert!(FieldSelector::parse("metadata.name==a,metadata.namespace=ns")?.matches(&o));
        assert!(FieldSelector::parse("metadata.name!=b")?.matches(&o));
        assert!(!FieldSelector::parse("metadata.namespace=other")?.matches(&o));
        assert!(FieldSelector::parse("metadata.name").is_err());
        Ok(())
    }
}
