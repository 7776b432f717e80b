//! A test control plane to try oracles (or the library) by hand: serves one listener →
//! route → cluster → endpoints on 127.0.0.1 and prints every request and response.
//!
//! ```text
//! xds-control-plane [--port N] [--listener NAME] --endpoint 127.0.0.1:PORT [--endpoint …]
//! ```
//!
//! Prints `PORT <n>` and a bootstrap for node `manual` first; runs until killed.

use std::{net::SocketAddr, time::Duration};

use grpcroute_xds_control_plane::{
    ControlPlane,
    builders::{
        ApiListener, ClusterBuilder, RouteBuilder, load_assignment, route_configuration,
        virtual_host,
    },
    control_plane::render_since,
};

fn usage() -> ! {
    eprintln!(
        "usage: xds-control-plane [--port N] [--listener NAME] --endpoint 127.0.0.1:PORT [--endpoint ...]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut port = 0u16;
    let mut listener = "svc".to_string();
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--port" => port = value.parse().unwrap_or_else(|_| usage()),
            "--listener" => listener = value,
            "--endpoint" => endpoints.push(value.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let cp = match ControlPlane::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    };
    let (rc, cluster) = (format!("{listener}-rc"), format!("{listener}-c"));
    cp.set([
        ApiListener::rds(&listener, &rc).build().into(),
        route_configuration(
            &rc,
            vec![virtual_host(
                "vh",
                &["*"],
                vec![RouteBuilder::prefix("/").cluster(&cluster).build()],
            )],
        )
        .into(),
        ClusterBuilder::eds(&cluster).build().into(),
        load_assignment(&cluster, endpoints).into(),
    ]);
    println!("PORT {}", cp.addr().port());
    println!("{}", cp.bootstrap("manual").to_json());
    let start = tokio::time::Instant::now();
    let mut seen = 0;
    loop {
        let log = cp.log();
        if log.len() > seen {
            print!("{}", render_since(&log[seen..], start));
            seen = log.len();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
