//! The demo's A/B test and canary built in Rust with [`grpcroute_client::build`] (no YAML),
//! then changed at run time with [`Mesh::update`]: the experiment ends (everyone gets
//! recommendation-v2) and the canary is promoted to 50/50.
//!
//! ```text
//! cargo run --example in_code
//! ```
//!
//! The builders make the same Kubernetes objects the manifests hold, validated the same
//! way; a program can build them from its own configuration, a feature-flag service, or a
//! test.

use anyhow::ensure;
use grpcroute_client::{
    Channel, Mesh, Resources,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_echo::{BACKEND_HEADER, EchoConfig, EchoServer};
use grpcroute_examples::{
    order::v1::{PlaceOrderRequest, order_service_client::OrderServiceClient},
    recommendation::v1::{
        RecommendRequest, recommendation_service_client::RecommendationServiceClient,
    },
};
use tonic::metadata::MetadataValue;

const NS: &str = "app";
const PORT: u16 = 50051;

/// The backends, one pod each, on free loopback ports.
struct Pods {
    recommendation_v1: EchoServer,
    recommendation_v2: EchoServer,
    order_stable: EchoServer,
    order_canary: EchoServer,
}

/// What the routes say; the rest of the configuration is the same in both versions.
struct Policy {
    /// Only `x-experiment-group: treatment-a` gets v2 (`true`), or everyone does.
    experiment_running: bool,
    stable_weight: u32,
    canary_weight: u32,
}

fn resources(pods: &Pods, policy: &Policy) -> Resources {
    let mut r = Resources::new();
    // Frontends (what clients call) and backends (what routes send to).
    for name in [
        "recommendation-service",
        "recommendation-v1",
        "recommendation-v2",
        "order-service",
        "order-service-stable",
        "order-service-canary",
    ] {
        r.push(service(NS, name).port("grpc", PORT));
    }
    for (name, pod) in [
        ("recommendation-v1", &pods.recommendation_v1),
        ("recommendation-v2", &pods.recommendation_v2),
        ("order-service-stable", &pods.order_stable),
        ("order-service-canary", &pods.order_canary),
    ] {
        r.push(
            endpoints(NS, name)
                .port("grpc", pod.addr().port())
                .ready(pod.addr().ip()),
        );
    }

    let recommendation = "recommendation.v1.RecommendationService";
    let ab =
        route(NS, "recommendation-ab-route").parent_service("recommendation-service", Some(PORT));
    let ab = if policy.experiment_running {
        ab.rule(
            Rule::new()
                .matches(Match::service(recommendation).header("x-experiment-group", "treatment-a"))
                .backend(Backend::service("recommendation-v2", PORT)),
        )
        .rule(
            Rule::new()
                .matches(Match::service(recommendation))
                .backend(Backend::service("recommendation-v1", PORT)),
        )
    } else {
        ab.rule(
            Rule::new()
                .matches(Match::service(recommendation))
                .backend(Backend::service("recommendation-v2", PORT)),
        )
    };
    r.push(ab);

    r.push(
        route(NS, "order-canary-route")
            .parent_service("order-service", Some(PORT))
            .rule(
                Rule::new()
                    .matches(Match::service("order.v1.OrderService"))
                    .backend(
                        Backend::service("order-service-stable", PORT).weight(policy.stable_weight),
                    )
                    .backend(
                        Backend::service("order-service-canary", PORT).weight(policy.canary_weight),
                    ),
            ),
    );
    r
}

/// Calls `Recommend` `n` times with and without the experiment header; counts v2 answers.
async fn recommendations(
    client: &RecommendationServiceClient<Channel>,
    n: usize,
) -> anyhow::Result<(usize, usize)> {
    let (mut control_v2, mut treatment_v2) = (0, 0);
    for _ in 0..n {
        for treatment in [false, true] {
            let mut request = tonic::Request::new(RecommendRequest {
                user_id: "u-123".into(),
                limit: 10,
            });
            if treatment {
                request.metadata_mut().insert(
                    "x-experiment-group",
                    MetadataValue::from_static("treatment-a"),
                );
            }
            let response = client.clone().recommend(request).await?;
            if response
                .metadata()
                .get(BACKEND_HEADER)
                .is_some_and(|b| b == "recommendation-v2")
            {
                if treatment {
                    treatment_v2 += 1;
                } else {
                    control_v2 += 1;
                }
            }
        }
    }
    Ok((control_v2, treatment_v2))
}

/// Places `n` orders; counts those the canary served.
async fn canary_calls(client: &OrderServiceClient<Channel>, n: usize) -> anyhow::Result<usize> {
    let mut canary = 0;
    for _ in 0..n {
        let response = client
            .clone()
            .place_order(PlaceOrderRequest {
                user_id: "u-123".into(),
                items: Vec::new(),
            })
            .await?;
        if response
            .metadata()
            .get(BACKEND_HEADER)
            .is_some_and(|b| b == "order-service-canary")
        {
            canary += 1;
        }
    }
    Ok(canary)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    grpcroute_examples::log_to_stderr();
    let pod = |name: &str| EchoServer::start(EchoConfig::new(name).namespace(NS));
    let pods = Pods {
        recommendation_v1: pod("recommendation-v1").await?,
        recommendation_v2: pod("recommendation-v2").await?,
        order_stable: pod("order-service-stable").await?,
        order_canary: pod("order-service-canary").await?,
    };

    // A mesh without a source: it routes by whatever `update` gives it.
    let mesh = Mesh::builder().namespace(NS).build();
    let before = Policy {
        experiment_running: true,
        stable_weight: 90,
        canary_weight: 10,
    };
    let report = mesh.update(&resources(&pods, &before));
    ensure!(
        report.rejected.is_empty(),
        "rejected: {:?}",
        report.rejected
    );
    println!(
        "version {}: {} objects added",
        report.version, report.changes.added
    );

    let recommendation =
        RecommendationServiceClient::new(mesh.channel("recommendation-service.app:50051")?);
    let order = OrderServiceClient::new(mesh.channel("order-service.app:50051")?);
    const N: usize = 50;
    const ORDERS: usize = 1000;

    let (control_v2, treatment_v2) = recommendations(&recommendation, N).await?;
    let canary = canary_calls(&order, ORDERS).await?;
    println!(
        "  A/B:    recommendation-v2 served {control_v2}/{N} control and {treatment_v2}/{N} treatment-a calls"
    );
    println!("  canary: order-service-canary served {canary}/{ORDERS} orders (weight 10 of 100)");
    ensure!(
        control_v2 == 0 && treatment_v2 == N,
        "the A/B routes are wrong"
    );
    // 4σ of a binomial(1000, 0.1): 100 ± 38.
    ensure!(
        (62..=138).contains(&canary),
        "the 90/10 split is off: {canary}"
    );

    // The experiment ends and the canary is promoted: one update, applied atomically; calls
    // in flight finish where they were going.
    let after = Policy {
        experiment_running: false,
        stable_weight: 50,
        canary_weight: 50,
    };
    let report = mesh.update(&resources(&pods, &after));
    ensure!(
        report.rejected.is_empty(),
        "rejected: {:?}",
        report.rejected
    );
    println!(
        "version {}: {} objects changed (the two routes)",
        report.version, report.changes.changed
    );
    let (control_v2, treatment_v2) = recommendations(&recommendation, N).await?;
    let canary = canary_calls(&order, ORDERS).await?;
    println!(
        "  A/B:    recommendation-v2 served {control_v2}/{N} control and {treatment_v2}/{N} treatment-a calls"
    );
    println!("  canary: order-service-canary served {canary}/{ORDERS} orders (weight 50 of 100)");
    ensure!(
        control_v2 == N && treatment_v2 == N,
        "everyone should get v2 now"
    );
    // 4σ of a binomial(1000, 0.5): 500 ± 63.
    ensure!(
        (437..=563).contains(&canary),
        "the 50/50 split is off: {canary}"
    );
    ensure!(
        report.changes.changed == 2,
        "expected exactly the two routes to change"
    );
    Ok(())
}
