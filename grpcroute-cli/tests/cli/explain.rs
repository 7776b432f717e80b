//! `grpcroute explain`.

use serde_json::{Value, json};

use crate::support::{keys, run};

fn explain(extra: &[&str]) -> Value {
    let mut args = vec!["explain", "-f", "shop", "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    out.exits(0);
    out.json()
}

#[test]
fn json_has_every_key_and_the_filtered_metadata() {
    let e = explain(&[
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Pay",
        "-H",
        "x-experiment-group:treatment-a",
        "-H",
        "X-Trace: a",
        "-H",
        "x-trace:b",
    ]);
    assert_eq!(
        keys(&e),
        [
            "backends",
            "frontend",
            "outcome",
            "reason",
            "request_headers",
            "route",
            "route_set",
            "rule",
            "status"
        ]
    );
    assert_eq!(
        e["frontend"],
        json!({"namespace": "shop", "service": "checkout", "port": 50051})
    );
    assert_eq!(e["route_set"], "producer");
    assert_eq!(
        e["route"],
        json!({"namespace": "shop", "name": "checkout-split"})
    );
    assert_eq!(e["rule"], json!({"index": 0, "name": "treatment"}));
    assert_eq!(
        (&e["outcome"], &e["status"]),
        (&"forward".into(), &"OK".into())
    );
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("checkout-split rule 0")
    );
    // `cluster` (null for Services), `request_headers`, `ejected` and `tls` were added for
    // xDS, backend-level filters, failure accrual and BackendTLSPolicy; every earlier key
    // keeps its value.
    assert_eq!(
        e["backends"],
        json!([{"namespace": "shop", "service": "checkout-v2", "port": 50051, "weight": 1, "share": 1.0,
                "valid": true, "reason": null, "endpoints": ["10.0.2.1:9102"], "cluster": null, "ejected": [],
                "request_headers": {"x-canary": ["true"], "x-experiment-group": ["treatment-a"],
                                    "x-trace": ["a", "b"]}, "tls": null}])
    );
    assert_eq!(
        e["request_headers"],
        json!({"x-canary": ["true"], "x-experiment-group": ["treatment-a"], "x-trace": ["a", "b"]})
    );
}

#[test]
fn weighted_rule_lists_shares_and_ready_endpoints() {
    let e = explain(&[
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Pay",
    ]);
    assert_eq!(e["rule"], json!({"index": 1, "name": "split"}));
    let backends = e["backends"].as_array().unwrap();
    assert_eq!(
        (&backends[0]["service"], &backends[0]["share"]),
        (&"checkout-v1".into(), &0.9.into())
    );
    assert_eq!(
        (&backends[1]["service"], &backends[1]["share"]),
        (&"checkout-v2".into(), &0.1.into())
    );
    // 10.0.1.3 is not ready.
    assert_eq!(
        backends[0]["endpoints"],
        json!(["10.0.1.1:9101", "10.0.1.2:9101"])
    );
    assert_eq!(e["request_headers"], json!({}));
}

#[test]
fn every_target_form_names_the_same_frontend() {
    let frontend = json!({"namespace": "shop", "service": "checkout", "port": 50051});
    for to in [
        "checkout.shop:50051",
        "checkout.shop",
        "checkout.shop.svc:50051",
        "checkout.shop.svc.cluster.local:50051",
        "10.96.0.10:50051",
    ] {
        let e = explain(&["--to", to, "--method", "/shop.Checkout/Pay"]);
        assert_eq!(e["frontend"], frontend, "{to}");
        assert_eq!(e["outcome"], "forward", "{to}");
    }
    let e = explain(&[
        "--from-namespace",
        "shop",
        "--to",
        "checkout:50051",
        "--method",
        "/shop.Checkout/Pay",
    ]);
    assert_eq!(e["frontend"], frontend);
    let e = explain(&[
        "--cluster-domain",
        "corp.example",
        "--to",
        "checkout.shop.svc.corp.example:50051",
        "--method",
        "/shop.Checkout/Pay",
    ]);
    assert_eq!(e["frontend"], frontend);
}

