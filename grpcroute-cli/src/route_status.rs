//! What `status-controller` writes on a GRPCRoute: the route's `status.parents` with this
//! controller's entries replaced by the ones the mesh computes, everything else kept.
//!
//! Parent status is namespaced by the combination of parentRef and `controllerName`
//! (Gateway API): entries of other controllers are kept exactly, in place; ours are
//! updated in place, added at the end, or removed when their parentRef is gone from the
//! route. A condition keeps its `lastTransitionTime` while its status does not change, so
//! an unchanged route gives an identical list and no write.

use std::fmt::Write as _;

use gateway_api::grpcroutes::{
    GrpcRouteStatus, GrpcRouteStatusParents, GrpcRouteStatusParentsParentRef,
};
use grpcroute_client::{ParentReference, RouteStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The CRD allows at most this many entries in `status.parents`.
const MAX_PARENTS: usize = 32;
/// `metav1.Condition.message` is at most this long.
const MAX_MESSAGE: usize = 32_768;
/// The group a parentRef names when it names none.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A change to write: the whole new `status.parents`, and what changed, in words.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) parents: Vec<GrpcRouteStatusParents>,
    pub(crate) changes: Vec<String>,
}

/// The new `status.parents` for a route whose current status is `current`, so that this
/// controller's entries say what `desired` says; `None` when they already do.
pub(crate) fn plan(
    current: Option<&GrpcRouteStatus>,
    desired: &RouteStatus,
    controller: &str,
    now: &Time,
) -> Option<Plan> {
    let route_ns = desired.route.namespace();
    let current: &[GrpcRouteStatusParents] = current.map_or(&[], |s| &s.parents);
    let others = current
        .iter()
        .filter(|p| p.controller_name != controller)
        .count();

    // One entry per distinct parentRef (a route may repeat one), within the CRD's limit.
    let mut wanted: Vec<(ParentKey, &grpcroute_client::ParentStatus)> = Vec::new();
    for parent in &desired.parents {
        let key = ParentKey::of_desired(&parent.parent_ref, route_ns);
        if !wanted.iter().any(|(k, _)| *k == key) {
            wanted.push((key, parent));
        }
    }
    let room = MAX_PARENTS.saturating_sub(others);
    if wanted.len() > room {
        tracing::warn!(
            route = %desired.route,
            parents = wanted.len(),
            room,
            "status.parents holds at most {MAX_PARENTS} entries: the last parentRefs get no status"
        );
        wanted.truncate(room);
    }

    let mut parents = Vec::with_capacity(others + wanted.len());
    let mut changes = Vec::new();
    let mut done = vec![false; wanted.len()];
    for entry in current {
        if entry.controller_name != controller {
            parents.push(entry.clone());
            continue;
        }
        let key = ParentKey::of_status(&entry.parent_ref, route_ns);
        match wanted.iter().position(|(k, _)| *k == key) {
            Some(i) if !done[i] => {
                done[i] = true;
                let new = entry_for(wanted[i].1, Some(entry), desired, controller, now);
                describe_change(entry, &new, route_ns, &mut changes);
                parents.push(new);
            }
            // A duplicate of an entry already written, or a parentRef no longer in the route.
            _ => changes.push(format!("-{}", describe(&entry.parent_ref, route_ns))),
        }
    }
    for (i, (_, parent)) in wanted.iter().enumerate() {
        if !done[i] {
            let new = entry_for(parent, None, desired, controller, now);
            changes.push(format!(
                "+{}: {}",
                describe(&new.parent_ref, route_ns),
                summary(&new.conditions)
            ));
            parents.push(new);
        }
    }
    (parents.as_slice() != current).then_some(Plan { parents, changes })
}

