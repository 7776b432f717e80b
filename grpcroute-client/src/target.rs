//! Which Service a call is for, from the target it was addressed to.
//!
//! A proxyless client sees no destination IP to match a ClusterIP against; it sees the
//! name the application dialled. Every form Kubernetes DNS gives a Service resolves to the
//! same frontend: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.<cluster-domain>`, and the
//! ClusterIP itself, each with the Service port.

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
}

/// Why a target names no Kubernetes Service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{target:?} is not a Kubernetes Service address: {reason}")]
pub struct TargetError {
    target: String,
    reason: &'static str,
}

impl Target {
    /// Parses `[scheme://]host[:port][/...]`.
    pub(crate) fn parse(target: &str, cluster_domain: &str) -> Result<Self, TargetError> {
        let err = |reason| TargetError {
            target: target.to_string(),
            reason,
        };
        let rest = target.split_once("://").map_or(target, |(_, rest)| rest);
        let authority = rest.split('/').next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = split_port(authority).ok_or_else(|| err("invalid port"))?;
        if host.is_empty() {
            return Err(err("empty host"));
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
            return Err(err("not a DNS name"));
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
                return Err(err(
                    "expected svc, svc.ns, svc.ns.svc or svc.ns.svc.<cluster domain>",
                ));
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
