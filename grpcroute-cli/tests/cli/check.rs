//! `grpcroute check`.

use serde_json::Value;

use crate::support::{keys, run};

fn route<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("route {name} in {report:#}"))
}

fn condition<'a>(route: &'a Value, type_: &str) -> &'a Value {
    route["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("condition {type_} in {route:#}"))
}

#[test]
fn valid_manifests_exit_0_with_every_condition_true() {
    let out = run(&["check", "-f", "shop"]);
    out.exits(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ROUTE",
            "PARENT",
            "CONDITION",
            "STATUS",
            "REASON",
            "MESSAGE"
        ]
    );
    assert!(lines[1].starts_with("shop/checkout-split  Service shop/checkout:50051  Accepted "));
    assert!(out.stdout.contains("ResolvedRefs  True"));
    assert!(
        out.stdout
            .contains("2 routes, 2 of 2 parentRefs with every condition True, 0 errors")
    );
    assert!(
        !out.stdout.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn json_has_the_documented_keys() {
    let out = run(&["check", "-f", "shop", "--json"]);
    out.exits(0);
    let report = out.json();
    assert_eq!(keys(&report), ["backend_tls_policies", "errors", "routes"]);
    assert_eq!(report["backend_tls_policies"], Value::Array(vec![]));
    assert_eq!(report["errors"], Value::Array(vec![]));
    let split = route(&report, "checkout-split");
    assert_eq!(keys(split), ["name", "namespace", "parents"]);
    assert_eq!(split["namespace"], "shop");
    let parent = &split["parents"][0];
    assert_eq!(keys(parent), ["conditions", "parentRef"]);
    assert_eq!(
        parent["parentRef"],
        serde_json::json!({"group": "", "kind": "Service", "namespace": "shop", "name": "checkout", "port": 50051})
    );
    let accepted = condition(split, "Accepted");
    assert_eq!(keys(accepted), ["message", "reason", "status", "type"]);
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&"True".into(), &"Accepted".into())
    );
    // The consumer route's parentRef names the Service's namespace.
    let canary = route(&report, "checkout-canary");
    assert_eq!(canary["namespace"], "web");
    assert_eq!(canary["parents"][0]["parentRef"]["namespace"], "shop");
}

#[test]
fn unresolved_refs_and_unmatched_parents_exit_1() {
    let out = run(&["check", "-f", "shop", "-f", "broken-refs.yaml", "--json"]);
    out.exits(1);
    let report = out.json();
    let refunds = route(&report, "refunds");
    assert_eq!(condition(refunds, "Accepted")["status"], "True");
    let resolved = condition(refunds, "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .contains("shop/refunds-gone:50051")
    );
    let wrong = route(&report, "wrong-port");
    let accepted = condition(wrong, "Accepted");
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&"False".into(), &"NoMatchingParent".into())
    );
    assert_eq!(wrong["parents"][0]["parentRef"]["port"], 8080);

    let human = run(&["check", "-f", "shop", "-f", "broken-refs.yaml"]);
    human.exits(1);
    assert!(human.stdout.contains("False   BackendNotFound"));
    assert!(human.stdout.contains(
        "Accepted      False   NoMatchingParent  Service shop/checkout has no port 8080"
    ));
}

