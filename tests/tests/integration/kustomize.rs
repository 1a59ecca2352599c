//! Issue 16: install/ is a kustomize base. Every kustomization renders with `kubectl
//! kustomize` into valid typed objects: the base into exactly what install/podwall.yaml
//! holds, the cleanup base into install/cleanup/podwall-cleanup.yaml, and the example
//! overlay (and its cleanup) with every change it says it makes, to both DaemonSets alike.

use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, PodSpec, ResourceQuota};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use podwall_tests::bins;
use podwall_tests::cmd::{self, Output};
use serde::Deserialize;
use serde_json::Value;

use crate::install::typed;

/// `kubectl kustomize install/<dir>`, as documents.
fn render(dir: &str) -> Vec<Value> {
    let mut kubectl = Command::new("kubectl");
    kubectl
        .arg("kustomize")
        .arg(bins::workspace_root().join("install").join(dir));
    let out = cmd::run(&mut kubectl, None, std::time::Duration::from_secs(60))
        .and_then(Output::ok)
        .unwrap_or_else(|e| {
            panic!("kubectl kustomize install/{dir} (tests/setup.sh installs kubectl): {e:#}")
        });
    documents(&out.stdout)
}

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| serde_norway::Value::deserialize(doc).expect("YAML"))
        .map(|v| serde_json::to_value(v).expect("JSON"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn file(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(bins::workspace_root().join(path)).expect(path);
    documents(&text)
}

/// The objects of `docs`, each by kind and name, ordered so that two renderings compare.
fn by_name(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by_key(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]));
    docs
}

fn one<K: serde::de::DeserializeOwned + serde::Serialize>(docs: &[Value], kind: &str) -> K {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    typed(found[0])
}

fn pod_spec(ds: DaemonSet) -> PodSpec {
    ds.spec
        .and_then(|s| s.template.spec)
        .expect("a pod template")
}

#[test]
fn the_bases_render_to_the_one_file_manifests() {
    assert_eq!(
        by_name(render("base")),
        by_name(file("install/podwall.yaml"))
    );
    assert_eq!(
        by_name(render("cleanup")),
        by_name(file("install/cleanup/podwall-cleanup.yaml"))
    );
}

#[test]
fn the_example_overlay_changes_image_namespace_secret_placement_and_flags_in_both() {
    let install = render("overlays/example");
    let cleanup = render("overlays/example/cleanup");
    for doc in install.iter().chain(&cleanup) {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"].contains(&kind);
        if !cluster_scoped {
            assert_eq!(doc["metadata"]["namespace"], "podwall", "{kind}");
        }
    }
    let ns: Namespace = one(&install, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some("podwall"));
    let quota: ResourceQuota = one(&install, "ResourceQuota");
    let scope = quota.spec.and_then(|s| s.scope_selector).expect("a scope");
    assert_eq!(
        scope.match_expressions.unwrap_or_default()[0].values,
        Some(vec!["system-node-critical".to_string()])
    );
    let binding: ClusterRoleBinding = one(&install, "ClusterRoleBinding");
    let subject = &binding.subjects.unwrap_or_default()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("podwall", Some("podwall"))
    );

    let daemon = pod_spec(one(&install, "DaemonSet"));
    let remover = pod_spec(one(&cleanup, "DaemonSet"));
    for spec in [&daemon, &remover] {
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in containers {
            assert_eq!(
                c.image.as_deref(),
                Some("registry.example/podwall:0.1.0"),
                "{}",
                c.name
            );
        }
        let secrets: Vec<&str> = (spec.image_pull_secrets.iter().flatten())
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(secrets, ["podwall-pull"]);
        let selector = spec.node_selector.clone().unwrap_or_default();
        assert_eq!(
            selector.get("podwall.io/enforcer").map(String::as_str),
            Some("podwall")
        );
    }
    let tolerations = daemon.tolerations.unwrap_or_default();
    assert_eq!(
        tolerations.len(),
        1,
        "the overlay's tolerations replace the base's"
    );
    assert_eq!(
        tolerations[0].key.as_deref(),
        Some("node-role.kubernetes.io/control-plane")
    );
    let podwalld = (daemon.containers.iter())
        .find(|c| c.name == "podwalld")
        .expect("the daemon's container");
    assert_eq!(
        podwalld.args.clone().unwrap_or_default(),
        [
            "--sync-period=5m",
            "--cache-sync-timeout=3m",
            "--drop-log-rate=20"
        ]
    );
    // Every flag the overlay gives is one the daemon takes (an unknown one fails before
    // the help is printed).
    let mut check = Command::new(bins::daemon());
    check
        .args(podwalld.args.clone().unwrap_or_default())
        .arg("--help");
    let out =
        cmd::run(&mut check, None, std::time::Duration::from_secs(10)).expect("podwalld --help");
    assert!(out.success(), "{out}");
}

/// The optional CRD component: the ClusterNetworkPolicy CRD the daemon watches, serving the
/// versions it reads, with a schema that has every field podwall enforces and keeps the
/// peers and protocols it does not know (so they reach podwall, which fails closed on them).
#[test]
fn the_crd_component_is_the_cluster_network_policy_crd_podwall_reads() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use podwall_policy::model::cluster_api::{GROUP, VERSIONS};
    use podwalld::sources::kube::cluster::CRD_NAME;

    let docs = render("crds");
    assert_eq!(docs, file("install/crds/clusternetworkpolicies.yaml"));
    assert_eq!(docs.len(), 1);
    // Not `one`: the typed schema reads bounds as floats, so it does not give the same JSON.
    let crd: CustomResourceDefinition =
        serde_json::from_value(docs[0].clone()).expect("a CustomResourceDefinition");
    assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
    assert_eq!(
        (crd.spec.group.as_str(), crd.spec.scope.as_str()),
        (GROUP, "Cluster")
    );
    let served: Vec<&str> = (crd.spec.versions.iter())
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(served, VERSIONS);
    let stored: Vec<&str> = (crd.spec.versions.iter())
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(stored, ["v1beta1"]);
    for version in &docs[0]["spec"]["versions"].as_array().expect("versions")[..] {
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let keys = |v: &Value| -> Vec<String> {
            let mut keys: Vec<String> = (v["properties"].as_object())
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(spec),
            ["egress", "ingress", "priority", "subject", "tier"]
        );
        assert_eq!(
            spec["properties"]["tier"]["enum"],
            serde_json::json!(["Admin", "Baseline"])
        );
        for (rules, peers) in [("ingress", "from"), ("egress", "to")] {
            let rule = &spec["properties"][rules]["items"];
            let mut want = vec!["action", peers, "name", "protocols"];
            want.sort();
            assert_eq!(keys(rule), want);
            let peer = &rule["properties"][peers]["items"];
            assert_eq!(keys(peer), ["namespaces", "networks", "pods"]);
            assert_eq!(peer["x-kubernetes-preserve-unknown-fields"], true);
            let protocol = &rule["properties"]["protocols"]["items"];
            assert_eq!(
                keys(protocol),
                ["destinationNamedPort", "sctp", "tcp", "udp"]
            );
            assert_eq!(protocol["x-kubernetes-preserve-unknown-fields"], true);
        }
    }
}
