//! What `status-controller` writes on a BackendTLSPolicy: `status.ancestors` with this
//! controller's entries replaced by the ones the mesh computes, everything else kept.
//!
//! In a mesh (GAMMA) the ancestor a BackendTLSPolicy's status is reported against is the
//! Service it targets: one entry per targeted Service, each with the policy's `Accepted`
//! and `ResolvedRefs` conditions. Entries are keyed by `ancestorRef` and `controllerName`
//! together (Gateway API): other controllers' entries are kept exactly, in place; ours are
//! updated in place, added at the end, or removed when the policy no longer targets their
//! Service. A condition keeps its `lastTransitionTime` while its status does not change,
//! so an unchanged policy gives an identical list and no write.

use gateway_api::backendtlspolicies::{
    BackendTlsPolicyStatus as RawStatus, BackendTlsPolicyStatusAncestors as Ancestor,
    BackendTlsPolicyStatusAncestorsAncestorRef as AncestorRef,
};
use grpcroute_client::{BackendTlsPolicyStatus, ObjectKey};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The CRD allows at most this many entries in `status.ancestors`.
const MAX_ANCESTORS: usize = 16;

/// The new `status.ancestors` of a policy whose current status is `current`, so that this
/// controller's entries say what `desired` says; `None` when they already do.
pub(crate) fn plan(
    current: Option<&RawStatus>,
    desired: &BackendTlsPolicyStatus,
    controller: &str,
    now: &Time,
) -> Option<Vec<Ancestor>> {
    let current: &[Ancestor] = current.map_or(&[], |s| &s.ancestors);
    let others = current
        .iter()
        .filter(|a| a.controller_name != controller)
        .count();
    let mut wanted: Vec<&ObjectKey> = Vec::new();
    for service in &desired.targets {
        if !wanted.contains(&service) {
            wanted.push(service);
        }
    }
    let room = MAX_ANCESTORS.saturating_sub(others);
    if wanted.len() > room {
        tracing::warn!(
            policy = %desired.policy,
            ancestors = wanted.len(),
            room,
            "status.ancestors holds at most {MAX_ANCESTORS} entries: the last targets get no status"
        );
        wanted.truncate(room);
    }
    let mut ancestors = Vec::with_capacity(others + wanted.len());
    let mut done = vec![false; wanted.len()];
    for entry in current {
        if entry.controller_name != controller {
            ancestors.push(entry.clone());
            continue;
        }
        match wanted
            .iter()
            .position(|s| is_service(&entry.ancestor_ref, s, desired.policy.namespace()))
        {
            Some(i) if !done[i] => {
                done[i] = true;
                ancestors.push(entry_for(wanted[i], Some(entry), desired, controller, now));
            }
            // A duplicate, or a Service the policy no longer targets: dropped.
            _ => {}
        }
    }
    for (i, service) in wanted.iter().enumerate() {
        if !done[i] {
            ancestors.push(entry_for(service, None, desired, controller, now));
        }
    }
    (ancestors.as_slice() != current).then_some(ancestors)
}

/// Whether `r` names Service `service` (its namespace defaulting to the policy's).
fn is_service(r: &AncestorRef, service: &ObjectKey, policy_ns: &str) -> bool {
    r.group.as_deref() == Some("")
        && r.kind.as_deref() == Some("Service")
        && r.name == service.name()
        && r.namespace.as_deref().unwrap_or(policy_ns) == service.namespace()
        && r.section_name.is_none()
        && r.port.is_none()
}

fn entry_for(
    service: &ObjectKey,
    old: Option<&Ancestor>,
    desired: &BackendTlsPolicyStatus,
    controller: &str,
    now: &Time,
) -> Ancestor {
    let conditions = crate::route_status::conditions(
        &desired.conditions,
        old.map_or(&[], |o| &o.conditions),
        desired.generation,
        now,
    );
    Ancestor {
        ancestor_ref: AncestorRef {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: service.name().into(),
            namespace: Some(service.namespace().into()),
            port: None,
            section_name: None,
        },
        conditions,
        controller_name: controller.into(),
    }
}

#[cfg(test)]
mod tests {
    use grpcroute_client::{Condition as Desired, ConditionStatus};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    const US: &str = "grpcroute.dev/status-controller";

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn desired(accepted: bool) -> BackendTlsPolicyStatus {
        BackendTlsPolicyStatus {
            policy: ObjectKey::new("shop", "cart-tls"),
            generation: Some(1),
            targets: vec![ObjectKey::new("shop", "cart")],
            applied: Vec::new(),
            conditions: vec![
                Desired {
                    type_: "Accepted",
                    status: if accepted {
                        ConditionStatus::True
                    } else {
                        ConditionStatus::False
                    },
                    reason: if accepted { "Accepted" } else { "Conflicted" }.into(),
                    message: "m".into(),
                },
                Desired {
                    type_: "ResolvedRefs",
                    status: ConditionStatus::True,
                    reason: "ResolvedRefs".into(),
                    message: "r".into(),
                },
            ],
        }
    }

    fn theirs() -> Ancestor {
        Ancestor {
            ancestor_ref: AncestorRef {
                name: "gw".into(),
                ..AncestorRef::default()
            },
            conditions: Vec::new(),
            controller_name: "example.net/gateway".into(),
        }
    }

    #[test]
    fn writes_once_keeps_others_and_keeps_transition_times_until_a_status_changes() {
        let first = plan(
            Some(&RawStatus {
                ancestors: vec![theirs()],
            }),
            &desired(true),
            US,
            &time(100),
        )
        .expect("a first write");
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], theirs(), "the other controller's entry, in place");
        let ours = &first[1];
        assert_eq!(ours.ancestor_ref.kind.as_deref(), Some("Service"));
        assert_eq!(ours.ancestor_ref.namespace.as_deref(), Some("shop"));
        assert_eq!(ours.conditions[0].observed_generation, Some(1));
        let written = RawStatus { ancestors: first };
        assert!(
            plan(Some(&written), &desired(true), US, &time(200)).is_none(),
            "nothing changed: no write"
        );
        let changed = plan(Some(&written), &desired(false), US, &time(300)).unwrap();
        assert_eq!(changed[1].conditions[0].reason, "Conflicted");
        assert_eq!(changed[1].conditions[0].last_transition_time, time(300));
        assert_eq!(
            changed[1].conditions[1].last_transition_time,
            time(100),
            "ResolvedRefs did not change status"
        );
    }

    #[test]
    fn a_service_no_longer_targeted_loses_its_entry() {
        let written = RawStatus {
            ancestors: plan(None, &desired(true), US, &time(1)).unwrap(),
        };
        let mut retargeted = desired(true);
        retargeted.targets = vec![ObjectKey::new("shop", "other")];
        let next = plan(Some(&written), &retargeted, US, &time(2)).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].ancestor_ref.name, "other");
    }
}
