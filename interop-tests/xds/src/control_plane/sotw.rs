//! State-of-the-World bookkeeping, pure: the resources of one type, a stream's subscription
//! to that type, and the decision of what (if anything) to send that stream now.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::{envoy::service::discovery::v3::DiscoveryResponse, google::protobuf::Any};

use crate::ResourceType;

/// The resources of one type and its version (bumped on every change).
#[derive(Clone, Debug, Default)]
pub(crate) struct TypeSnapshot {
    pub(crate) version: u64,
    pub(crate) resources: BTreeMap<String, Any>,
}

/// What to answer with instead of the generated `version_info` / `nonce` (test hooks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseOverride {
    /// Sent as `version_info` instead of the type's version counter.
    pub version_info: Option<String>,
    /// Sent as `nonce` instead of a fresh one.
    pub nonce: Option<String>,
}

/// Everything besides the resources that decides a response.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResponsePolicy<'a> {
    /// Nothing is sent while paused.
    pub(crate) paused: bool,
    /// Resources never sent; a stream naming one of them gets no response of that type.
    pub(crate) stopped: Option<&'a BTreeSet<String>>,
    pub(crate) override_: Option<&'a ResponseOverride>,
}

/// What one stream asked for of one type, and what it was last sent.
#[derive(Clone, Debug, Default)]
pub(crate) struct Subscription {
    requested: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    sent: Option<Sent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    version: u64,
    names: BTreeSet<String>,
}

impl Subscription {
    /// Applies the `resource_names` of a request: the new subscription set. An empty first
    /// request of LDS/CDS (or a `*` entry) is a wildcard; an empty later request keeps a
    /// legacy wildcard, otherwise it unsubscribes everything.
    pub(crate) fn on_request(&mut self, kind: ResourceType, names: &[String]) {
        let first = !self.requested;
        self.requested = true;
        if names.iter().any(|n| n == "*") {
            self.wildcard = true;
        } else if names.is_empty() {
            if first && kind.all_resources_in_each_response() {
                self.wildcard = true;
            }
        } else {
            self.wildcard = false;
        }
        self.names = names.iter().filter(|n| *n != "*").cloned().collect();
    }

