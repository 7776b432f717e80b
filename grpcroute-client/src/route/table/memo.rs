//! What a compiled [`Table`](super::Table) keeps so that the next compile can reuse the
//! parts whose inputs did not change: each route's compiled rules, parent outcomes and
//! status, and each frontend. A change to one route then compiles that route and the
//! frontends it attaches to, not the whole configuration.
//!
//! Reuse is all or nothing on the inputs every route reads besides itself (the Services
//! its refs resolve against, the ReferenceGrants and the grant policy): if any of them
//! differs, nothing is reused. Within that, a route is reused when it is the same object
//! or an equal one, and a frontend when the same compiled routes attach to it in the same
//! order. Both are then exactly what a fresh compile would build, slot ids included,
//! because those ids only depend on the Services (see `Context::new`).

use std::{collections::BTreeMap, fmt, sync::Arc};

use super::{CompiledRule, FastMap, GrantPolicy, RouteStatus, status::ParentOutcome};
use crate::model::{GrpcRoute, Model, ObjectKey, ParentRef, ReferenceGrant, Service};

/// The compiled rules of one route, shared by every frontend it attaches to; compared
/// by pointer to tell whether a frontend's routes are the ones it was built from.
pub(super) type Rules = Arc<[Arc<CompiledRule>]>;

/// What one route compiled to.
#[derive(Clone)]
pub(super) struct RouteMemo {
    pub(super) route: Arc<GrpcRoute>,
    pub(super) rules: Rules,
    /// Each Service parentRef and what it attached to.
    pub(super) parents: Arc<[(ParentRef, ParentOutcome)]>,
    pub(super) status: RouteStatus,
}

/// The routes attached to one Service port, in the order the route sets were built from.
#[derive(Default)]
pub(super) struct PortRoutes {
    pub(super) producer: Vec<(Arc<GrpcRoute>, Rules)>,
    pub(super) consumers: BTreeMap<Box<str>, Vec<(Arc<GrpcRoute>, Rules)>>,
}

impl PortRoutes {
    /// Whether both name the same compiled routes in the same places and order. Rules are
    /// only reused for an equal route, so the same rules mean the same route.
    pub(super) fn same_as(&self, other: &Self) -> bool {
        fn same(a: &[(Arc<GrpcRoute>, Rules)], b: &[(Arc<GrpcRoute>, Rules)]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|((_, x), (_, y))| Arc::ptr_eq(x, y))
        }
        same(&self.producer, &other.producer)
            && self.consumers.len() == other.consumers.len()
            && self
                .consumers
                .iter()
                .zip(&other.consumers)
                .all(|((na, a), (nb, b))| na == nb && same(a, b))
    }
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Memo {
    policy: GrantPolicy,
    services: Vec<Arc<Service>>,
    grants: Vec<Arc<ReferenceGrant>>,
    pub(super) routes: FastMap<ObjectKey, RouteMemo>,
    pub(super) frontends: FastMap<(ObjectKey, u16), PortRoutes>,
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("routes", &self.routes.len())
            .field("frontends", &self.frontends.len())
            .finish_non_exhaustive()
    }
}

impl Memo {
    /// An empty memo for a table compiled from `model` under `policy`.
    pub(super) fn new(model: &Model, policy: GrantPolicy) -> Self {
        Self {
            policy,
            services: model.services.clone(),
            grants: model.grants.clone(),
            routes: FastMap::default(),
            frontends: FastMap::default(),
        }
    }

    /// Whether what this memo holds was compiled from the same Services, grants and
    /// policy as `model` would be: the condition for reusing any of it.
    pub(super) fn reusable_for(&self, model: &Model, policy: GrantPolicy) -> bool {
        self.policy == policy
            && same_objects(&self.services, &model.services)
            && same_objects(&self.grants, &model.grants)
    }

    /// The route compiled from `route` or an equal one, if there was one.
    pub(super) fn route(&self, route: &Arc<GrpcRoute>) -> Option<&RouteMemo> {
        self.routes
            .get(&route.key)
            .filter(|m| Arc::ptr_eq(&m.route, route) || *m.route == **route)
    }
}

/// Equal lists, in the same order; the pointer check makes a source that keeps its
/// objects (the Kubernetes source does) skip the deep comparison.
fn same_objects<T: PartialEq>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}
