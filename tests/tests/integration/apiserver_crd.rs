//! ClusterNetworkPolicies on the test API server, served as a real API server serves a custom
//! resource: not at all until their CRD is installed, then at each version it serves (one
//! object, returned at the version asked for), and gone when the CRD is deleted (its objects
//! deleted, their watches ended, the group out of discovery). Driven by kube-rs and by
//! kubectl. Plain tests: loopback only, no root.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use podwall_policy::model::Tier;
use podwall_tests::apiserver::{ApiServer, Kind};
use podwall_tests::cluster::snapshot_of;
use podwall_tests::cmd;
use podwall_tests::manifests::cluster_policy_crd;
use serde_json::json;

use crate::apiserver::{background, client, eventually, until, Quick};

const GROUP: &str = "policy.networking.k8s.io";
const CRD_NAME: &str = "clusternetworkpolicies.policy.networking.k8s.io";

/// ClusterNetworkPolicies at `version`, as a client that knows the CRD addresses them.
fn cnps(client: &Client, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(GROUP, version, "ClusterNetworkPolicy");
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "clusternetworkpolicies"),
    )
}

fn crd() -> CustomResourceDefinition {
    serde_norway::from_str(&cluster_policy_crd()).expect("the manifest is a CRD")
}

/// A ClusterNetworkPolicy at `version` whose only rule has a peer of a future API version,
/// one the server must store as sent.
fn guard(version: &str, name: &str, priority: u16) -> DynamicObject {
    let gvk = GroupVersionKind::gvk(GROUP, version, "ClusterNetworkPolicy");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "clusternetworkpolicies");
    DynamicObject::new(name, &ar).data(json!({"spec": {
        "tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
        "ingress": [{"name": "future", "action": "Deny", "from": [{"satellites": {}}]}]}}))
}

fn is_404(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A short name for each watcher event, to compare sequences.
fn label(e: &Result<Event<DynamicObject>, watcher::Error>) -> String {
    let at = |o: &DynamicObject| {
        let version = o.types.as_ref().map_or("", |t| t.api_version.as_str());
        format!("{} {version}", o.name_any())
    };
    match e {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(o)) => format!("InitApply {}", at(o)),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(o)) => format!("Apply {}", at(o)),
        Ok(Event::Delete(o)) => format!("Delete {}", at(o)),
        Err(
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e),
        ) if is_404(e) => "Error 404".into(),
        Err(e) => format!("Error {e}"),
    }
}

async fn group_listed(client: &Client) -> bool {
    let groups = client.list_api_groups().await.expect("listing API groups");
    groups.groups.iter().any(|g| g.name == GROUP)
}

#[tokio::test]
async fn cluster_network_policies_are_served_while_their_crd_exists() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    let (beta, alpha) = (cnps(&client, "v1beta1"), cnps(&client, "v1alpha2"));

    // No CRD: the group is unknown, as on a real server.
    let err = beta.list(&ListParams::default()).await.unwrap_err();
    assert!(is_404(&err), "{err:?}");
    assert!(!group_listed(&client).await);
    let err = client
        .list_api_group_resources(&format!("{GROUP}/v1beta1"))
        .await
        .unwrap_err();
    assert!(is_404(&err), "{err:?}");

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let created = crds.create(&PostParams::default(), &crd()).await.unwrap();
    let established = created
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "{established:?}"
    );
    let discovery = Discovery::new(client.clone())
        .filter(&[GROUP])
        .run()
        .await
        .unwrap();
    let group = discovery.get(GROUP).expect("the group is discovered");
    assert_eq!(group.preferred_version_or_latest(), "v1beta1");
    assert_eq!(
        group.versions().collect::<Vec<_>>(),
        ["v1beta1", "v1alpha2"]
    );
    let gvk = GroupVersionKind::gvk(GROUP, "v1alpha2", "ClusterNetworkPolicy");
    let (ar, caps) = discovery.resolve_gvk(&gvk).expect("the kind is discovered");
    assert_eq!(ar.plural, "clusternetworkpolicies");
    assert_eq!(caps.scope, Scope::Cluster);

    let mut events = background(watcher(beta.clone(), watcher::Config::default()).backoff(Quick));
    until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    eventually(|| server.open_watches() == 1).await;

    // Written at one version, seen at the other: one object, two faces.
    alpha
        .create(&PostParams::default(), &guard("v1alpha2", "guard", 5))
        .await
        .unwrap();
    let patch = Patch::Merge(json!({"spec": {"priority": 7}}));
    beta.patch("guard", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let read = alpha.get("guard").await.unwrap();
    assert_eq!(
        read.types.unwrap().api_version,
        "policy.networking.k8s.io/v1alpha2"
    );
    assert_eq!(read.data["spec"]["priority"], 7);
    assert_eq!(
        read.data["spec"]["ingress"][0]["from"][0]["satellites"],
        json!({}),
        "unknown fields are kept"
    );
    let listed = alpha.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].types.as_ref().unwrap().api_version,
        "policy.networking.k8s.io/v1alpha2"
    );
    alpha
        .delete("guard", &DeleteParams::default())
        .await
        .unwrap();
    let seen = until(&mut events, |s| s.len() == 3).await;
    let beta_at = |what: &str| format!("{what} policy.networking.k8s.io/v1beta1");
    assert_eq!(
        seen.iter().map(label).collect::<Vec<_>>(),
        [
            beta_at("Apply guard"),
            beta_at("Apply guard"),
            beta_at("Delete guard")
        ]
    );

    // Deleting the CRD deletes what it served, then stops serving it.
    beta.create(&PostParams::default(), &guard("v1beta1", "second", 9))
        .await
        .unwrap();
    crds.delete(CRD_NAME, &DeleteParams::default())
        .await
        .unwrap();
    let after = until(&mut events, |s| s.len() == 3).await;
    assert_eq!(
        after.iter().map(label).collect::<Vec<_>>(),
        [
            beta_at("Apply second"),
            beta_at("Delete second"),
            "Error 404".to_string()
        ],
        "the watch ended after the delete, and watching again is a 404"
    );
    assert!(server.list(Kind::ClusterNetworkPolicy).is_empty());
    let err = beta.list(&ListParams::default()).await.unwrap_err();
    assert!(is_404(&err), "{err:?}");
    assert!(!group_listed(&client).await);
}

