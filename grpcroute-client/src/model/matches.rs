//! Request matching for one `GRPCRouteMatch`: pure functions of the call's method and
//! metadata.

use std::fmt;

use http::{HeaderMap, HeaderName};
use regex::Regex;

/// Limits on configured regular expressions. The `regex` crate already guarantees linear-time
/// matching; these bound compile time and memory so a hostile route cannot exhaust the
/// process (the GRPCRoute schema bounds pattern *length*, not the compiled size).
pub(crate) const REGEX_SIZE_LIMIT: usize = 256 * 1024;
const REGEX_DFA_SIZE_LIMIT: usize = 1024 * 1024;
const REGEX_NEST_LIMIT: u32 = 64;

/// One string condition.
#[derive(Clone)]
pub(crate) enum StringMatch {
    /// Byte-for-byte, case-sensitive equality.
    Exact(Box<str>),
    /// A regular expression that must match the *whole* value.
    Regex { source: Box<str>, regex: Regex },
}

impl StringMatch {
    /// Compiles `pattern` as a whole-value match, within the size limits.
    pub(crate) fn regex(pattern: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()?;
        Ok(Self::Regex {
            source: pattern.into(),
            regex,
        })
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(expected) => **expected == *value,
            Self::Regex { regex, .. } => regex.is_match(value),
        }
    }

    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(expected) => expected.as_bytes() == value,
            // Header values that are not UTF-8 cannot match a pattern written as text.
            Self::Regex { regex, .. } => {
                std::str::from_utf8(value).is_ok_and(|v| regex.is_match(v))
            }
        }
    }

    /// The number of characters the spec's precedence counts: the configured text, which
    /// for a regular expression is the pattern itself.
    pub(crate) fn precedence_len(&self) -> usize {
        match self {
            Self::Exact(s) => s.chars().count(),
            Self::Regex { source, .. } => source.chars().count(),
        }
    }

    pub(crate) fn is_exact(&self) -> bool {
        matches!(self, Self::Exact(_))
    }

    pub(crate) fn text(&self) -> &str {
        match self {
            Self::Exact(s) => s,
            Self::Regex { source, .. } => source,
        }
    }
}

impl PartialEq for StringMatch {
    fn eq(&self, other: &Self) -> bool {
        self.is_exact() == other.is_exact() && self.text() == other.text()
    }
}

impl fmt::Debug for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(s) => write!(f, "Exact({s:?})"),
            Self::Regex { source, .. } => write!(f, "Regex({source:?})"),
        }
    }
}

/// `GRPCMethodMatch`: at least one of the two is set (validated at conversion).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MethodMatch {
    pub(crate) service: Option<StringMatch>,
    pub(crate) method: Option<StringMatch>,
}

impl MethodMatch {
    pub(crate) fn matches(&self, service: &str, method: &str) -> bool {
        self.service.as_ref().is_none_or(|m| m.matches(service))
            && self.method.as_ref().is_none_or(|m| m.matches(method))
    }

    /// The exact service this match is limited to, if any: the key of the router's index.
    pub(crate) fn exact_service(&self) -> Option<&str> {
        match &self.service {
            Some(StringMatch::Exact(s)) => Some(s),
            _ => None,
        }
    }
}

/// `GRPCHeaderMatch`, with the name already lower-cased (metadata keys are
/// case-insensitive).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeaderMatch {
    pub(crate) name: HeaderName,
    pub(crate) value: StringMatch,
}

impl HeaderMatch {
    /// Matches a request's metadata. A key sent several times is compared as the values
    /// joined with `,` (what an HTTP/2 peer may legally fold them into, and what gRPC's own
    /// xDS clients do); binary (`-bin`) metadata never matches, as in gRPC's xDS clients,
    /// because its wire form is base64 of arbitrary bytes.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        if self.name.as_str().ends_with("-bin") {
            return false;
        }
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return false;
        };
        match values.next() {
            None => self.value.matches_bytes(first.as_bytes()),
            Some(second) => {
                let mut joined = Vec::with_capacity(first.len() + second.len() + 1);
                joined.extend_from_slice(first.as_bytes());
                for v in std::iter::once(second).chain(values) {
                    joined.push(b',');
                    joined.extend_from_slice(v.as_bytes());
                }
                self.value.matches_bytes(&joined)
            }
        }
    }
}

/// `GRPCRouteMatch`: every condition must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RouteMatch {
    pub(crate) method: Option<MethodMatch>,
    /// Already de-duplicated: of equivalent names only the first entry is kept, as the spec
    /// requires.
    pub(crate) headers: Vec<HeaderMatch>,
}

impl RouteMatch {
    /// Like [`RouteMatch::matches`] for a candidate found by an index on its exact
    /// service: the service is known to match and is not compared again.
    pub(crate) fn matches_indexed(&self, method: &str, headers: &HeaderMap) -> bool {
        self.method
            .as_ref()
            .and_then(|m| m.method.as_ref())
            .is_none_or(|m| m.matches(method))
            && self.headers.iter().all(|h| h.matches(headers))
    }

    pub(crate) fn matches(&self, service: &str, method: &str, headers: &HeaderMap) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.matches(service, method))
            && self.headers.iter().all(|h| h.matches(headers))
    }

    pub(crate) fn service_len(&self) -> usize {
        self.method
            .as_ref()
            .and_then(|m| m.service.as_ref())
            .map_or(0, StringMatch::precedence_len)
    }

    pub(crate) fn method_len(&self) -> usize {
        self.method
            .as_ref()
            .and_then(|m| m.method.as_ref())
            .map_or(0, StringMatch::precedence_len)
    }
}