#[test]
fn unreadable_documents_are_reported_by_file_and_document() {
    let out = run(&[
        "check",
        "-f",
        "shop",
        "-f",
        "bad-yaml.yaml",
        "-f",
        "bad-field.yaml",
        "--json",
    ]);
    out.exits(1);
    let report = out.json();
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(keys(&errors[0]), ["document", "file", "message"]);
    assert_eq!(
        (&errors[0]["file"], &errors[0]["document"]),
        (&"bad-yaml.yaml".into(), &1.into())
    );
    assert!(
        errors
            .iter()
            .all(|e| !e["message"].as_str().unwrap().contains('\n')),
        "messages are one line"
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid YAML")
    );
    assert_eq!(
        (&errors[1]["file"], &errors[1]["document"]),
        (&"bad-field.yaml".into(), &0.into())
    );
    assert!(
        errors[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("GRPCRoute shop/bad-weight: spec.rules[0].backendRefs[0].weight: ")
    );
    // The routes that could be read are still checked.
    route(&report, "checkout-split");

    let human = run(&[
        "check",
        "-f",
        "shop",
        "-f",
        "bad-yaml.yaml",
        "-f",
        "bad-field.yaml",
    ]);
    human.exits(1);
    let errors: Vec<&str> = human
        .stdout
        .lines()
        .skip_while(|l| *l != "ERRORS")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(errors.len(), 2, "one line per error: {}", human.stdout);
    assert!(errors[0].starts_with("bad-yaml.yaml (document 1): invalid YAML"));
    assert!(errors[1].starts_with("bad-field.yaml (document 0): GRPCRoute shop/bad-weight"));
}

#[test]
fn objects_that_fail_validation_are_not_accepted_and_listed_with_their_file() {
    let out = run(&["check", "-f", "shop", "-f", "invalid-route.yaml", "--json"]);
    out.exits(1);
    let report = out.json();
    let accepted = condition(route(&report, "bad-regex"), "Accepted");
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&"False".into(), &"UnsupportedValue".into())
    );
    let error = &report["errors"][0];
    assert_eq!(error["file"], "invalid-route.yaml");
    assert_eq!(error["document"], Value::Null);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("GRPCRoute shop/bad-regex: spec.rules[0].matches[0].headers[0].value: ")
    );
}

#[test]
fn missing_paths_and_empty_folders_are_input_errors() {
    run(&["check", "-f", "shop", "-f", "no-such-file.yaml"])
        .input_error(&["-f no-such-file.yaml", "No such file"]);
    run(&["check", "-f", "empty", "--json"]).input_error(&["-f empty", "no manifest files"]);
}

#[test]
fn the_readme_demo_manifests_are_valid() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/demo");
    run(&["check", "-f", demo]).exits(0);
    let out = run(&[
        "explain",
        "-f",
        demo,
        "--to",
        "checkout.shop:50051",
        "--method",
        "/shop.Checkout/Pay",
        "--json",
    ]);
    out.exits(0);
    let e = out.json();
    assert_eq!(
        e["backends"][0]["endpoints"],
        serde_json::json!(["127.0.0.1:9101"])
    );
    assert_eq!(
        e["backends"][1]["endpoints"],
        serde_json::json!(["127.0.0.1:9102"])
    );
}

#[test]
fn backend_tls_policies_report_conflicts_and_missing_config_maps() {
    let out = run(&["check", "-f", "shop", "-f", "backend-tls.yaml", "--json"]);
    out.exits(1);
    let report = out.json();
    let policies = report["backend_tls_policies"].as_array().unwrap();
    let policy = |name: &str| {
        policies
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("policy {name} in {report:#}"))
    };
    let cond = |p: &Value, type_: &str| {
        p["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap()
            .clone()
    };
    let good = policy("checkout-v2-tls");
    assert_eq!(
        keys(good),
        ["applied", "conditions", "name", "namespace", "targets"]
    );
    assert_eq!(
        good["applied"],
        serde_json::json!(["shop/checkout-v2:50051"])
    );
    assert_eq!(cond(good, "Accepted")["status"], "True");
    assert_eq!(cond(good, "ResolvedRefs")["status"], "True");

    let later = cond(policy("checkout-v2-zz-later"), "Accepted");
    assert_eq!(
        (&later["status"], &later["reason"]),
        (&"False".into(), &"Conflicted".into())
    );
    assert!(
        later["message"]
            .as_str()
            .unwrap()
            .contains("shop/checkout-v2-tls"),
        "{later}"
    );

    let missing = policy("checkout-v1-tls");
    let refs = cond(missing, "ResolvedRefs");
    assert_eq!(refs["reason"], "InvalidCACertificateRef");
    assert!(
        refs["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap shop/gone-ca not found"),
        "{refs}"
    );
    assert_eq!(cond(missing, "Accepted")["reason"], "NoValidCACertificate");

    let human = run(&["check", "-f", "shop", "-f", "backend-tls.yaml"]);
    human.exits(1);
    for part in [
        "BACKENDTLSPOLICY",
        "shop/checkout-v2-tls",
        "Conflicted",
        "InvalidCACertificateRef",
    ] {
        assert!(human.stdout.contains(part), "{part}: {}", human.stdout);
    }
}