#[tokio::test]
async fn cluster_network_policy_rules_are_authorized_like_any_resource() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    server.apply_yaml(&cluster_policy_crd()).unwrap();
    server.deny("list", "clusternetworkpolicies.policy.networking.k8s.io");
    server.deny("*", "customresourcedefinitions");

    let err = cnps(&client, "v1beta1")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err:?}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "clusternetworkpolicies.policy.networking.k8s.io is forbidden: User \
         \"system:serviceaccount:kube-system:podwall\" cannot list resource \
         \"clusternetworkpolicies\" in API group \"policy.networking.k8s.io\" at the cluster scope"
    );
    // Discovery is not a resource: every authenticated client may read it.
    assert!(group_listed(&client).await);
    let resources = client
        .list_api_group_resources(&format!("{GROUP}/v1alpha2"))
        .await
        .unwrap();
    assert_eq!(resources.resources[0].short_names, Some(vec!["cnp".into()]));
    assert!(cnps(&client, "v1alpha2")
        .get_opt("x")
        .await
        .unwrap()
        .is_none());
    let used = server.permissions();
    for verb in ["list", "get"] {
        assert!(
            used.iter().any(|p| p.group == GROUP
                && p.resource == "clusternetworkpolicies"
                && p.verb == verb),
            "{verb} in {used:?}"
        );
    }
}

#[test]
fn snapshot_of_the_api_server_has_its_cluster_network_policies() {
    let server = ApiServer::start();
    let cnp = |version: &str, name: &str, spec: &str| {
        format!("apiVersion: {GROUP}/{version}\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n")
    };
    let world = [
        cnp(
            "v1beta1",
            "guard",
            "{tier: Baseline, priority: 3, subject: {namespaces: {}}}",
        ),
        cnp("v1alpha2", "shapeless", "[not, a, spec]"),
    ]
    .join("---\n");
    let refused = server.apply_yaml(&world).unwrap_err();
    assert_eq!(refused.code, 404, "no CRD yet: {refused:?}");
    server.apply_yaml(&cluster_policy_crd()).unwrap();
    server.apply_yaml(&world).unwrap();

    let snap = snapshot_of(&server);
    let guard = &snap.cluster_policies["guard"];
    assert_eq!(
        (guard.tier, guard.priority, guard.broken),
        (Tier::Baseline, 3, false)
    );
    assert!(
        snap.cluster_policies["shapeless"].broken,
        "unreadable: the broken stand-in"
    );
    server.delete_yaml(&cluster_policy_crd()).unwrap();
    assert!(snapshot_of(&server).cluster_policies.is_empty());
}

/// Run kubectl against `server`, with its cache in `home`; its stdout, or its failure.
fn kubectl(
    home: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let mut command = Command::new("kubectl");
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home);
    let out = cmd::run(
        &mut command,
        stdin.map(str::as_bytes),
        Duration::from_secs(60),
    )?;
    Ok(out.ok()?.stdout)
}

#[test]
fn kubectl_applies_the_crd_and_then_gets_cluster_network_policies_by_short_name() {
    // HTTPS: kubectl sends no bearer token over plain HTTP.
    let server = ApiServer::builder().tls().start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let run = |args: &[&str], stdin: Option<&str>| {
        kubectl(dir.path(), &kubeconfig, args, stdin)
            .unwrap_or_else(|e| panic!("kubectl {args:?} (tests/setup.sh installs kubectl): {e:#}"))
    };
    let cnp = format!(
        "apiVersion: {GROUP}/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: guard}}\n\
         spec: {{tier: Admin, priority: 1, subject: {{namespaces: {{}}}}, ingress: []}}\n"
    );
    assert!(
        kubectl(dir.path(), &kubeconfig, &["apply", "-f", "-"], Some(&cnp)).is_err(),
        "no CRD: kubectl knows no such kind"
    );
    run(&["apply", "-f", "-"], Some(&cluster_policy_crd()));
    run(
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/{CRD_NAME}"),
        ],
        None,
    );
    run(&["apply", "-f", "-"], Some(&cnp));
    assert_eq!(
        run(&["get", "cnp", "-o", "name"], None).trim(),
        "clusternetworkpolicy.policy.networking.k8s.io/guard"
    );
    let version = run(
        &["get", "cnp", "guard", "-o", "jsonpath={.apiVersion}"],
        None,
    );
    assert_eq!(
        version, "policy.networking.k8s.io/v1beta1",
        "the preferred version"
    );
    // Applied again, changed: kubectl patches it.
    run(
        &["apply", "-f", "-"],
        Some(&cnp.replace("priority: 1", "priority: 2")),
    );
    let stored = server.list(Kind::ClusterNetworkPolicy);
    assert_eq!(stored[0]["spec"]["priority"], 2);

    run(&["delete", "crd", CRD_NAME], None);
    assert!(server.list(Kind::ClusterNetworkPolicy).is_empty());
    assert!(
        kubectl(dir.path(), &kubeconfig, &["get", "cnp"], None).is_err(),
        "the kind is gone with its CRD"
    );
}
