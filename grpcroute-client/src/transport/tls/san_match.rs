//! Server authorization by `match_subject_alt_names` (xDS, gRFC A29): the server's leaf
//! certificate is accepted when any of its subject alternative names (URI, DNS, IP) is
//! matched by any matcher, with Envoy's `StringMatcher` semantics. With no matchers only
//! the chain is verified.

use std::fmt;

/// One `StringMatcher` applied to a SAN. Values are kept lower-cased when `ignore_case`.
/// Only xDS clusters make them (the type stays in every TLS build: settings carry it).
#[cfg_attr(not(feature = "xds"), allow(dead_code))]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SanMatcher {
    Exact {
        value: String,
        ignore_case: bool,
    },
    Prefix {
        value: String,
        ignore_case: bool,
    },
    Suffix {
        value: String,
        ignore_case: bool,
    },
    Contains {
        value: String,
        ignore_case: bool,
    },
    /// A full-match regex (compiled by [`CompiledSanMatcher::new`]).
    Regex(String),
}

impl fmt::Display for SanMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, value, ignore_case) = match self {
            Self::Exact { value, ignore_case } => ("exact", value, *ignore_case),
            Self::Prefix { value, ignore_case } => ("prefix", value, *ignore_case),
            Self::Suffix { value, ignore_case } => ("suffix", value, *ignore_case),
            Self::Contains { value, ignore_case } => ("contains", value, *ignore_case),
            Self::Regex(pattern) => ("safe_regex", pattern, false),
        };
        write!(f, "{kind} {value:?}")?;
        if ignore_case {
            f.write_str(" (ignore case)")?;
        }
        Ok(())
    }
}

/// A matcher ready to use: its regex compiled once per connector, not per handshake.
#[derive(Debug)]
pub(crate) struct CompiledSanMatcher {
    matcher: SanMatcher,
    regex: Option<regex::Regex>,
}

impl CompiledSanMatcher {
    /// Compiles `matcher`. A regex that does not compile (validation compiled it already,
    /// so only a resource changed under us could) matches nothing: failing closed.
    pub(crate) fn new(matcher: SanMatcher) -> Self {
        let regex = match &matcher {
            SanMatcher::Regex(pattern) => regex::Regex::new(&format!("^(?:{pattern})$")).ok(),
            _ => None,
        };
        Self { matcher, regex }
    }

    pub(crate) fn matcher(&self) -> &SanMatcher {
        &self.matcher
    }

    /// Whether `san` is matched. An `exact` matcher on a DNS SAN honours a wildcard
    /// (`*.example.com` covers one label), as gRPC does for DNS names.
    pub(crate) fn matches(&self, san: &str, is_dns: bool) -> bool {
        let folded = |ignore_case: bool| {
            if ignore_case {
                san.to_ascii_lowercase()
            } else {
                san.to_string()
            }
        };
        match &self.matcher {
            SanMatcher::Exact { value, ignore_case } => {
                let san = folded(*ignore_case);
                san == *value || (is_dns && dns_wildcard_matches(&san, value))
            }
            SanMatcher::Prefix { value, ignore_case } => folded(*ignore_case).starts_with(value),
            SanMatcher::Suffix { value, ignore_case } => folded(*ignore_case).ends_with(value),
            SanMatcher::Contains { value, ignore_case } => folded(*ignore_case).contains(value),
            SanMatcher::Regex(_) => self.regex.as_ref().is_some_and(|r| r.is_match(san)),
        }
    }
}

/// `*.example.com` (the SAN) covers `a.example.com` (the expected name), one label only.
fn dns_wildcard_matches(san: &str, expected: &str) -> bool {
    let Some(suffix) = san.strip_prefix("*.") else {
        return false;
    };
    match expected.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(matcher: SanMatcher) -> CompiledSanMatcher {
        CompiledSanMatcher::new(matcher)
    }

    #[test]
    fn each_kind_with_and_without_case() {
        let exact = m(SanMatcher::Exact {
            value: "spiffe://td/ns/a/sa/b".into(),
            ignore_case: false,
        });
        assert!(exact.matches("spiffe://td/ns/a/sa/b", false));
        assert!(!exact.matches("SPIFFE://td/ns/a/sa/b", false));
        let prefix = m(SanMatcher::Prefix {
            value: "spiffe://td/".into(),
            ignore_case: true,
        });
        assert!(prefix.matches("SPIFFE://TD/ns/x", false));
        assert!(!prefix.matches("spiffe://other/ns/x", false));
        let suffix = m(SanMatcher::Suffix {
            value: ".example.com".into(),
            ignore_case: false,
        });
        assert!(suffix.matches("a.example.com", true));
        assert!(!suffix.matches("a.example.org", true));
        let contains = m(SanMatcher::Contains {
            value: "/ns/shop/".into(),
            ignore_case: false,
        });
        assert!(contains.matches("spiffe://td/ns/shop/sa/x", false));
        assert!(!contains.matches("spiffe://td/ns/SHOP/sa/x", false));
        let regex = m(SanMatcher::Regex("spiffe://td/ns/[a-z]+/sa/x".into()));
        assert!(regex.matches("spiffe://td/ns/shop/sa/x", false));
        // Full match only.
        assert!(!regex.matches("spiffe://td/ns/shop/sa/xy", false));
    }

    #[test]
    fn exact_dns_sans_honour_one_wildcard_label() {
        let exact = m(SanMatcher::Exact {
            value: "api.example.com".into(),
            ignore_case: false,
        });
        assert!(exact.matches("*.example.com", true));
        assert!(!exact.matches("*.example.com", false), "only DNS SANs");
        assert!(!exact.matches("*.com", true));
        let deeper = m(SanMatcher::Exact {
            value: "a.api.example.com".into(),
            ignore_case: false,
        });
        assert!(!deeper.matches("*.example.com", true));
    }

    #[test]
    fn a_broken_regex_matches_nothing() {
        assert!(!m(SanMatcher::Regex("(".into())).matches("(", false));
    }

    #[test]
    fn display_names_the_kind() {
        assert_eq!(
            SanMatcher::Prefix {
                value: "spiffe://td/".into(),
                ignore_case: true
            }
            .to_string(),
            "prefix \"spiffe://td/\" (ignore case)"
        );
    }
}
