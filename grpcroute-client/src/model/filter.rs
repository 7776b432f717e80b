//! Route filters (`GRPCRouteFilter`) in validated form.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::BackendRef;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Mirror(Mirror),
    /// A filter this client cannot apply (e.g. an `ExtensionRef`). The spec forbids
    /// skipping it, so calls that reach it fail.
    Unsupported {
        kind: String,
        detail: String,
    },
}

/// `HTTPHeaderFilter`, used for gRPC metadata. At most one action per header name
/// (checked at conversion), so the order of the three lists does not matter.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct HeaderModifier {
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    pub(crate) add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the filter: `set` replaces every value, `add` appends to the existing values
    /// (folded into one `existing,added` value, the form the spec's examples and the
    /// conformance echo servers show), `remove` deletes.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            append_folded(headers, name, value);
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

fn append_folded(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let mut existing = headers.get_all(name).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(name.clone(), value.clone());
        return;
    }
    let mut joined = Vec::new();
    for v in existing {
        joined.extend_from_slice(v.as_bytes());
        joined.push(b',');
    }
    joined.extend_from_slice(value.as_bytes());
    // Both parts were valid header values and `,` is a valid value byte, so this cannot fail;
    // if it somehow did, appending a second entry is still a correct HTTP encoding.
    match HeaderValue::from_bytes(&joined) {
        Ok(folded) => {
            headers.insert(name.clone(), folded);
        }
        Err(_) => {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// `HTTPRequestMirrorFilter`: a copy of a share of the calls goes to one endpoint of the
/// backend; its response is ignored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mirror {
    /// The backend; its weight is meaningless here and always 1.
    pub(crate) backend: BackendRef,
    /// The mirrored share is `numerator / denominator` (`1/1` when neither `percent` nor
    /// `fraction` is given).
    pub(crate) numerator: u32,
    pub(crate) denominator: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &'static str) -> HeaderName {
        HeaderName::from_static(s)
    }

    fn value(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn set_overwrites_add_appends_remove_deletes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            name("x-header-set"),
            value("this-value-should-be-overwritten"),
        );
        headers.append(name("x-header-set"), value("and-this-one"));
        headers.insert(name("x-header-add"), value("this-value-should-be-appended"));
        headers.insert(name("x-header-remove"), value("gone"));
        headers.insert(name("some-other-header"), value("kept"));

        let modifier = HeaderModifier {
            set: vec![(name("x-header-set"), value("set-overwrites-values"))],
            add: vec![
                (name("x-header-add"), value("add-appends-values")),
                (name("x-header-new"), value("fresh")),
            ],
            remove: vec![name("x-header-remove"), name("x-absent")],
        };
        modifier.apply(&mut headers);

        let all = |n: &'static str| -> Vec<&str> {
            headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-header-set"), ["set-overwrites-values"]);
        assert_eq!(
            all("x-header-add"),
            ["this-value-should-be-appended,add-appends-values"]
        );
        assert_eq!(all("x-header-new"), ["fresh"]);
        assert!(all("x-header-remove").is_empty());
        assert_eq!(all("some-other-header"), ["kept"]);
    }

    #[test]
    fn add_folds_every_existing_value() {
        let mut headers = HeaderMap::new();
        headers.append(name("x-a"), value("1"));
        headers.append(name("x-a"), value("2"));
        HeaderModifier {
            add: vec![(name("x-a"), value("3"))],
            ..Default::default()
        }
        .apply(&mut headers);
        let values: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(values, [&value("1,2,3")]);
    }
}
