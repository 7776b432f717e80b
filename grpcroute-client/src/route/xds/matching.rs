//! The per-call routing decision over validated xDS routes (gRFC A28, A31, A63).
//!
//! Pure functions, called by the data plane for every call: no allocation on the hit path
//! (a header with several values is the one exception: its values are joined with `,`).
//! Randomness is injected, so tests and the differential harness are reproducible.
//!
//! Where C-core and grpc-go differ, this follows **C-core** (the oracle of the
//! differential tests):
//! - virtual host domains match ASCII case-insensitively, and a `*` in a suffix or prefix
//!   pattern must match at least one character (`*.foo.com` does not match `.foo.com`,
//!   `*foo.com` does not match `foo.com`);
//! - `runtime_fraction` matches when `random % 1_000_000 < per_million`;
//! - a header present with an empty value is present (`present_match`).

use std::{borrow::Cow, sync::Arc, time::Duration};

#[cfg(test)]
use crate::model::xds::route::{ClusterChoice, WeightedCluster};
use crate::model::xds::route::{
    DomainPattern, ForwardAction, HeaderMatch, HeaderMatcher, PathMatcher, Route, StringMatch,
    VirtualHost,
};

/// Request metadata as routing sees it.
pub(crate) trait RequestHeaders {
    /// The values of header `name` (lower-case) joined with `,`, or `None` when absent.
    fn get_joined(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl RequestHeaders for http::HeaderMap {
    fn get_joined(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.get_all(name).iter();
        let first = values.next()?;
        // A value that is not visible ASCII cannot match a string matcher anyway; treat
        // it as empty rather than absent, so `present_match` still sees the header.
        let first = first.to_str().unwrap_or("");
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = String::with_capacity(first.len() * 2 + 1);
                joined.push_str(first);
                joined.push(',');
                joined.push_str(second.to_str().unwrap_or(""));
                for v in values {
                    joined.push(',');
                    joined.push_str(v.to_str().unwrap_or(""));
                }
                Some(Cow::Owned(joined))
            }
        }
    }
}

/// The virtual host whose domains best match `authority` (A28): exact > `*suffix` >
/// `prefix*` > `*`, the longer pattern first within a kind, the first virtual host on a tie.
pub(crate) fn select_virtual_host<'a>(
    virtual_hosts: &'a [Arc<VirtualHost>],
    authority: &str,
) -> Option<&'a Arc<VirtualHost>> {
    // (rank, pattern length): lower rank is better, then longer.
    let mut best: Option<(&'a Arc<VirtualHost>, u8, usize)> = None;
    for vh in virtual_hosts {
        for d in &vh.domains {
            let Some((rank, len)) = domain_match(d, authority) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((_, r, l)) => rank < r || (rank == r && len > l),
            };
            if better {
                best = Some((vh, rank, len));
            }
        }
    }
    best.map(|(vh, _, _)| vh)
}

/// `Some((rank, pattern length))` when `d` matches `host`.
fn domain_match(d: &DomainPattern, host: &str) -> Option<(u8, usize)> {
    let h = host.as_bytes();
    match d {
        DomainPattern::Exact(p) => h.eq_ignore_ascii_case(p.as_bytes()).then_some((0, p.len())),
        // The `*` matches at least one character (C-core).
        DomainPattern::Suffix(s) => (h.len() > s.len()
            && h[h.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes()))
        .then_some((1, s.len() + 1)),
        DomainPattern::Prefix(p) => (h.len() > p.len()
            && h[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
        .then_some((2, p.len() + 1)),
        DomainPattern::Universal => Some((3, 1)),
    }
}

/// The first route of `vh` that matches the call (A28: configured order, no reordering).
///
/// `path` is `:path` (`/package.Service/Method`); `random` is called only for routes with
/// a `runtime_fraction`, once per such route reached.
#[cfg(test)]
pub(crate) fn select_route<'a, H, R>(
    vh: &'a VirtualHost,
    path: &str,
    headers: &H,
    mut random: R,
) -> Option<&'a Route>
where
    H: RequestHeaders + ?Sized,
    R: FnMut() -> u64,
{
    vh.routes
        .iter()
        .find(|r| route_matches(r, path, headers, &mut random))
}

/// Whether `route` matches: path, every header matcher, then the fraction.
pub(crate) fn route_matches<H, R>(route: &Route, path: &str, headers: &H, random: &mut R) -> bool
where
    H: RequestHeaders + ?Sized,
    R: FnMut() -> u64,
{
    let m = &route.matcher;
    path_matches(&m.path, path)
        && m.headers.iter().all(|h| header_matches(h, headers))
        && m.fraction_per_million
            .is_none_or(|n| fraction_matches(n, random()))
}

/// C-core's `UnderFraction`: `random % 1_000_000 < per_million`.
pub(crate) fn fraction_matches(per_million: u32, random: u64) -> bool {
    random % 1_000_000 < u64::from(per_million)
}

/// Whether the path matcher accepts `path`.
pub(crate) fn path_matches(m: &PathMatcher, path: &str) -> bool {
    match m {
        PathMatcher::Prefix {
            prefix,
            ignore_case,
        } => starts_with(path, prefix, *ignore_case),
        PathMatcher::Exact {
            path: p,
            ignore_case,
        } => equals(path, p, *ignore_case),
        PathMatcher::Regex(re) => re.is_full_match(path),
    }
}

/// The value routing sees for header `name` (A28): `-bin` headers and pseudo-headers are
/// never matched, and `content-type` is always `application/grpc` (C-core hard-codes it).
pub(crate) fn header_value<'h, H: RequestHeaders + ?Sized>(
    headers: &'h H,
    name: &str,
) -> Option<Cow<'h, str>> {
    if name.ends_with("-bin") || name.starts_with(':') {
        None
    } else if name == "content-type" {
        Some(Cow::Borrowed("application/grpc"))
    } else {
        headers.get_joined(name)
    }
}