#[test]
fn consumer_routes_apply_to_their_namespace() {
    let e = explain(&[
        "--from-namespace",
        "web",
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Pay",
    ]);
    assert_eq!(e["route_set"], "consumer");
    assert_eq!(
        e["route"],
        json!({"namespace": "web", "name": "checkout-canary"})
    );
    assert_eq!(e["rule"], json!({"index": 0, "name": null}));
}

#[test]
fn a_service_without_routes_passes_through() {
    let e = explain(&[
        "--to",
        "payments.shop:50051",
        "--method",
        "/shop.Payments/Pay",
    ]);
    assert_eq!(
        (&e["route_set"], &e["outcome"], &e["status"]),
        (&"none".into(), &"passthrough".into(), &"OK".into())
    );
    assert_eq!((&e["route"], &e["rule"]), (&Value::Null, &Value::Null));
    assert_eq!(e["backends"][0]["service"], "payments");
    assert_eq!(e["backends"][0]["endpoints"], json!(["10.0.3.1:9300"]));
}

#[test]
fn invalid_shares_are_marked_but_the_call_is_forwarded() {
    let out = run(&[
        "explain",
        "-f",
        "shop",
        "-f",
        "broken-refs.yaml",
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Refund",
        "--json",
        "--expect-ok",
    ]);
    out.exits(0);
    let e = out.json();
    assert_eq!(
        (&e["outcome"], &e["status"]),
        (&"forward".into(), &"OK".into())
    );
    let gone = &e["backends"][1];
    assert_eq!(
        (&gone["service"], &gone["valid"], &gone["share"]),
        (&"refunds-gone".into(), &false.into(), &0.5.into())
    );
    assert!(
        gone["reason"]
            .as_str()
            .unwrap()
            .starts_with("BackendNotFound")
    );
    assert_eq!(gone["endpoints"], json!([]));
}

#[test]
fn failing_outcomes_exit_1_only_with_expect_ok() {
    let args = [
        "explain",
        "-f",
        "shop",
        "--to",
        "checkout.shop:50051",
        "--method",
        "/other.Svc/X",
        "--json",
    ];
    let out = run(&args);
    out.exits(0);
    let e = out.json();
    assert_eq!(
        (&e["outcome"], &e["status"]),
        (&"unimplemented".into(), &"UNIMPLEMENTED".into())
    );
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("shop/checkout-split")
    );
    assert_eq!(e["backends"], json!([]));
    let mut strict = args.to_vec();
    strict.push("--expect-ok");
    run(&strict).exits(1);

    let out = run(&[
        "explain",
        "-f",
        "shop",
        "--to",
        "nothere.shop:50051",
        "--method",
        "/a.B/C",
        "--json",
        "--expect-ok",
    ]);
    out.exits(1);
    let e = out.json();
    assert_eq!(
        (&e["outcome"], &e["status"]),
        (&"unavailable".into(), &"UNAVAILABLE".into())
    );
    assert_eq!(e["reason"], "Service shop/nothere not found");
}

#[test]
fn human_form_summarises_then_lists_backends() {
    let out = run(&[
        "explain",
        "-f",
        "shop",
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Pay",
        "-H",
        "x-user:alice",
    ]);
    out.exits(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "frontend   Service shop/checkout:50051");
    assert_eq!(lines[1], "route set  producer");
    assert_eq!(
        lines[2],
        "rule       shop/checkout-split rule 1 (\"split\")"
    );
    assert_eq!(lines[3], "outcome    forward (OK)");
    assert!(
        out.stdout
            .contains("\nBACKEND                 WEIGHT  SHARE  VALID  ENDPOINTS")
    );
    assert!(out.stdout.contains(
        "\nshop/checkout-v1:50051      90  90.0%  yes    10.0.1.1:9101, 10.0.1.2:9101\n"
    ));
    assert!(out.stdout.ends_with("REQUEST METADATA\nx-user: alice\n"));
}

