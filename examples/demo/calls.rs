//! The calls the demo makes, and counting who served them.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use grpcroute_client::Channel;
use grpcroute_examples::{
    order::v1::{
        GetOrderRequest, LineItem, PlaceOrderRequest, order_service_client::OrderServiceClient,
    },
    recommendation::v1::{
        RecommendRequest, recommendation_service_client::RecommendationServiceClient,
    },
    user::v1::{
        CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, UpdateUserRequest,
        User, user_service_client::UserServiceClient,
    },
};
use tokio::task::JoinSet;
use tonic::{Status, metadata::MetadataValue};

use crate::{EXPERIMENT_HEADER, join, pods};

/// Calls in flight at once in each batch.
const WORKERS: usize = 8;

/// Response metadata naming the pod that served a call.
pub(crate) const BACKEND: &str = grpcroute_echo::BACKEND_HEADER;

/// Pod name (or error) → calls.
pub(crate) type Tally = BTreeMap<String, usize>;

/// The pod that served a call.
pub(crate) fn served_by<T>(response: tonic::Response<T>) -> String {
    response
        .metadata()
        .get(BACKEND)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no x-echo-backend)")
        .to_string()
}

pub(crate) async fn call_user(
    mut client: UserServiceClient<Channel>,
    method: &str,
) -> Result<String, Status> {
    let user = || User {
        user_id: "u-123".into(),
        name: "Hanako".into(),
        email: "hanako@example.com".into(),
    };
    match method {
        "GetUser" => client
            .get_user(GetUserRequest {
                user_id: "u-123".into(),
            })
            .await
            .map(served_by),
        "ListUsers" => client
            .list_users(ListUsersRequest {
                page_size: 50,
                page_token: String::new(),
            })
            .await
            .map(served_by),
        "CreateUser" => client
            .create_user(CreateUserRequest {
                name: "Hanako".into(),
                email: "hanako@example.com".into(),
            })
            .await
            .map(served_by),
        "UpdateUser" => client
            .update_user(UpdateUserRequest { user: Some(user()) })
            .await
            .map(served_by),
        "DeleteUser" => client
            .delete_user(DeleteUserRequest {
                user_id: "u-123".into(),
            })
            .await
            .map(served_by),
        other => Err(Status::invalid_argument(format!("no such method {other}"))),
    }
}

pub(crate) async fn call_recommend(
    mut client: RecommendationServiceClient<Channel>,
    experiment: Option<&'static str>,
) -> Result<String, Status> {
    let mut request = tonic::Request::new(RecommendRequest {
        user_id: "u-123".into(),
        limit: 10,
    });
    if let Some(group) = experiment {
        request
            .metadata_mut()
            .insert(EXPERIMENT_HEADER, MetadataValue::from_static(group));
    }
    client.recommend(request).await.map(served_by)
}

pub(crate) async fn call_get_order(
    mut client: OrderServiceClient<Channel>,
) -> Result<String, Status> {
    client
        .get_order(GetOrderRequest {
            order_id: "o-1001".into(),
        })
        .await
        .map(served_by)
}

pub(crate) async fn call_order(mut client: OrderServiceClient<Channel>) -> Result<String, Status> {
    client
        .place_order(PlaceOrderRequest {
            user_id: "u-123".into(),
            items: vec![LineItem {
                product_id: "p-42".into(),
                quantity: 1,
            }],
        })
        .await
        .map(served_by)
}

/// Makes `calls` calls, `WORKERS` at a time, and counts who served them.
pub(crate) async fn spread<F, Fut>(calls: usize, call: F) -> Tally
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let mut workers = JoinSet::new();
    for w in 0..WORKERS {
        let share = calls / WORKERS + usize::from(w < calls % WORKERS);
        let call = call.clone();
        workers.spawn(async move {
            let mut tally = Tally::new();
            for _ in 0..share {
                let key = match call().await {
                    Ok(pod) => pod,
                    Err(s) => format!(
                        "error {}: {}",
                        grpcroute_client::code_name(s.code()),
                        s.message()
                    ),
                };
                *tally.entry(key).or_default() += 1;
            }
            tally
        });
    }
    let mut tally = Tally::new();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(part) => {
                for (k, n) in part {
                    *tally.entry(k).or_default() += n;
                }
            }
            Err(e) => {
                *tally
                    .entry(format!("error: worker failed: {e}"))
                    .or_default() += 1
            }
        }
    }
    tally
}

/// Groups a tally by Deployment: backend → (calls, "pod: calls, ...").
pub(crate) fn group(tally: &Tally) -> BTreeMap<String, (usize, String)> {
    let mut out: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for (key, n) in tally {
        let (backend, pod) = if key.starts_with("error") {
            (key.as_str(), String::new())
        } else {
            let backend = pods::deployment_of(key);
            (
                backend,
                key[backend.len()..].trim_start_matches('-').to_string(),
            )
        };
        let entry = out.entry(backend.to_string()).or_default();
        entry.0 += n;
        if !pod.is_empty() {
            entry.1.push(format!("{pod}: {n}"));
        }
    }
    out.into_iter()
        .map(|(k, (n, pods))| (k, (n, pods.join(", "))))
        .collect()
}

/// "backend: n, backend: n".
pub(crate) fn summary(groups: &BTreeMap<String, (usize, String)>) -> String {
    if groups.is_empty() {
        return "no calls".into();
    }
    join(groups.iter().map(|(b, (n, _))| format!("{b}: {n}")))
}