/// Whether one header matcher accepts the request (C-core `HeaderMatcher::Match`): a
/// missing header fails every matcher regardless of `invert_match`, except
/// `present_match`, which compares presence and then applies the inversion.
pub(crate) fn header_matches<H: RequestHeaders + ?Sized>(m: &HeaderMatcher, headers: &H) -> bool {
    let value = header_value(headers, &m.name);
    let matched = match (&m.kind, value.as_deref()) {
        (HeaderMatch::Present(want), v) => v.is_some() == *want,
        (_, None) => return false,
        (HeaderMatch::String(s), Some(v)) => string_matches(s, v),
        // C-core parses with `SimpleAtoi`, which allows surrounding whitespace.
        (HeaderMatch::Range { start, end }, Some(v)) => v
            .trim_ascii()
            .parse::<i64>()
            .is_ok_and(|n| *start <= n && n < *end),
    };
    matched != m.invert
}

/// Whether a string matcher accepts `v` (A63; patterns were lower-cased when
/// `ignore_case`).
pub(crate) fn string_matches(m: &StringMatch, v: &str) -> bool {
    match m {
        StringMatch::Exact { value, ignore_case } => equals(v, value, *ignore_case),
        StringMatch::Prefix { value, ignore_case } => starts_with(v, value, *ignore_case),
        StringMatch::Suffix { value, ignore_case } => ends_with(v, value, *ignore_case),
        StringMatch::Contains { value, ignore_case } => contains(v, value, *ignore_case),
        StringMatch::Regex(re) => re.is_full_match(v),
    }
}

fn equals(s: &str, p: &str, ignore_case: bool) -> bool {
    if ignore_case {
        s.eq_ignore_ascii_case(p)
    } else {
        s == p
    }
}

fn starts_with(s: &str, p: &str, ignore_case: bool) -> bool {
    if ignore_case {
        s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    } else {
        s.starts_with(p)
    }
}

fn ends_with(s: &str, p: &str, ignore_case: bool) -> bool {
    if ignore_case {
        s.len() >= p.len() && s.as_bytes()[s.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
    } else {
        s.ends_with(p)
    }
}

fn contains(s: &str, p: &str, ignore_case: bool) -> bool {
    if !ignore_case {
        return s.contains(p);
    }
    if p.is_empty() {
        return true;
    }
    s.as_bytes()
        .windows(p.len())
        .any(|w| w.eq_ignore_ascii_case(p.as_bytes()))
}

/// A31: the deadline of a call on a route: the route's `grpc_timeout_header_max` if set,
/// else its `max_stream_duration`, else the listener's (HCM) `max_stream_duration`, caps
/// the caller's deadline; a cap of 0 means none. The caller's deadline is never exceeded.
/// `None`: no deadline.
pub(crate) fn call_timeout(
    action: &ForwardAction,
    hcm_max_stream_duration: Option<Duration>,
    caller: Option<Duration>,
) -> Option<Duration> {
    let cap = action
        .grpc_timeout_header_max
        .or(action.max_stream_duration)
        .or(hcm_max_stream_duration)
        .filter(|d| !d.is_zero());
    match (caller, cap) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// The cluster a call goes to: the single cluster, or a weighted pick with `random`
/// (cumulative weights over `random % total`; zero weights were dropped at validation).
#[cfg(test)]
pub(crate) fn pick_cluster(choice: &ClusterChoice, random: u64) -> &str {
    match choice {
        ClusterChoice::Single(name) => name,
        ClusterChoice::Weighted { clusters, total } => pick_weighted(clusters, *total, random),
    }
}

#[cfg(test)]
fn pick_weighted(clusters: &[WeightedCluster], total: u64, random: u64) -> &str {
    let mut target = random % total.max(1);
    for c in clusters {
        let w = u64::from(c.weight);
        if target < w {
            return &c.name;
        }
        target -= w;
    }
    // Unreachable when `total` is the sum of the weights; fall back to the last entry.
    clusters.last().map_or("", |c| c.name.as_str())
}

#[cfg(test)]
mod tests;
