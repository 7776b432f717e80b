//! What the TLS tests share: a mesh with one backend Service (`shop/cart:50051`) whose
//! endpoints are given servers, calls with raw bytes, and a load of callers that counts
//! every failure.

#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use grpcroute_client::{
    Mesh, MeshBuilder, Resources,
    build::{endpoints, service},
};
use grpcroute_echo::RawCodec;
use grpcroute_test_identity::{Ca, Issued, Leaf};
use tonic::{Request, Response, Status};

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/web/sa/frontend";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/cart";
pub const TARGET: &str = "cart.shop:50051";
pub const BACKEND: &str = "shop/cart:50051";
/// Every step of a test is bounded by this.
pub const BOUND: Duration = Duration::from_secs(10);

/// The Service `shop/cart` (port 50051) with `addrs` as its ready endpoints. The test
/// servers listen on random ports, so each endpoint gets a slice of its own.
pub fn resources(addrs: &[SocketAddr]) -> Resources {
    let mut resources = Resources::new().with(service("shop", "cart").port("grpc", 50051));
    for (i, addr) in addrs.iter().enumerate() {
        resources = resources.with(
            endpoints("shop", "cart")
                .name(&format!("cart-{i}"))
                .port("grpc", addr.port())
                .ready(addr.ip()),
        );
    }
    resources
}

/// A mesh in namespace `web` built by `builder`, configured with `resources(addrs)`.
pub fn mesh(builder: MeshBuilder, addrs: &[SocketAddr]) -> Mesh {
    let mesh = builder.namespace("web").build();
    let report = mesh.update(&resources(addrs));
    assert!(report.rejected.is_empty(), "{report:?}");
    mesh
}

/// One call with an empty message, bounded.
pub async fn call(mesh: &Mesh) -> Result<Response<Bytes>, Status> {
    let channel = mesh.channel(TARGET).expect("a Service address");
    let mut grpc = tonic::client::Grpc::new(channel);
    tokio::time::timeout(BOUND, async {
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        grpc.unary(
            Request::new(Bytes::new()),
            "/test.Svc/Call".parse().expect("a path"),
            RawCodec,
        )
        .await
    })
    .await
    .expect("the call finishes within the bound")
}

/// A CA and SVIDs for the client and the server.
pub struct Pki {
    pub ca: Ca,
    pub client: Issued,
    pub server: Issued,
}

impl Pki {
    pub fn new() -> Self {
        let ca = Ca::new("mesh CA").unwrap();
        let client = ca.issue(&Leaf::spiffe(CLIENT_ID)).unwrap();
        let server = ca.issue(&Leaf::spiffe(SERVER_ID)).unwrap();
        Self { ca, client, server }
    }

    /// The client's credentials.
    pub fn client_credentials(&self) -> grpcroute_client::identity::Credentials {
        grpcroute_client::identity::Credentials::from_pem(
            self.client.cert_pem.as_bytes(),
            self.client.key_pem.as_bytes(),
            self.ca.cert_pem().as_bytes(),
        )
        .unwrap()
    }
}

/// Callers calling continuously until stopped: how many calls succeeded and the failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(mesh: &Mesh, callers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..callers)
            .map(|_| {
                let (mesh, stop, ok, failures) =
                    (mesh.clone(), stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match call(&mesh).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(status) => failures.lock().unwrap().push(format!("{status:?}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more calls have succeeded (bounded).
    pub async fn wait_for_more(&self, n: u64, step: &str) {
        let target = self.ok() + n;
        tokio::time::timeout(BOUND, async {
            while self.ok() < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{step}: {n} more calls did not succeed within {BOUND:?}"));
    }

    /// Stops the callers; returns (succeeded, failures).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(BOUND, task)
                .await
                .expect("callers stop within the bound")
                .unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}