/// Our entry for one parentRef, keeping each condition's `lastTransitionTime` from `old`
/// while its status is the same.
fn entry_for(
    desired: &grpcroute_client::ParentStatus,
    old: Option<&GrpcRouteStatusParents>,
    route: &RouteStatus,
    controller: &str,
    now: &Time,
) -> GrpcRouteStatusParents {
    let conditions = conditions(
        &desired.conditions,
        old.map_or(&[], |o| &o.conditions),
        route.generation,
        now,
    );
    let p = &desired.parent_ref;
    GrpcRouteStatusParents {
        conditions,
        controller_name: controller.to_string(),
        parent_ref: GrpcRouteStatusParentsParentRef {
            group: Some(p.group.clone()),
            kind: Some(p.kind.clone()),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            port: p.port.map(i32::from),
            section_name: p.section_name.clone(),
        },
    }
}

/// A parentRef with its defaults filled in, to match status entries to parentRefs
/// however each spells them.
#[derive(Debug, PartialEq, Eq)]
struct ParentKey {
    group: String,
    kind: String,
    namespace: String,
    name: String,
    port: Option<i32>,
    section_name: Option<String>,
}

impl ParentKey {
    fn of_desired(p: &ParentReference, route_ns: &str) -> Self {
        Self {
            group: p.group.clone(),
            kind: p.kind.clone(),
            namespace: p.namespace.clone().unwrap_or_else(|| route_ns.to_string()),
            name: p.name.clone(),
            port: p.port.map(i32::from),
            section_name: p.section_name.clone().filter(|s| !s.is_empty()),
        }
    }

    fn of_status(p: &GrpcRouteStatusParentsParentRef, route_ns: &str) -> Self {
        Self {
            group: p.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_string()),
            kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_string()),
            namespace: p
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| route_ns.to_string()),
            name: p.name.clone(),
            port: p.port,
            section_name: p.section_name.clone().filter(|s| !s.is_empty()),
        }
    }
}

/// `Service shop/checkout:50051`, as `grpcroute check` prints parents.
fn describe(p: &GrpcRouteStatusParentsParentRef, route_ns: &str) -> String {
    let key = ParentKey::of_status(p, route_ns);
    let mut s = if key.group.is_empty() {
        key.kind
    } else {
        format!("{}.{}", key.kind, key.group)
    };
    let _ = write!(s, " {}/{}", key.namespace, key.name);
    if let Some(port) = key.port {
        let _ = write!(s, ":{port}");
    }
    if let Some(section) = key.section_name {
        let _ = write!(s, " ({section})");
    }
    s
}

