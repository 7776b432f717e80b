//! SPIFFE IDs (`spiffe://<trust domain>/<path>`) as the SPIFFE-ID specification defines
//! them, and the patterns a client expects a server's ID to match.

use std::fmt;

/// The longest SPIFFE ID the specification allows, in bytes.
const MAX_ID_LEN: usize = 2048;
/// The longest trust domain name the specification allows, in bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
const SCHEME: &str = "spiffe://";

/// A SPIFFE ID: `spiffe://<trust domain>[/<path>]`, validated as the SPIFFE-ID
/// specification says (lower-case trust domain of `[a-z0-9._-]`, path segments of
/// `[a-zA-Z0-9._-]`, none empty, `.` or `..`; no port, user, query or fragment).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Box<str>,
    /// Where the path starts in `id` (its length when there is no path).
    path_at: usize,
}

/// Why a string is not a SPIFFE ID (or pattern), or a certificate has none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// It does not start with `spiffe://`.
    #[error("{0:?} is not a SPIFFE ID: it must start with spiffe://")]
    Scheme(String),
    /// The trust domain is empty, too long or has a character outside `[a-z0-9._-]`.
    #[error(
        "{0:?} is not a SPIFFE ID: the trust domain must be 1 to 255 characters of [a-z0-9._-]"
    )]
    TrustDomain(String),
    /// A path segment is empty, `.`, `..`, or has a character outside `[a-zA-Z0-9._-]`.
    #[error(
        "{0:?} is not a SPIFFE ID: path segments must be non-empty [a-zA-Z0-9._-], not . or .."
    )]
    Path(String),
    /// Longer than 2048 bytes.
    #[error("SPIFFE ID of {0} bytes is longer than the 2048 allowed")]
    TooLong(usize),
    /// A certificate could not be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    /// A certificate has no `spiffe://` URI SAN, or more than one URI SAN (an X.509 SVID
    /// has exactly one).
    #[error(
        "the certificate is not an X.509 SVID: it has {0} URI SANs, not exactly one spiffe:// URI"
    )]
    NotAnSvid(usize),
    /// A pattern has a placeholder or wildcard where it cannot be.
    #[error("{pattern:?} is not a SPIFFE ID pattern: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    ///
    /// # Errors
    ///
    /// When `id` is not a valid SPIFFE ID.
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        if id.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(id.len()));
        }
        let rest = id
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(id.into()))?;
        let (domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !valid_trust_domain(domain) {
            return Err(SpiffeIdError::TrustDomain(id.into()));
        }
        if !path.is_empty() && !path[1..].split('/').all(valid_segment) {
            return Err(SpiffeIdError::Path(id.into()));
        }
        Ok(Self {
            id: id.into(),
            path_at: SCHEME.len() + domain.len(),
        })
    }

    /// The SPIFFE ID of an X.509 SVID (DER): its one URI SAN.
    ///
    /// This is what a server reads from the certificate its caller presented to authorize
    /// the call (see the crate's README for a tonic interceptor that does it).
    ///
    /// # Errors
    ///
    /// When the certificate cannot be parsed, has no URI SAN or several, or its URI SAN is
    /// not a valid SPIFFE ID.
    #[cfg(feature = "tls")]
    pub fn from_certificate(der: &[u8]) -> Result<Self, SpiffeIdError> {
        let names = super::san::SubjectAltNames::of(der)?;
        match names.uris.as_slice() {
            [one] => Self::parse(one),
            uris => Err(SpiffeIdError::NotAnSvid(uris.len())),
        }
    }

    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.path_at]
    }

    /// The path, e.g. `/ns/shop/sa/checkout` (empty for a trust domain's own ID).
    pub fn path(&self) -> &str {
        &self.id[self.path_at..]
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn valid_trust_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= MAX_TRUST_DOMAIN_LEN
        && domain
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A set of SPIFFE IDs a server may present: `spiffe://<trust domain>/<segments>`, where a
/// segment `*` matches any one path segment, and the trust domain `{trust_domain}` stands
/// for the client's own (read from its SVID at each handshake).
///
/// `spiffe://{trust_domain}/ns/shop/sa/*` is every service account of namespace `shop` in
/// the client's trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeIdPattern {
    /// `None`: the client's own trust domain.
    trust_domain: Option<Box<str>>,
    segments: Box<[Segment]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Literal(Box<str>),
    Any,
}

/// The placeholder for the client's own trust domain in patterns and templates.
pub(crate) const OWN_TRUST_DOMAIN: &str = "{trust_domain}";

