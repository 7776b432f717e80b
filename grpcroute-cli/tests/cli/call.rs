//! `grpcroute call` against `grpcroute echo` servers started by each test.

use serde_json::{Value, json};

use crate::support::{Echo, closed_port, keys, run, split_manifests};

fn call(dir: &tempfile::TempDir, extra: &[&str]) -> crate::support::Run {
    let path = dir.path().to_str().unwrap().to_string();
    let mut args: Vec<&str> = vec!["call", "-f", &path];
    args.extend_from_slice(extra);
    run(&args)
}

fn count(map: &Value, key: &str) -> u64 {
    map[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {map}"))
}

/// `|observed - n p| <= 4 sigma` for a binomial count.
fn within_4_sigma(observed: u64, n: u64, p: f64) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    let diff = (observed as f64 - mean).abs();
    assert!(
        diff <= 4.0 * sigma,
        "{observed} of {n} is more than 4 sigma ({sigma:.1}) from {mean}"
    );
}

#[test]
fn a_weighted_split_is_honoured_within_4_sigma() {
    let (v1, v2) = (Echo::start("v1"), Echo::start("v2"));
    let dir = split_manifests(v1.port(), v2.port());
    let out = call(
        &dir,
        &[
            "--to",
            "checkout.shop:50051",
            "--method",
            "/shop.Checkout/Pay",
            "-n",
            "1000",
            "-c",
            "8",
            "--json",
            "--expect-ok",
        ],
    );
    out.exits(0);
    let r = out.json();
    assert_eq!(
        keys(&r),
        [
            "by_backend",
            "by_endpoint",
            "by_status",
            "calls",
            "latency_ms"
        ]
    );
    assert_eq!(r["calls"], 1000);
    assert_eq!(r["by_status"], json!({"OK": 1000}));
    let to_v1 = count(&r["by_backend"], "shop/checkout-v1:50051");
    let to_v2 = count(&r["by_backend"], "shop/checkout-v2:50051");
    assert_eq!(to_v1 + to_v2, 1000, "{}", r["by_backend"]);
    within_4_sigma(to_v1, 1000, 0.9);
    // Each backend has one endpoint: the echo server it points at.
    assert_eq!(
        r["by_endpoint"],
        json!({v1.addr.to_string(): to_v1, v2.addr.to_string(): to_v2})
    );
    let l = &r["latency_ms"];
    assert_eq!(keys(l), ["max", "p50", "p90", "p99"]);
    let ms = |k: &str| l[k].as_f64().unwrap();
    assert!(
        0.0 < ms("p50")
            && ms("p50") <= ms("p90")
            && ms("p90") <= ms("p99")
            && ms("p99") <= ms("max"),
        "{l}"
    );
}

#[test]
fn calls_failing_in_the_mesh_are_counted_under_their_backend_or_none() {
    let (v1, v2) = (Echo::start("v1"), Echo::start("v2"));
    let dir = split_manifests(v1.port(), v2.port());

    // Half the calls pick a backend that does not exist: UNAVAILABLE, no endpoint.
    let half = [
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Half",
        "-n",
        "200",
        "-c",
        "4",
        "--json",
    ];
    let out = call(&dir, &half);
    out.exits(0);
    let r = out.json();
    let failed = count(&r["by_status"], "UNAVAILABLE");
    assert_eq!(count(&r["by_status"], "OK") + failed, 200);
    within_4_sigma(failed, 200, 0.5);
    assert_eq!(count(&r["by_backend"], "shop/checkout-gone:50051"), failed);
    assert_eq!(
        count(&r["by_backend"], "shop/checkout-v1:50051"),
        200 - failed
    );
    assert_eq!(
        r["by_endpoint"],
        json!({"none": failed, v1.addr.to_string(): 200 - failed})
    );
    let mut strict = half.to_vec();
    strict.push("--expect-ok");
    call(&dir, &strict).exits(1);

    // No rule matches: no backend is picked.
    let out = call(
        &dir,
        &[
            "--to",
            "checkout.shop:50051",
            "--method",
            "/other.Svc/X",
            "-n",
            "3",
            "--json",
        ],
    );
    out.exits(0);
    let r = out.json();
    assert_eq!(r["by_status"], json!({"UNIMPLEMENTED": 3}));
    assert_eq!(r["by_backend"], json!({"none": 3}));
    assert_eq!(r["by_endpoint"], json!({"none": 3}));
}

