//! Issue 15: `podwalld explain` against the live cluster (`--kubeconfig`) answers as the
//! offline form does on the same objects as manifests, and as the same objects piped in
//! (`kubectl get … -o yaml | podwalld explain --manifests -`). Issue 17: with the
//! ClusterNetworkPolicy CRD installed, the live answer names the cluster policies too.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use podwall_policy::testworld::world_manifests;
use podwall_tests::apiserver::ApiServer;
use podwall_tests::bins;
use podwall_tests::manifests::{cluster_policy, cluster_policy_crd};

const POLICIES: &str = "
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: serve-80-tcp}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: z-egress-to-b, namespace: z}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {pod: b}}, namespaceSelector: {}}]}]
";

fn explain(source: &[&str], question: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bins::daemon())
        .arg("explain")
        .args(source)
        .args(["--port", "80", "--protocol", "TCP", "--output", "json"])
        .args(question)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running podwalld explain");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("writing stdin");
    drop(pipe);
    let out = child.wait_with_output().expect("podwalld explain");
    assert!(out.status.success(), "{source:?} {question:?}: {out:?}");
    out
}

#[test]
fn live_explain_answers_as_offline_explain_on_the_same_cluster() {
    let objects = format!("{}{POLICIES}", world_manifests());
    let (matrix, _) = live_and_offline_agree(&objects, &[]);
    // Not a question the answers agree on by accident: the matrix has both verdicts.
    assert!(
        matrix.contains("true") && matrix.contains("false"),
        "{matrix}"
    );
}

#[test]
fn live_explain_reads_cluster_policies_where_their_crd_is_installed() {
    let guard = cluster_policy(
        "x-guard",
        "Admin",
        10,
        "subject: {namespaces: {matchLabels: {ns: x}}}
ingress: [{name: deny-y, action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}]",
    );
    let objects = format!("{}{POLICIES}---\n{guard}", world_manifests());
    let (_, answer) = live_and_offline_agree(&objects, &[&cluster_policy_crd()]);
    assert!(
        answer.contains("x-guard") && answer.contains("Admin") && answer.contains("deny-y"),
        "the Admin Deny decides y/b -> x/a: {answer}"
    );
}

/// Serve `objects` (after `first`, e.g. a CRD) from an API server and ask live, offline
/// and piped explain the same questions; they must answer alike. Returns the whole matrix
/// and the answer for y/b -> x/a.
fn live_and_offline_agree(objects: &str, first: &[&str]) -> (String, String) {
    let server = ApiServer::start();
    for object in first {
        server.apply_yaml(object).expect("the API server takes it");
    }
    server
        .apply_yaml(objects)
        .expect("the API server takes the world");
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubeconfig = server.kubeconfig(dir.path());
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("the manifests directory");
    std::fs::write(manifests.join("world.yaml"), objects).expect("writing the world");

    let live = ["--kubeconfig", kubeconfig.to_str().expect("a UTF-8 path")];
    let offline = ["--manifests", manifests.to_str().expect("a UTF-8 path")];
    let mut answers = Vec::new();
    for question in [
        &[][..],
        &["--from", "y/b", "--to", "x/a"],
        &["--from", "z/c", "--to", "x/a"],
        &["--from", "z/a", "--to", "y/b"],
    ] {
        let answer = explain(&offline, question, None).stdout;
        assert_eq!(
            String::from_utf8_lossy(&explain(&live, question, None).stdout),
            String::from_utf8_lossy(&answer),
            "live and offline differ on {question:?}"
        );
        assert_eq!(
            explain(&["--manifests", "-"], question, Some(objects)).stdout,
            answer,
            "piped and offline differ on {question:?}"
        );
        answers.push(String::from_utf8_lossy(&answer).into_owned());
    }
    let mut answers = answers.into_iter();
    let matrix = answers.next().unwrap_or_default();
    (matrix, answers.next().unwrap_or_default())
}