impl SpiffeIdPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    ///
    /// When it is not a SPIFFE ID once `*` segments and `{trust_domain}` are allowed.
    pub fn parse(pattern: &str) -> Result<Self, SpiffeIdError> {
        let rest = pattern
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(pattern.into()))?;
        let (domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let trust_domain = if domain == OWN_TRUST_DOMAIN {
            None
        } else if valid_trust_domain(domain) {
            Some(domain.into())
        } else {
            return Err(SpiffeIdError::TrustDomain(pattern.into()));
        };
        let segments = if path.is_empty() {
            Box::default()
        } else {
            path[1..]
                .split('/')
                .map(|s| match s {
                    "*" => Ok(Segment::Any),
                    s if valid_segment(s) => Ok(Segment::Literal(s.into())),
                    _ => Err(SpiffeIdError::Path(pattern.into())),
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Self {
            trust_domain,
            segments,
        })
    }

    /// Exactly `id`.
    pub fn exact(id: &SpiffeId) -> Self {
        Self {
            trust_domain: Some(id.trust_domain().into()),
            segments: if id.path().is_empty() {
                Box::default()
            } else {
                id.path()[1..]
                    .split('/')
                    .map(|s| Segment::Literal(s.into()))
                    .collect()
            },
        }
    }

    /// Whether `id` matches, `own` being the client's trust domain (when it has one).
    pub fn matches(&self, id: &SpiffeId, own: Option<&str>) -> bool {
        let domain_ok = match (&self.trust_domain, own) {
            (Some(td), _) => **td == *id.trust_domain(),
            (None, Some(own)) => own == id.trust_domain(),
            (None, None) => false,
        };
        if !domain_ok {
            return false;
        }
        let path = id.path();
        let mut presented = if path.is_empty() {
            None
        } else {
            Some(path[1..].split('/'))
        };
        let mut count = 0;
        for (i, s) in presented.iter_mut().flatten().enumerate() {
            count = i + 1;
            match self.segments.get(i) {
                Some(Segment::Any) => {}
                Some(Segment::Literal(l)) if **l == *s => {}
                _ => return false,
            }
        }
        count == self.segments.len()
    }

    /// Whether it names the client's own trust domain (`{trust_domain}`).
    pub fn is_own_trust_domain(&self) -> bool {
        self.trust_domain.is_none()
    }

    /// The pattern with the client's trust domain filled in, for messages.
    pub(crate) fn display_with(&self, own: Option<&str>) -> String {
        let domain = match (&self.trust_domain, own) {
            (Some(td), _) => td,
            (None, Some(own)) => own,
            (None, None) => OWN_TRUST_DOMAIN,
        };
        let mut out = format!("{SCHEME}{domain}");
        for s in &self.segments {
            out.push('/');
            out.push_str(match s {
                Segment::Literal(l) => l,
                Segment::Any => "*",
            });
        }
        out
    }
}

impl fmt::Display for SpiffeIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_with(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids_and_rejects_what_the_spec_forbids() {
        let id = SpiffeId::parse("spiffe://example.org/ns/shop/sa/checkout").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/shop/sa/checkout");
        let td = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(td.path(), "");
        for bad in [
            "http://example.org/a",
            "spiffe://",
            "spiffe:///a",
            "spiffe://Example.org/a",
            "spiffe://example.org:8080/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a/./b",
            "spiffe://example.org/a?b",
            "spiffe://example.org/a#b",
            "spiffe://example.org/a b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} must be rejected");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(matches!(
            SpiffeId::parse(&long),
            Err(SpiffeIdError::TooLong(_))
        ));
    }

    #[test]
    fn patterns_match_one_segment_per_star_and_the_own_trust_domain() {
        let p = SpiffeIdPattern::parse("spiffe://{trust_domain}/ns/shop/sa/*").unwrap();
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        assert!(p.matches(&id("spiffe://td.one/ns/shop/sa/a"), Some("td.one")));
        assert!(!p.matches(&id("spiffe://td.two/ns/shop/sa/a"), Some("td.one")));
        assert!(
            !p.matches(&id("spiffe://td.one/ns/shop/sa/a"), None),
            "no own trust domain known: nothing matches it"
        );
        assert!(!p.matches(&id("spiffe://td.one/ns/shop/sa"), Some("td.one")));
        assert!(!p.matches(&id("spiffe://td.one/ns/shop/sa/a/b"), Some("td.one")));
        assert!(!p.matches(&id("spiffe://td.one/ns/other/sa/a"), Some("td.one")));
        assert_eq!(
            p.display_with(Some("td.one")),
            "spiffe://td.one/ns/shop/sa/*"
        );
        let exact = SpiffeIdPattern::exact(&id("spiffe://td.one/ns/shop/sa/a"));
        assert!(exact.matches(&id("spiffe://td.one/ns/shop/sa/a"), None));
        assert!(!exact.matches(&id("spiffe://td.one/ns/shop/sa/b"), None));
        let root = SpiffeIdPattern::exact(&id("spiffe://td.one"));
        assert!(root.matches(&id("spiffe://td.one"), None));
        assert!(!root.matches(&id("spiffe://td.one/a"), None));
        assert!(SpiffeIdPattern::parse("spiffe://{trust_domain}/a/**").is_err());
        assert!(SpiffeIdPattern::parse("spiffe://*/a").is_err());
    }
}