#[test]
fn unreadable_manifests_are_one_line_input_errors() {
    let base = [
        "explain",
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Pay",
        "-f",
        "shop",
    ];
    let with = |file: &'static str| {
        let mut args = base.to_vec();
        args.extend(["-f", file]);
        run(&args)
    };
    with("bad-yaml.yaml").input_error(&["bad-yaml.yaml (document 1)", "invalid YAML"]);
    with("bad-field.yaml").input_error(&[
        "bad-field.yaml (document 0)",
        "GRPCRoute shop/bad-weight",
        "spec.rules[0].backendRefs[0].weight",
    ]);
    with("missing.yaml").input_error(&["-f missing.yaml"]);
    // A policy of a newer release is refused like any other document that does not decode:
    // nothing is explained (or called) as if it did not exist.
    with("newer-policy.yaml").input_error(&[
        "newer-policy.yaml (document 0)",
        "BackendTLSPolicy shop/z-newer",
        "spec.validation.subjectAltNames[0].type",
    ]);
}

#[test]
fn objects_that_fail_validation_are_warnings() {
    let out = run(&[
        "explain",
        "-f",
        "shop",
        "-f",
        "invalid-route.yaml",
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Pay",
        "--json",
    ]);
    out.exits(0);
    assert_eq!(out.json()["outcome"], "forward");
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(warnings[0].starts_with(
        "grpcroute: warning: invalid-route.yaml: GRPCRoute shop/bad-regex: spec.rules[0]"
    ));
}

#[test]
fn a_target_that_is_not_a_service_is_a_usage_error() {
    run(&[
        "explain",
        "-f",
        "shop",
        "--to",
        "api.example.com:443",
        "--method",
        "/a.B/C",
    ])
    .input_error(&[
        "--to",
        "api.example.com:443",
        "not a Kubernetes Service address",
    ]);
}

#[test]
fn backend_tls_settings_and_invalid_policies_are_shown() {
    let run_explain = |json: bool| {
        let mut args = vec![
            "explain",
            "-f",
            "shop",
            "-f",
            "backend-tls.yaml",
            "--to",
            "checkout.shop:50051",
            "--method",
            "/shop.Checkout/Pay",
        ];
        if json {
            args.push("--json");
        }
        let out = run(&args);
        out.exits(0);
        out
    };
    let e = run_explain(true).json();
    let backends = e["backends"].as_array().unwrap();
    let v1 = &backends[0];
    let v2 = &backends[1];
    assert_eq!(v2["service"], "checkout-v2");
    assert_eq!(
        v2["tls"],
        json!({"policy": "shop/checkout-v2-tls", "enabled": true,
               "server_name": "checkout-v2.shop.example",
               "verify": ["DNS:checkout-v2.shop.example"],
               "roots": ["ConfigMap shop/checkout-ca"],
               "client_certificate": false, "note": null})
    );
    assert_eq!(v2["reason"], json!(null));
    // checkout-v1's policy names a missing ConfigMap: its share fails, saying why.
    assert_eq!(v1["service"], "checkout-v1");
    let reason = v1["reason"].as_str().unwrap();
    assert!(
        reason.contains("BackendTLSPolicy shop/checkout-v1-tls")
            && reason.contains("ConfigMap shop/gone-ca not found"),
        "{reason}"
    );
    assert_eq!(v1["tls"]["enabled"], false);
    assert!(
        e["reason"].as_str().unwrap().contains("fail UNAVAILABLE"),
        "{e:#}"
    );

    let human = run_explain(false).stdout;
    for part in [
        "SNI",
        "checkout-v2.shop.example",
        "ConfigMap shop/checkout-ca",
        "shop/checkout-v1-tls",
    ] {
        assert!(human.contains(part), "{part}: {human}");
    }
}
