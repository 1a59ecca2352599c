//! Issue 15: `podwalld explain` against the live cluster (`--kubeconfig`) answers as the
//! offline form does on the same objects as manifests, and as the same objects piped in
//! (`kubectl get … -o yaml | podwalld explain --manifests -`).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use podwall_policy::testworld::world_manifests;
use podwall_tests::apiserver::ApiServer;
use podwall_tests::bins;

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
    let server = ApiServer::start();
    server
        .apply_yaml(&objects)
        .expect("the API server takes the world");
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubeconfig = server.kubeconfig(dir.path());
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("the manifests directory");
    std::fs::write(manifests.join("world.yaml"), &objects).expect("writing the world");

    let live = ["--kubeconfig", kubeconfig.to_str().expect("a UTF-8 path")];
    let offline = ["--manifests", manifests.to_str().expect("a UTF-8 path")];
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
            explain(&["--manifests", "-"], question, Some(&objects)).stdout,
            answer,
            "piped and offline differ on {question:?}"
        );
    }
    // Not a question the answers agree on by accident: the matrix has both verdicts.
    let matrix = String::from_utf8_lossy(&explain(&offline, &[], None).stdout).into_owned();
    assert!(
        matrix.contains("true") && matrix.contains("false"),
        "{matrix}"
    );
}