    /// The names subscribed to (without the wildcard).
    #[cfg(test)]
    pub(crate) fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// The response due now, if any, recording it as sent. One is due when the resources
    /// this stream should have (or their version) differ from what it was last sent; an
    /// empty response only retracts resources it had been sent (so a resource that never
    /// existed is never answered, and the client's does-not-exist timer runs).
    pub(crate) fn due(
        &mut self,
        kind: ResourceType,
        snapshot: &TypeSnapshot,
        policy: &ResponsePolicy<'_>,
        next_nonce: impl FnOnce() -> String,
    ) -> Option<(DiscoveryResponse, Vec<String>)> {
        if !self.requested || policy.paused {
            return None;
        }
        let stopped = |name: &str| policy.stopped.is_some_and(|s| s.contains(name));
        if self.names.iter().any(|n| stopped(n)) {
            return None;
        }
        let included: Vec<(&String, &Any)> = snapshot
            .resources
            .iter()
            .filter(|(name, _)| (self.wildcard || self.names.contains(*name)) && !stopped(name))
            .collect();
        let names: BTreeSet<String> = included.iter().map(|(n, _)| (*n).clone()).collect();
        match &self.sent {
            None if names.is_empty() => return None,
            Some(sent) if sent.names.is_empty() && names.is_empty() => return None,
            Some(sent) if sent.version == snapshot.version && sent.names == names => return None,
            _ => {}
        }
        let version_info = policy
            .override_
            .and_then(|o| o.version_info.clone())
            .unwrap_or_else(|| snapshot.version.to_string());
        let nonce = policy
            .override_
            .and_then(|o| o.nonce.clone())
            .unwrap_or_else(next_nonce);
        let listed = names.iter().cloned().collect();
        self.sent = Some(Sent {
            version: snapshot.version,
            names,
        });
        let response = DiscoveryResponse {
            version_info,
            resources: included.into_iter().map(|(_, a)| a.clone()).collect(),
            type_url: kind.type_url().to_string(),
            nonce,
            ..Default::default()
        };
        Some((response, listed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64, names: &[&str]) -> TypeSnapshot {
        TypeSnapshot {
            version,
            resources: names
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        Any {
                            type_url: "t".into(),
                            value: n.as_bytes().to_vec(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn due(sub: &mut Subscription, snap: &TypeSnapshot) -> Option<DiscoveryResponse> {
        sub.due(
            ResourceType::Cluster,
            snap,
            &ResponsePolicy::default(),
            || "n".into(),
        )
        .map(|(r, _)| r)
    }

    #[test]
    fn answers_subscribed_resources_once_per_version() {
        let mut sub = Subscription::default();
        let snap = snapshot(3, &["a", "b", "c"]);
        assert!(due(&mut sub, &snap).is_none(), "nothing requested yet");
        sub.on_request(ResourceType::Cluster, &names(&["a", "c", "x"]));
        let r = due(&mut sub, &snap).unwrap();
        assert_eq!(r.version_info, "3");
        assert_eq!(r.resources.len(), 2);
        assert_eq!(r.type_url, ResourceType::Cluster.type_url());
        // An ACK (same names) gets nothing.
        sub.on_request(ResourceType::Cluster, &names(&["a", "c", "x"]));
        assert!(due(&mut sub, &snap).is_none());
        // A new version does.
        assert!(due(&mut sub, &snapshot(4, &["a", "b", "c"])).is_some());
    }

    #[test]
    fn a_resource_that_never_existed_is_never_answered_but_a_deletion_is() {
        let mut sub = Subscription::default();
        sub.on_request(ResourceType::Listener, &names(&["l"]));
        assert!(due(&mut sub, &snapshot(1, &["other"])).is_none());
        assert!(due(&mut sub, &snapshot(2, &["l"])).is_some());
        let r = due(&mut sub, &snapshot(3, &["other"])).unwrap();
        assert!(r.resources.is_empty(), "the deletion is an empty response");
        assert!(due(&mut sub, &snapshot(4, &["other2"])).is_none());
    }

    #[test]
    fn wildcard_only_for_an_empty_first_lds_or_cds_request() {
        let mut lds = Subscription::default();
        lds.on_request(ResourceType::Listener, &[]);
        assert_eq!(
            due(&mut lds, &snapshot(1, &["a", "b"]))
                .unwrap()
                .resources
                .len(),
            2
        );
        let mut eds = Subscription::default();
        eds.on_request(ResourceType::ClusterLoadAssignment, &[]);
        assert!(due(&mut eds, &snapshot(1, &["a"])).is_none());
        let mut star = Subscription::default();
        star.on_request(ResourceType::ClusterLoadAssignment, &names(&["*"]));
        assert_eq!(
            due(&mut star, &snapshot(1, &["a"]))
                .unwrap()
                .resources
                .len(),
            1
        );
        // Naming resources ends the wildcard; emptying the list later unsubscribes.
        let mut cds = Subscription::default();
        cds.on_request(ResourceType::Cluster, &names(&["a"]));
        cds.on_request(ResourceType::Cluster, &[]);
        assert!(cds.names().is_empty());
        assert!(due(&mut cds, &snapshot(1, &["a"])).is_none());
    }

    #[test]
    fn a_stopped_name_silences_the_type_for_streams_naming_it() {
        let stopped: BTreeSet<String> = ["b".to_string()].into();
        let policy = ResponsePolicy {
            stopped: Some(&stopped),
            ..Default::default()
        };
        let snap = snapshot(1, &["a", "b"]);
        let mut both = Subscription::default();
        both.on_request(ResourceType::Cluster, &names(&["a", "b"]));
        assert!(
            both.due(ResourceType::Cluster, &snap, &policy, || "n".into())
                .is_none()
        );
        let mut wildcard = Subscription::default();
        wildcard.on_request(ResourceType::Cluster, &[]);
        let (r, listed) = wildcard
            .due(ResourceType::Cluster, &snap, &policy, || "n".into())
            .unwrap();
        assert_eq!(listed, ["a"]);
        assert_eq!(r.resources.len(), 1, "never included");
    }

    #[test]
    fn overrides_and_pause() {
        let o = ResponseOverride {
            version_info: Some("v9".into()),
            nonce: Some("fixed".into()),
        };
        let mut sub = Subscription::default();
        sub.on_request(ResourceType::Cluster, &names(&["a"]));
        let paused = ResponsePolicy {
            paused: true,
            ..Default::default()
        };
        let snap = snapshot(1, &["a"]);
        assert!(
            sub.due(ResourceType::Cluster, &snap, &paused, || "n".into())
                .is_none()
        );
        let policy = ResponsePolicy {
            override_: Some(&o),
            ..Default::default()
        };
        let (r, _) = sub
            .due(ResourceType::Cluster, &snap, &policy, || "n".into())
            .unwrap();
        assert_eq!((r.version_info.as_str(), r.nonce.as_str()), ("v9", "fixed"));
    }
}
