//! The mesh as a tower layer: `ServiceBuilder::new().layer(mesh.layer()).service(fallback)`.
//!
//! ```text
//! cargo run --example layer
//! ```
//!
//! Calls whose origin (`Client::with_origin`) names a Service of the mesh are routed by its
//! GRPCRoutes; every other call goes to the wrapped service unchanged (here an ordinary
//! tonic channel to a server outside the mesh). Use this form when a stack already has
//! middleware, or when one client talks to both mesh Services and other hosts.

use anyhow::ensure;
use grpcroute_client::{
    Mesh, Resources,
    build::{Backend, Match, Rule, endpoints, route, service},
};
use grpcroute_echo::{BACKEND_HEADER, EchoConfig, EchoServer};
use grpcroute_examples::{
    order::v1::{GetOrderRequest, order_service_client::OrderServiceClient},
    user::v1::{GetUserRequest, user_service_client::UserServiceClient},
};
use tonic::codegen::http::Uri;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    grpcroute_examples::log_to_stderr();
    // One pod in the mesh, and one server outside it.
    let stable =
        EchoServer::start(EchoConfig::new("order-service-stable").namespace("app")).await?;
    let legacy = EchoServer::start(EchoConfig::new("legacy-user-db")).await?;

    let mesh = Mesh::builder().namespace("app").build();
    let report = mesh.update(
        &Resources::new()
            .with(service("app", "order-service").port("grpc", 50051))
            .with(service("app", "order-service-stable").port("grpc", 50051))
            .with(
                endpoints("app", "order-service-stable")
                    .port("grpc", stable.addr().port())
                    .ready(stable.addr().ip()),
            )
            .with(
                route("app", "order-route")
                    .parent_service("order-service", Some(50051))
                    .rule(
                        Rule::new()
                            .matches(Match::service("order.v1.OrderService"))
                            .backend(Backend::service("order-service-stable", 50051)),
                    ),
            ),
    );
    ensure!(
        report.rejected.is_empty(),
        "rejected: {:?}",
        report.rejected
    );

    // The wrapped service: a plain tonic channel, here to the server outside the mesh.
    let fallback = tonic::transport::Endpoint::from_shared(format!("http://{}", legacy.addr()))?
        .connect_lazy();
    let svc = tower::ServiceBuilder::new()
        .layer(mesh.layer())
        .service(fallback);

    // A mesh Service: routed by the mesh.
    let mut orders = OrderServiceClient::with_origin(
        svc.clone(),
        Uri::from_static("http://order-service.app:50051"),
    );
    let response = orders
        .get_order(GetOrderRequest {
            order_id: "o-1001".into(),
        })
        .await?;
    let served = served_by(&response);
    println!("order-service.app:50051     (a Service of the mesh) -> served by {served}");
    ensure!(
        served == "order-service-stable",
        "the mesh did not route the call"
    );

    // Not a Service the mesh knows: passed to the fallback channel untouched.
    let mut users =
        UserServiceClient::with_origin(svc, Uri::from_static("http://users.legacy.internal:7000"));
    let response = users
        .get_user(GetUserRequest {
            user_id: "u-123".into(),
        })
        .await?;
    let served = served_by(&response);
    println!("users.legacy.internal:7000  (not in the mesh)       -> served by {served}");
    ensure!(
        served == "legacy-user-db",
        "the call did not reach the fallback"
    );
    Ok(())
}

/// The echo server that answered.
fn served_by<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string()
}