#[test]
fn pass_through_calls_carry_metadata_and_a_payload() {
    let (v1, v2) = (Echo::start("v1"), Echo::start("v2"));
    let dir = split_manifests(v1.port(), v2.port());
    let payload = dir.path().join("request.bin");
    std::fs::write(&payload, [0x0a, 0x01, 0x61]).unwrap();
    let at_payload = format!("@{}", payload.display());
    for data in ["0a0161", at_payload.as_str()] {
        let out = call(
            &dir,
            &[
                "--from-namespace",
                "shop",
                "--to",
                "direct:50051",
                "--method",
                "/any.Thing/Do",
                "-H",
                "x-user:alice",
                "-d",
                data,
                "-n",
                "5",
                "--json",
                "--expect-ok",
            ],
        );
        out.exits(0);
        let r = out.json();
        assert_eq!(r["by_backend"], json!({"shop/direct:50051": 5}));
        assert_eq!(r["by_endpoint"], json!({v1.addr.to_string(): 5}));
    }
}

#[test]
fn an_unreachable_endpoint_fails_unavailable_before_reaching_it() {
    let v1 = Echo::start("v1");
    let dir = split_manifests(v1.port(), closed_port());
    let out = call(
        &dir,
        &[
            "--to",
            "checkout-v2.shop:50051",
            "--method",
            "/shop.Checkout/Pay",
            "-n",
            "2",
            "--json",
            "--expect-ok",
        ],
    );
    out.exits(1);
    let r = out.json();
    assert_eq!(r["by_status"], json!({"UNAVAILABLE": 2}));
    assert_eq!(r["by_backend"], json!({"shop/checkout-v2:50051": 2}));
    assert_eq!(r["by_endpoint"], json!({"none": 2}));
}

#[test]
fn human_form_has_tables_and_the_first_failure_message() {
    let (v1, v2) = (Echo::start("v1"), Echo::start("v2"));
    let dir = split_manifests(v1.port(), v2.port());
    let out = call(
        &dir,
        &[
            "--to",
            "checkout.shop:50051",
            "--method",
            "/shop.Checkout/Half",
            "-n",
            "40",
        ],
    );
    out.exits(0);
    let text = &out.stdout;
    assert!(
        text.starts_with("40 calls to checkout.shop:50051 /shop.Checkout/Half in "),
        "{text}"
    );
    assert!(
        text.contains("\nSTATUS       CALLS  SHARE  FIRST MESSAGE\n"),
        "{text}"
    );
    assert!(
        text.contains("backendRef shop/checkout-gone:50051 is invalid (BackendNotFound)"),
        "{text}"
    );
    assert!(
        text.contains("\nBACKEND                   CALLS  SHARE\n"),
        "{text}"
    );
    assert!(text.contains(&format!("\n{}", v1.addr)), "{text}");
    assert!(text.contains("\nnone "), "{text}");
    assert!(text.contains("\nLATENCY  p50 "), "{text}");
    assert!(!text.contains('\x1b'));
    assert_eq!(
        out.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
}

#[test]
fn input_errors_exit_2_before_any_call() {
    let v1 = Echo::start("v1");
    let dir = split_manifests(v1.port(), v1.port());
    call(
        &dir,
        &["--to", "https://api.example.com", "--method", "/a.B/C"],
    )
    .input_error(&["--to", "api.example.com"]);
    run(&[
        "call",
        "-f",
        "bad-yaml.yaml",
        "--to",
        "fine.shop:50051",
        "--method",
        "/a.B/C",
    ])
    .input_error(&["bad-yaml.yaml (document 1)"]);
}
