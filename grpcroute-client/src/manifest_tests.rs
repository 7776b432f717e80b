//! Reading manifests: multi-document YAML, JSON, Lists, other kinds, and errors that name
//! the file, the document and the field.

use std::path::PathBuf;

use serde_json::Value;

use super::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: canary
  namespace: app
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: order
    port: 50051
  rules:
  - backendRefs:
    - name: order-stable
      port: 50051
      weight: 90
    - name: order-canary
      port: 50051
      weight: 10
"#;

#[test]
fn reads_every_manifest_of_a_folder_and_skips_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "10-route.yaml", ROUTE);
    write(
        &dir,
        "20-mixed.yml",
        r#"
# A Deployment is not routing configuration: skipped.
apiVersion: apps/v1
kind: Deployment
metadata: {name: order}
spec: {}
---
apiVersion: v1
kind: Service
metadata:
  name: order
  namespace: app
spec:
  ports:
  - {name: grpc, port: 50051}
--- # a trailing empty document
"#,
    );
    write(
        &dir,
        "30-slice.json",
        r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
            "metadata":{"name":"order-1","namespace":"app","labels":{"kubernetes.io/service-name":"order"}},
            "addressType":"IPv4","ports":[{"name":"grpc","port":9000}],
            "endpoints":[{"addresses":["10.1.0.1"]}]}"#,
    );
    write(&dir, "README.md", "not a manifest");
    write(&dir, ".hidden.yaml", "kind: [broken");
    let loaded = load(&[dir.path().to_path_buf()]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.files.len(), 3);
    assert_eq!(loaded.resources.routes.len(), 1);
    assert_eq!(loaded.resources.services.len(), 1);
    assert_eq!(loaded.resources.endpoint_slices.len(), 1);
    assert_eq!(
        loaded.resources.routes[0].spec.rules.as_ref().unwrap()[0]
            .backend_refs
            .as_ref()
            .unwrap()[1]
            .weight,
        Some(10)
    );
}

#[test]
fn reference_grants_in_both_versions_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let grant = |version: &str, name: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/{version}\nkind: ReferenceGrant\nmetadata: {{name: {name}, namespace: backend}}\n\
             spec:\n  from: [{{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: app}}]\n  to: [{{group: \"\", kind: Service}}]\n"
        )
    };
    write(
        &dir,
        "a.yaml",
        &format!("{}---\n{}", grant("v1beta1", "old"), grant("v1", "new")),
    );
    write(
        &dir,
        "list.yaml",
        &format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            ROUTE.trim().replace('\n', "\n  ")
        ),
    );
    let loaded = load(&[dir.path().to_path_buf()]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.resources.reference_grants.len(), 2);
    assert_eq!(loaded.resources.routes.len(), 1, "List items are read");
}

#[test]
fn errors_name_the_file_the_document_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(
        &dir,
        "broken.yaml",
        &format!("{ROUTE}---\nkind: [unclosed\n"),
    );
    let typed = write(
        &dir,
        "typed.yaml",
        &ROUTE.replace("weight: 10", "weight: ten"),
    );
    let loaded = load(&[broken.clone(), typed.clone()]);
    assert_eq!(loaded.errors.len(), 2, "{:?}", loaded.errors);
    let syntax = &loaded.errors[0];
    assert_eq!(
        (syntax.file.as_path(), syntax.document),
        (broken.as_path(), Some(1))
    );
    assert!(
        syntax.message.contains("invalid YAML"),
        "{}",
        syntax.message
    );
    let field = &loaded.errors[1];
    assert_eq!(
        (field.file.as_path(), field.document),
        (typed.as_path(), Some(0))
    );
    assert!(
        field.message.contains("GRPCRoute app/canary"),
        "{}",
        field.message
    );
    assert!(
        field
            .message
            .contains("spec.rules[0].backendRefs[1].weight"),
        "{}",
        field.message
    );
    // The good document of the broken file is still read.
    assert_eq!(loaded.resources.routes.len(), 1);
}

/// An object of a List whose content does not decode leaves the other items, and is
/// carried as the rejected object it is; a document that is no object carries none.
#[test]
fn an_undecodable_object_is_named_and_carried_as_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let future = ROUTE.replace(
        "  - backendRefs:",
        "  - filters:\n    - type: FutureFilter\n    backendRefs:",
    );
    let items: Vec<Value> = [
        future.as_str(),
        &ROUTE.replace("name: canary", "name: stable"),
        &ROUTE.replace("port: 50051\n  rules", "port: [50051]\n  rules"),
    ]
    .iter()
    .map(|doc| serde_saphyr::from_str(doc).unwrap())
    .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let file = write(&dir, "list.json", &list.to_string());
    write(
        &dir,
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: x}]}\n",
    );
    let loaded = load(&[dir.path().to_path_buf()]);
    let names: Vec<_> = loaded
        .resources
        .routes
        .iter()
        .map(|r| r.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["stable"], "the good item is read");
    assert_eq!(loaded.errors.len(), 3, "{:?}", loaded.errors);
    let first = &loaded.errors[0];
    assert_eq!(
        (first.file.as_path(), first.document),
        (file.as_path(), Some(0))
    );
    assert!(
        first.message.starts_with(
            "items[0]: GRPCRoute app/canary: spec.rules[0].filters[0].type: unknown variant `FutureFilter`"
        ),
        "{}",
        first.message
    );
    let rejected = first.object.as_ref().unwrap();
    assert_eq!(rejected.field(), "spec.rules[0].filters[0].type");
    assert_eq!(rejected.parent_refs().len(), 1, "kept for status");
    let parents = loaded.errors[1].object.as_ref().unwrap();
    assert_eq!(parents.field(), "spec.parentRefs[0].port");
    let service = loaded.errors[2].object.as_ref().unwrap();
    assert_eq!(
        (service.key().to_string(), service.field()),
        ("default/s".to_string(), "spec.ports[0].port")
    );

    write(&dir, "broken.yaml", "kind: [unclosed\n");
    let loaded = load(&[dir.path().join("broken.yaml")]);
    assert_eq!(loaded.errors[0].object, None);
}

#[test]
fn unsupported_api_versions_and_non_objects_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir,
        "a.yaml",
        &ROUTE.replace(
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha2",
        ),
    );
    write(&dir, "b.yaml", "just: a map\n");
    let loaded = load(&[dir.path().to_path_buf()]);
    let messages: Vec<_> = loaded.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(messages[0].contains("v1alpha2"), "{messages:?}");
    assert!(
        messages[1].contains("apiVersion and kind are required"),
        "{messages:?}"
    );
}

#[test]
fn missing_paths_are_errors() {
    let loaded = load(&[PathBuf::from("/nonexistent/manifests")]);
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].document, None);
}

#[test]
fn yaml_documents_split_at_markers_only() {
    let text = "a: 1\n---\nb: |\n  --- not a marker (indented)\n--- {c: 3}\n...\n";
    let docs: Vec<_> = yaml_documents(text)
        .into_iter()
        .map(|(line, d)| (line, d.trim().to_string()))
        .collect();
    assert_eq!(docs[0], (1, "a: 1".into()));
    assert_eq!(docs[1], (3, "b: |\n  --- not a marker (indented)".into()));
    assert_eq!(docs[2], (5, "{c: 3}".into()));
}

#[test]
fn hostile_yaml_is_an_error_not_a_hang() {
    // A "billion laughs" alias bomb.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("l{}", i - 1)
        };
        bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "bomb.yaml", &bomb);
    // The parser's alias budget refuses it (without one this would expand 10^13 nodes).
    let loaded = load(&[dir.path().to_path_buf()]);
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
}
