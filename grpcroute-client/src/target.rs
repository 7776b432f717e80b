//! Which Service a call is for, from the target it was addressed to.
//!
//! A proxyless client sees no destination IP to match a ClusterIP against; it sees the
//! name the application dialled. Every form Kubernetes DNS gives a Service resolves to the
//! same frontend: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster-domain>`, and the
//! ClusterIP itself, each with the Service port.
//!
//! Targets are written as gRPC users write them (gRPC's naming doc): bare `host[:port]`,
//! `dns:[//authority/]host[:port]` (the DNS server `authority` is irrelevant to a mesh and
//! ignored), `passthrough:///host[:port]` (grpc-go), `ipv4:addr[:port]` and
//! `ipv6:[addr][:port]` with a single address, and the URIs tonic's own `Endpoint` takes
//! (`http://host[:port][/...]`). `xds:` targets name an xDS listener, which is the xDS
//! source's. Anything else (`unix:`, `https://`, address lists) is refused with a reason.

use std::{fmt, net::IpAddr};

/// A parsed call target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: Host,
    /// The Service port; when absent, a Service with exactly one port is meant.
    pub(crate) port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// A Service name; `namespace: None` means the client's own namespace.
    Service {
        name: String,
        namespace: Option<String>,
    },
    ClusterIp(IpAddr),
    /// An xDS listener (`xds:///NAME`): the whole name, which is also the authority its
    /// virtual host is chosen for.
    Listener(String),
}

/// Why a target names no Kubernetes Service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{target:?} is not a Kubernetes Service address: {reason}")]
pub struct TargetError {
    target: String,
    reason: std::borrow::Cow<'static, str>,
}

impl TargetError {
    /// A target the mesh cannot route, and why.
    pub(crate) fn new(target: &str, reason: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            target: target.to_string(),
            reason: reason.into(),
        }
    }
}

impl Target {
    /// Parses a target in any of the forms the module documentation lists.
    pub(crate) fn parse(target: &str, cluster_domain: &str) -> Result<Self, TargetError> {
        let err = |reason: &'static str| TargetError::new(target, reason);
        if let Some(listener) = xds_listener(target).map_err(err)? {
            return Ok(Self {
                host: Host::Listener(listener.to_string()),
                port: None,
            });
        }
        let authority = authority_of(target).map_err(err)?;
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        Self::parse_authority(authority, cluster_domain).map_err(err)
    }

    /// Parses a `host[:port]` authority (a request's `:authority`, or the host part of a
    /// target).
    pub(crate) fn parse_authority(
        authority: &str,
        cluster_domain: &str,
    ) -> Result<Self, &'static str> {
        let (host, port) = split_port(authority).ok_or("invalid port")?;
        if host.is_empty() {
            return Err("empty host");
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self {
                host: Host::ClusterIp(ip),
                port,
            });
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        if labels.iter().any(|l| !crate::convert::is_dns_label(l)) {
            return Err("not a DNS name");
        }
        let suffix: Vec<&str> = if cluster_domain.is_empty() {
            Vec::new()
        } else {
            cluster_domain.split('.').collect()
        };
        let (name, namespace) = match labels.as_slice() {
            [name] => (*name, None),
            [name, ns] => (*name, Some(*ns)),
            [name, ns, "svc"] => (*name, Some(*ns)),
            [name, ns, "svc", domain @ ..] if domain == suffix.as_slice() => (*name, Some(*ns)),
            _ => {
                return Err("expected svc, svc.ns, svc.ns.svc or svc.ns.svc.<cluster domain>");
            }
        };
        Ok(Self {
            host: Host::Service {
                name: name.to_string(),
                namespace: namespace.map(str::to_string),
            },
            port,
        })
    }
}

/// The listener an `xds:` target names (`xds:///NAME` or `xds:NAME`, gRFC A27); `None`
/// for other schemes.
fn xds_listener(target: &str) -> Result<Option<&str>, &'static str> {
    let Some((scheme, rest)) = target.split_once(':') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("xds") {
        return Ok(None);
    }
    if !cfg!(feature = "xds") {
        return Err(
            "xds: targets name an xDS listener, and this build has no xDS source (enable the `xds` feature)",
        );
    }
    let name = match rest.strip_prefix("//") {
        Some(after) => match after.split_once('/') {
            Some(("", name)) => name,
            Some(_) => {
                return Err("xds://authority/ targets (federation, gRFC A47) are not supported");
            }
            None => return Err("expected xds:///NAME"),
        },
        None => rest,
    };
    if name.is_empty() {
        return Err("an xds: target names a listener: xds:///NAME");
    }
    Ok(Some(name))
}