/// Splits a gRPC request path `/package.Service/Method` into service and method. Anything
/// else yields two empty strings, which no method match accepts.
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    path.strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .filter(|(service, method)| {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        })
        .unwrap_or(("", ""))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn exact(s: &str) -> StringMatch {
        StringMatch::Exact(s.into())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn split_path_accepts_only_grpc_paths() {
        assert_eq!(split_path("/pkg.Svc/Method"), ("pkg.Svc", "Method"));
        assert_eq!(split_path("/pkg.Svc/"), ("", ""));
        assert_eq!(split_path("//Method"), ("", ""));
        assert_eq!(split_path("/a/b/c"), ("", ""));
        assert_eq!(split_path("no-slash"), ("", ""));
    }

    #[test]
    fn exact_method_match_forms() {
        let both = MethodMatch {
            service: Some(exact("pkg.Svc")),
            method: Some(exact("Get")),
        };
        assert!(both.matches("pkg.Svc", "Get"));
        assert!(!both.matches("pkg.Svc", "get"), "case-sensitive");
        assert!(!both.matches("pkg.Svc", "Put"));
        assert!(!both.matches("pkg.Other", "Get"));

        let service_only = MethodMatch {
            service: Some(exact("pkg.Svc")),
            method: None,
        };
        assert!(service_only.matches("pkg.Svc", "Anything"));
        assert!(!service_only.matches("pkg.Svc2", "Anything"));

        let method_only = MethodMatch {
            service: None,
            method: Some(exact("Get")),
        };
        assert!(method_only.matches("any.Service", "Get"));
        assert!(!method_only.matches("any.Service", "Gets"));
    }

    #[test]
    fn regex_is_a_full_match() {
        let m = MethodMatch {
            service: Some(StringMatch::regex(r"pkg\.v[0-9]+\.Svc").unwrap()),
            method: Some(StringMatch::regex("Get.*").unwrap()),
        };
        assert!(m.matches("pkg.v1.Svc", "GetUser"));
        assert!(
            !m.matches("xpkg.v1.Svc", "GetUser"),
            "anchored at the start"
        );
        assert!(!m.matches("pkg.v1.Svcx", "GetUser"), "anchored at the end");
        assert!(!m.matches("pkg.v1.Svc", "ListUsers"));
        // Alternation must not escape the anchors.
        let alt = StringMatch::regex("a|b").unwrap();
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab"));
    }

    #[test]
    fn regex_bombs_are_rejected_at_compile_time() {
        assert!(StringMatch::regex("a{5}{5}{5}{5}{5}{5}{5}").is_err());
        assert!(StringMatch::regex(&"(".repeat(200)).is_err());
        // A pathological-for-backtracking pattern compiles and runs in linear time.
        let evil = StringMatch::regex("(a+)+$").unwrap();
        let long = "a".repeat(64 * 1024) + "!";
        assert!(!evil.matches(&long));
    }

    #[test]
    fn header_names_case_insensitive_values_case_sensitive() {
        let m = HeaderMatch {
            name: HeaderName::from_static("x-experiment-group"),
            value: exact("treatment-a"),
        };
        // HeaderMap keys are lower-case by construction, so an upper-case key sent by a
        // client ("X-Experiment-Group") arrives as this one.
        assert!(m.matches(&headers(&[("X-Experiment-Group", "treatment-a")])));
        assert!(!m.matches(&headers(&[("x-experiment-group", "Treatment-A")])));
        assert!(!m.matches(&headers(&[])));
    }

    #[test]
    fn repeated_metadata_is_matched_joined() {
        let m = HeaderMatch {
            name: HeaderName::from_static("x-tag"),
            value: exact("a,b"),
        };
        assert!(m.matches(&headers(&[("x-tag", "a"), ("x-tag", "b")])));
        assert!(!m.matches(&headers(&[("x-tag", "a")])));
    }

    #[test]
    fn binary_metadata_never_matches() {
        let m = HeaderMatch {
            name: HeaderName::from_static("x-token-bin"),
            value: exact("AAEC"),
        };
        assert!(!m.matches(&headers(&[("x-token-bin", "AAEC")])));
    }

    #[test]
    fn header_regex_matches_whole_value() {
        let m = HeaderMatch {
            name: HeaderName::from_static("x-tenant"),
            value: StringMatch::regex("gold-[a-z]+").unwrap(),
        };
        assert!(m.matches(&headers(&[("x-tenant", "gold-acme")])));
        assert!(!m.matches(&headers(&[("x-tenant", "gold-acme-1")])));
    }

    #[test]
    fn empty_match_matches_everything_and_conditions_are_anded() {
        let everything = RouteMatch::default();
        assert!(everything.matches("", "", &HeaderMap::new()));

        let both = RouteMatch {
            method: Some(MethodMatch {
                service: Some(exact("pkg.Svc")),
                method: None,
            }),
            headers: vec![HeaderMatch {
                name: HeaderName::from_static("version"),
                value: exact("two"),
            }],
        };
        assert!(both.matches("pkg.Svc", "M", &headers(&[("version", "two")])));
        assert!(!both.matches("pkg.Svc", "M", &headers(&[("version", "one")])));
        assert!(!both.matches("pkg.Other", "M", &headers(&[("version", "two")])));
    }

    #[test]
    fn precedence_lengths_count_configured_characters() {
        let m = RouteMatch {
            method: Some(MethodMatch {
                service: Some(exact("pkg.Svc")),
                method: Some(StringMatch::regex("G.t").unwrap()),
            }),
            headers: vec![],
        };
        assert_eq!(m.service_len(), 7);
        assert_eq!(m.method_len(), 3);
        assert_eq!(RouteMatch::default().service_len(), 0);
    }
}