/// `Accepted=True/Accepted, ResolvedRefs=False/BackendNotFound`.
fn summary(conditions: &[Condition]) -> String {
    conditions
        .iter()
        .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What changed in one of our entries, in words (nothing when only the parentRef's
/// spelling changed).
fn describe_change(
    old: &GrpcRouteStatusParents,
    new: &GrpcRouteStatusParents,
    route_ns: &str,
    changes: &mut Vec<String>,
) {
    let mut parts = Vec::new();
    for c in &new.conditions {
        match old.conditions.iter().find(|o| o.type_ == c.type_) {
            None => parts.push(format!("{}={}/{} (new)", c.type_, c.status, c.reason)),
            Some(o) if o.status != c.status || o.reason != c.reason => parts.push(format!(
                "{} {}/{} -> {}/{}",
                c.type_, o.status, o.reason, c.status, c.reason
            )),
            Some(o) if o.message != c.message => {
                parts.push(format!("{} message changed", c.type_));
            }
            Some(_) => {}
        }
    }
    for o in &old.conditions {
        if !new.conditions.iter().any(|c| c.type_ == o.type_) {
            parts.push(format!("{} dropped", o.type_));
        }
    }
    let generation = |p: &GrpcRouteStatusParents| {
        p.conditions
            .iter()
            .filter_map(|c| c.observed_generation)
            .max()
    };
    if let (old_gen, Some(new_gen)) = (generation(old), generation(new))
        && old_gen != Some(new_gen)
    {
        let old_gen = old_gen.map_or_else(|| "none".to_string(), |g| g.to_string());
        parts.push(format!("observedGeneration {old_gen} -> {new_gen}"));
    }
    if parts.is_empty() && old.parent_ref != new.parent_ref {
        parts.push("parentRef respelled".into());
    }
    if !parts.is_empty() {
        changes.push(format!(
            "~{}: {}",
            describe(&new.parent_ref, route_ns),
            parts.join(", ")
        ));
    }
}

/// Our conditions as `metav1.Condition`s, each keeping its `lastTransitionTime` from `old`
/// while its status is the same (route parents and policy ancestors alike).
pub(crate) fn conditions(
    desired: &[grpcroute_client::Condition],
    old: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|c| {
            let status = c.status.to_string();
            let last_transition_time = old
                .iter()
                .find(|p| p.type_ == c.type_)
                .filter(|p| p.status == status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason.clone(),
                message: truncate(&c.message, MAX_MESSAGE),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use grpcroute_client::{ObjectKey, ParentStatus};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    const ME: &str = "grpcroute.dev/status-controller";

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn service_ref(name: &str, port: Option<u16>) -> ParentReference {
        ParentReference {
            group: String::new(),
            kind: "Service".into(),
            namespace: None,
            name: name.into(),
            port,
            section_name: None,
        }
    }

    fn cond(
        type_: &'static str,
        ok: bool,
        reason: &str,
        message: &str,
    ) -> grpcroute_client::Condition {
        grpcroute_client::Condition::new(type_, ok, reason, message)
    }

    fn desired(generation: i64, parents: Vec<ParentStatus>) -> RouteStatus {
        RouteStatus {
            route: ObjectKey::new("shop", "r"),
            generation: Some(generation),
            parents,
        }
    }

    fn accepted(name: &str, resolved: bool) -> ParentStatus {
        ParentStatus {
            parent_ref: service_ref(name, Some(50051)),
            conditions: vec![
                cond("Accepted", true, "Accepted", "attached"),
                if resolved {
                    cond(
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "all references resolved",
                    )
                } else {
                    cond(
                        "ResolvedRefs",
                        false,
                        "BackendNotFound",
                        "Service shop/x not found",
                    )
                },
            ],
        }
    }

    fn other_entry() -> GrpcRouteStatusParents {
        GrpcRouteStatusParents {
            conditions: vec![Condition {
                type_: "Accepted".into(),
                status: "True".into(),
                reason: "Accepted".into(),
                message: "theirs".into(),
                observed_generation: Some(1),
                last_transition_time: time(100),
            }],
            controller_name: "example.net/gateway-controller".into(),
            parent_ref: GrpcRouteStatusParentsParentRef {
                name: "gw".into(),
                ..Default::default()
            },
        }
    }

    fn apply(current: Option<GrpcRouteStatus>, plan: Option<Plan>) -> Option<GrpcRouteStatus> {
        match plan {
            Some(p) => Some(GrpcRouteStatus { parents: p.parents }),
            None => current,
        }
    }

    #[test]
    fn first_write_then_nothing_until_something_changes() {
        let want = desired(1, vec![accepted("checkout", true)]);
        let first = plan(None, &want, ME, &time(1000)).expect("a first write");
        assert_eq!(first.changes.len(), 1, "{:?}", first.changes);
        assert!(
            first.changes[0].starts_with("+Service shop/checkout:50051: Accepted=True/Accepted")
        );
        let entry = &first.parents[0];
        assert_eq!(entry.controller_name, ME);
        assert_eq!(entry.parent_ref.group.as_deref(), Some(""));
        assert_eq!(entry.parent_ref.kind.as_deref(), Some("Service"));
        assert_eq!(entry.parent_ref.port, Some(50051));
        assert!(
            entry
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
        assert!(
            entry
                .conditions
                .iter()
                .all(|c| c.last_transition_time == time(1000))
        );
        let status = apply(None, Some(first));

        // Same desired state later: no write, whatever the time.
        assert!(plan(status.as_ref(), &want, ME, &time(2000)).is_none());

        // A new generation with the same conditions: observedGeneration moves, the
        // transition times stay.
        let want2 = desired(2, vec![accepted("checkout", true)]);
        let second = plan(status.as_ref(), &want2, ME, &time(3000)).expect("generation changed");
        assert_eq!(
            second.changes,
            ["~Service shop/checkout:50051: observedGeneration 1 -> 2"]
        );
        assert!(
            second.parents[0]
                .conditions
                .iter()
                .all(|c| c.last_transition_time == time(1000))
        );
        let status = apply(status, Some(second));

        // ResolvedRefs flips: only its transition time moves.
        let want3 = desired(2, vec![accepted("checkout", false)]);
        let third = plan(status.as_ref(), &want3, ME, &time(4000)).expect("condition changed");
        assert_eq!(
            third.changes,
            [
                "~Service shop/checkout:50051: ResolvedRefs True/ResolvedRefs -> False/BackendNotFound"
            ]
        );
        let c = &third.parents[0].conditions;
        assert_eq!(c[0].last_transition_time, time(1000));
        assert_eq!(c[1].last_transition_time, time(4000));
        assert_eq!(
            (c[1].status.as_str(), c[1].reason.as_str()),
            ("False", "BackendNotFound")
        );
    }

    #[test]
    fn other_controllers_are_kept_in_place_and_stale_entries_of_ours_removed() {
        let theirs = other_entry();
        let mut stale = plan(None, &desired(1, vec![accepted("old", true)]), ME, &time(1)).unwrap();
        let ours_old = stale.parents.remove(0);
        let current = GrpcRouteStatus {
            parents: vec![ours_old, theirs.clone()],
        };
        let want = desired(1, vec![accepted("checkout", true)]);
        let p = plan(Some(&current), &want, ME, &time(5)).unwrap();
        assert_eq!(p.parents.len(), 2);
        assert_eq!(p.parents[0], theirs, "exactly as it was");
        assert_eq!(p.parents[1].parent_ref.name, "checkout");
        assert_eq!(p.changes.len(), 2);
        assert_eq!(p.changes[0], "-Service shop/old:50051");

        // A route that no longer has any Service parent: only theirs is left.
        let none = desired(1, vec![]);
        let after = apply(Some(current), Some(p));
        let p = plan(after.as_ref(), &none, ME, &time(6)).unwrap();
        assert_eq!(p.parents, vec![theirs.clone()]);
        // And nothing of ours, nothing to do.
        let only_theirs = GrpcRouteStatus {
            parents: vec![theirs],
        };
        assert!(plan(Some(&only_theirs), &none, ME, &time(7)).is_none());
        assert!(plan(None, &none, ME, &time(7)).is_none());
    }

    #[test]
    fn parent_refs_match_whatever_their_spelling_and_duplicates_collapse() {
        let mut explicit = accepted("checkout", true);
        explicit.parent_ref.namespace = Some("shop".into());
        let want = desired(1, vec![accepted("checkout", true), explicit.clone()]);
        let first = plan(None, &want, ME, &time(1)).unwrap();
        assert_eq!(
            first.parents.len(),
            1,
            "the same parent twice gets one entry"
        );
        let status = apply(None, Some(first));
        // The route now names its own namespace: same parent, respelled in place.
        let want = desired(1, vec![explicit]);
        let p = plan(status.as_ref(), &want, ME, &time(2)).unwrap();
        assert_eq!(p.parents.len(), 1);
        assert_eq!(p.parents[0].parent_ref.namespace.as_deref(), Some("shop"));
        assert_eq!(
            p.changes,
            ["~Service shop/checkout:50051: parentRef respelled"]
        );
        assert_eq!(p.parents[0].conditions[0].last_transition_time, time(1));
    }

    #[test]
    fn at_most_32_entries_and_long_messages_truncated() {
        let theirs: Vec<_> = (0..30).map(|_| other_entry()).collect();
        let current = GrpcRouteStatus { parents: theirs };
        let want = desired(
            1,
            (0..5).map(|i| accepted(&format!("s{i}"), true)).collect(),
        );
        let p = plan(Some(&current), &want, ME, &time(1)).unwrap();
        assert_eq!(p.parents.len(), 32);

        let mut long = accepted("checkout", true);
        long.conditions[0].message = "é".repeat(20_000);
        let p = plan(None, &desired(1, vec![long]), ME, &time(1)).unwrap();
        let message = &p.parents[0].conditions[0].message;
        assert!(message.len() <= MAX_MESSAGE && message.ends_with("..."));
    }
}