/// The `host[:port]` part of a target, or why it has none a mesh can route.
fn authority_of(target: &str) -> Result<&str, &'static str> {
    let Some((scheme, rest)) = split_scheme(target) else {
        // `host:port`, `host`, `[v6]:port`: no scheme.
        return Ok(target);
    };
    match scheme.to_ascii_lowercase().as_str() {
        // `dns:host:port`, `dns:///host:port`, `dns://dns-server/host:port`.
        "dns" | "passthrough" => {
            let path = match rest.strip_prefix("//") {
                Some(after) => after.split_once('/').map(|(_, path)| path).ok_or(
                    "expected dns:[//authority/]host[:port] (the host comes after a third slash)",
                )?,
                None => rest,
            };
            if path.contains('/') {
                return Err("a DNS target names one host[:port]");
            }
            Ok(path)
        }
        "ipv4" | "ipv6" => {
            if rest.contains(',') {
                return Err(
                    "a list of addresses is not a Service; name the Service or its ClusterIP",
                );
            }
            Ok(rest)
        }
        "http" => {
            let rest = rest
                .strip_prefix("//")
                .ok_or("expected http://host[:port]")?;
            Ok(rest.split('/').next().unwrap_or_default())
        }
        "https" => Err(
            "https:// targets are not supported: the mesh chooses TLS per backend, so name the Service (svc.ns:port)",
        ),
        "unix" | "unix-abstract" | "vsock" => {
            Err("a local socket is not a Service; name the Service (svc.ns:port)")
        }
        _ => Err("unknown scheme (expected dns:, http://, ipv4:, ipv6: or a bare host[:port])"),
    }
}

/// `scheme:rest` when `target` starts with a URI scheme. `host:port` and `[v6]:port` are
/// not schemes: a scheme starts with a letter and is not followed by a port number.
fn split_scheme(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once(':')?;
    let is_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    // `checkout:50051` is a host and a port, not a scheme.
    let port_follows = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    (is_scheme && !port_follows).then_some((scheme, rest))
}

fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    // `[v6]:port`, `[v6]`, `host:port`, `host`, and a bare IPv6 address.
    if let Some(end) = authority.find(']') {
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            None if rest.is_empty() => Some((host, None)),
            Some(p) => p.parse().ok().filter(|p| *p != 0).map(|p| (host, Some(p))),
            None => None,
        };
    }
    match authority.matches(':').count() {
        0 => Some((authority, None)),
        1 => {
            let (host, port) = authority.split_once(':')?;
            port.parse()
                .ok()
                .filter(|p| *p != 0)
                .map(|p| (host, Some(p)))
        }
        _ => Some((authority, None)),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Service {
                name,
                namespace: Some(ns),
            } => write!(f, "{name}.{ns}")?,
            Host::Service {
                name,
                namespace: None,
            } => write!(f, "{name}")?,
            Host::ClusterIp(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            Host::ClusterIp(ip) => write!(f, "{ip}")?,
            Host::Listener(name) => return write!(f, "xds:///{name}"),
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ns: Option<&str>, port: Option<u16>) -> Target {
        Target {
            host: Host::Service {
                name: name.into(),
                namespace: ns.map(Into::into),
            },
            port,
        }
    }

    #[test]
    fn every_kubernetes_dns_form_names_the_same_service() {
        let d = "cluster.local";
        assert_eq!(
            Target::parse("checkout:50051", d).unwrap(),
            svc("checkout", None, Some(50051))
        );
        for form in [
            "checkout.shop:50051",
            "checkout.shop.svc:50051",
            "checkout.shop.svc.cluster.local:50051",
            "checkout.shop.svc.cluster.local.:50051",
            "http://checkout.shop:50051",
            "http://checkout.shop:50051/pkg.Svc/Method",
            "Checkout.Shop:50051",
        ] {
            assert_eq!(
                Target::parse(form, d).unwrap(),
                svc("checkout", Some("shop"), Some(50051)),
                "{form}"
            );
        }
        assert_eq!(
            Target::parse("checkout.shop", d).unwrap(),
            svc("checkout", Some("shop"), None)
        );
    }

    #[test]
    fn cluster_domain_is_configurable() {
        assert_eq!(
            Target::parse("checkout.shop.svc.corp.example:80", "corp.example").unwrap(),
            svc("checkout", Some("shop"), Some(80))
        );
        assert!(Target::parse("checkout.shop.svc.cluster.local:80", "corp.example").is_err());
    }

    #[test]
    fn cluster_ips() {
        let t = Target::parse("10.96.0.10:50051", "cluster.local").unwrap();
        assert_eq!(t.host, Host::ClusterIp("10.96.0.10".parse().unwrap()));
        let t = Target::parse("[fd00::a]:50051", "cluster.local").unwrap();
        assert_eq!(t.host, Host::ClusterIp("fd00::a".parse().unwrap()));
        assert_eq!(t.port, Some(50051));
    }

    #[test]
    fn grpc_target_forms() {
        let d = "cluster.local";
        for form in [
            "dns:///checkout.shop:50051",
            "dns://10.0.0.10/checkout.shop:50051",
            "dns://10.0.0.10:53/checkout.shop:50051",
            "dns:checkout.shop:50051",
            "passthrough:///checkout.shop:50051",
            "DNS:///checkout.shop.svc.cluster.local:50051",
        ] {
            assert_eq!(
                Target::parse(form, d).unwrap(),
                svc("checkout", Some("shop"), Some(50051)),
                "{form}"
            );
        }
        assert_eq!(
            Target::parse("dns:///checkout:50051", d).unwrap(),
            svc("checkout", None, Some(50051))
        );
        let t = Target::parse("ipv4:10.96.0.10:50051", d).unwrap();
        assert_eq!(t.host, Host::ClusterIp("10.96.0.10".parse().unwrap()));
        let t = Target::parse("ipv6:[fd00::a]:50051", d).unwrap();
        assert_eq!(t.host, Host::ClusterIp("fd00::a".parse().unwrap()));
        assert_eq!(t.port, Some(50051));
        let t = Target::parse("dns:///[fd00::a]:50051", d).unwrap();
        assert_eq!(t.host, Host::ClusterIp("fd00::a".parse().unwrap()));
    }

    #[cfg(feature = "xds")]
    #[test]
    fn xds_targets_name_a_listener() {
        for (form, name) in [
            ("xds:///checkout", "checkout"),
            ("xds:checkout.shop:50051", "checkout.shop:50051"),
            ("xds:///example.com:123", "example.com:123"),
        ] {
            let t = Target::parse(form, "cluster.local").unwrap();
            assert_eq!(t.host, Host::Listener(name.into()), "{form}");
            assert_eq!(t.to_string(), format!("xds:///{name}"));
        }
        assert!(Target::parse("xds:///", "cluster.local").is_err());
    }

    #[test]
    fn the_dns_server_of_a_target_is_not_its_host() {
        let t = Target::parse("dns://10.0.0.10/checkout:50051", "cluster.local").unwrap();
        assert_eq!(t, svc("checkout", None, Some(50051)));
    }

    #[test]
    fn targets_no_service_can_have_are_refused_with_a_reason() {
        for (bad, why) in [
            ("unix:///run/app.sock", "local socket"),
            ("https://checkout.shop:50051", "https://"),
            #[cfg(not(feature = "xds"))]
            ("xds:///checkout", "xDS"),
            #[cfg(feature = "xds")]
            ("xds://authority/checkout", "federation"),
            ("ipv4:10.0.0.1:50051,10.0.0.2:50051", "list of addresses"),
            ("dns://10.0.0.10", "third slash"),
            ("dns:///a/b", "one host"),
            ("gopher://x", "unknown scheme"),
        ] {
            let e = Target::parse(bad, "cluster.local").unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn non_service_names_are_rejected() {
        for bad in [
            "api.example.com:443",
            "a.b.c.d.e:1",
            ":50051",
            "svc:0",
            "svc:99999",
            "under_score:1",
        ] {
            assert!(Target::parse(bad, "cluster.local").is_err(), "{bad}");
        }
    }
}
