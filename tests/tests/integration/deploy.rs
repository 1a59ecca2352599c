//! Issue 16: deploying podwall as the README says, on the suite's two-node test cluster. The
//! `sh` blocks of the README's "Deploy on a cluster" are run by bash as written — building
//! the image, logging in to a private registry and pushing to it, retagging the manifests,
//! the pull secret, `kubectl apply`, `rollout status`, the upgrade, the uninstall and the
//! kustomize overlay — with the registry's address and login put in for `registry.example`,
//! `USER` and `PASSWORD`, the nodes' names for `NODE`, and the repository's path for the
//! image script (the manifests are edited in a copy of `install/`).
//!
//! The operator's shell runs on the first node (the API server and the registry listen
//! there, on the link between the nodes). What `kubectl` installs is run by the rig's
//! kubelet ([`podwall_tests::kubelet`]) with podman: each node pulls the image from the
//! registry with the pull secret, into an image store of its own, and runs the init
//! containers and the daemon (in-cluster config, over HTTPS) on its host tree. Then pods are
//! attached through the CNI config the install chained, and the policy is enforced across
//! the nodes; the uninstall leaves each node's CNI config as it was and no podwall table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use podwall_tests::apiserver::Kind;
use podwall_tests::cluster::{LINK_A, LINK_B};
use podwall_tests::kubelet::{host_root, Kubelet, Podman, Workload, Workloads};
use podwall_tests::manifests::cluster_policy;
use podwall_tests::netns::unique_name;
use podwall_tests::probe;
use podwall_tests::registry::{self, Registry};
use podwall_tests::trio::{PORT, QUICK, WEB_FROM_CLIENT};
use podwall_tests::{bins, eventually, Cluster};

/// The README's section with the blocks this test runs.
const SECTION: &str = "## Deploy on a cluster";

/// How each `sh` block of the section starts, in order: build and push, pull secret,
/// install, kustomize install, kustomize uninstall, upgrade, uninstall.
const BLOCKS: [&str; 7] = [
    "bash install/image.sh",
    "kubectl -n kube-system create secret",
    "kubectl apply -f install/podwall.yaml",
    "cp -r install/overlays/example",
    "kubectl delete -k",
    "kubectl -n kube-system set image",
    "kubectl delete -f install/podwall.yaml",
];

/// How long the cluster gets to act on a change (pull, start, become ready, enforce).
const SETTLE: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root: builds and runs containers, creates network namespaces"]
fn the_readme_deploys_upgrades_and_uninstalls_podwall_on_a_two_node_cluster() {
    let cluster = Cluster::for_install("deploy");
    let rehearsal = Rehearsal::new(&cluster);
    let [build, secret, install, _kustomize, _kustomize_uninstall, upgrade, uninstall] =
        rehearsal.blocks(&BLOCKS);
    let configs = rehearsal.node_configs();
    rehearsal.with_kubelet(|workloads| {
        rehearsal.run(&build);
        rehearsal.run(&secret);
        rehearsal.run(&install);
        rehearsal.assert_chained();
        rehearsal.assert_pulled_with_the_secret("0.1.0");
        let world = World::apply(&rehearsal, workloads);
        world.assert_enforced();
        rehearsal.assert_explained();
        // The install block applied the CRD: the deployed daemons, with the shipped RBAC,
        // enforce a ClusterNetworkPolicy applied with kubectl, and its deletion.
        let guard = cluster_policy(
            "no-client",
            "Admin",
            1,
            "subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: web}}}}
ingress: [{action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}}]}]",
        );
        rehearsal.run_stdin("kubectl apply -f -", &guard);
        assert!(
            eventually(SETTLE, || !world.reaches_web("app/client")),
            "the Admin Deny keeps client out"
        );
        rehearsal.run_stdin("kubectl delete -f -", &guard);
        world.assert_enforced();

        // "Change flags in the DaemonSet's args": `kubectl edit`, with sed as the editor.
        let edit = rehearsal
            .readme
            .split_once("Change flags in the DaemonSet's `args` (`")
            .and_then(|(_, rest)| rest.split_once('`'))
            .expect("the README says how to change flags")
            .0;
        rehearsal.run(&format!(
            "KUBE_EDITOR=\"sed -i s/--sync-period=5m/--sync-period=4m/\" {edit}\n\
             kubectl -n kube-system rollout status daemonset/podwall"
        ));
        for node in &cluster.nodes {
            let container = format!("pwt-k-{}-podwall-podwalld", node.netns.name());
            let args = rehearsal
                .podman
                .inspect(node, &container, "{{.Config.Cmd}}");
            assert!(args.contains("--sync-period=4m"), "{}: {args}", node.name());
        }
        world.assert_enforced();

        // The upgrade: a new tag pushed, then the README's `set image` and rollout.
        rehearsal.run(&format!(
            "podman tag {repo}:0.1.0 {repo}:0.2.0 && podman push {repo}:0.2.0",
            repo = rehearsal.repository
        ));
        rehearsal.run(&upgrade);
        for node in &cluster.nodes {
            let container = format!("pwt-k-{}-podwall-podwalld", node.netns.name());
            let image = rehearsal.podman.inspect(node, &container, "{{.ImageName}}");
            assert!(
                image.ends_with("/podwall:0.2.0"),
                "{}: {image}",
                node.name()
            );
        }
        world.assert_enforced();

        rehearsal.run(&uninstall);
        rehearsal.assert_removed(&configs);
    });
}

#[test]
#[ignore = "needs root: builds and runs containers, creates network namespaces"]
fn the_readmes_kustomize_overlay_installs_on_labelled_nodes_and_uninstalls() {
    let cluster = Cluster::for_install("kustom");
    let rehearsal = Rehearsal::new(&cluster);
    let [build, _secret, _install, install, uninstall, _upgrade, _uninstall] =
        rehearsal.blocks(&BLOCKS);
    let configs = rehearsal.node_configs();
    // "Copy it, edit what its comments mark": the registry, in both kustomizations.
    let (copy, install) = install.split_once('\n').expect("more than one line");
    let edit = format!(
        "{copy}\nsed -i 's|registry.example/podwall|{repo}|' install/overlays/mine/kustomization.yaml install/overlays/mine/cleanup/kustomization.yaml\n",
        repo = rehearsal.repository
    );
    // Each node, one by one.
    let label = install
        .lines()
        .find(|l| l.starts_with("kubectl label node NODE "))
        .expect("the block labels the nodes");
    let labels: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| label.replace(" NODE ", &format!(" {} ", n.name())))
        .collect();
    let install = install.replace(label, &labels.join("\n"));
    rehearsal.with_kubelet(|workloads| {
        rehearsal.run(&build);
        rehearsal.run(&edit);
        rehearsal.run(&install);
        let ds = cluster.api.list(Kind::DaemonSet);
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_eq!(ds[0]["metadata"]["namespace"], "podwall");
        rehearsal.assert_chained();
        let world = World::apply(&rehearsal, workloads);
        world.assert_enforced();
        rehearsal.run(&uninstall);
        rehearsal.assert_removed(&configs);
    });
}

/// The operator's side: a working directory with a copy of `install/`, the shell's
/// environment, and the cluster's registry and kubelet.
struct Rehearsal<'a> {
    cluster: &'a Cluster,
    registry: Registry,
    /// `registry.example/podwall` here: the registry, and a path of this test's own (the
    /// host's image store is shared with other tests).
    repository: String,
    podman: Podman,
    /// The nodes' image stores, removed after `Drop` cleared them.
    _images: tempfile::TempDir,
    readme: String,
    dir: tempfile::TempDir,
}

impl<'a> Rehearsal<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        let registry = Registry::start_for(cluster);
        let dir = work_dir("pwt-deploy-");
        std::fs::write(dir.path().join("registry-password"), registry::PASSWORD)
            .expect("writing the password file");
        let (podman, images) = Podman::in_temp_dir(Some(registry.registries_conf()));
        let readme = std::fs::read_to_string(bins::workspace_root().join("README.md"))
            .expect("reading the README");
        let repository = format!("{}/{}/podwall", registry.addr, unique_name("deploy"));
        Rehearsal {
            cluster,
            registry,
            repository,
            podman,
            _images: images,
            readme,
            dir,
        }
    }

    /// The section's `sh` blocks, in order, each checked to start as `starts` says (so a
    /// README that moved its blocks fails here, naming which).
    fn blocks<const N: usize>(&self, starts: &[&str; N]) -> [String; N] {
        let section = self
            .readme
            .split_once(SECTION)
            .expect("the README has the deploy section")
            .1;
        let section = section.split("\n## ").next().unwrap_or(section);
        let blocks: Vec<String> = section
            .split("```sh\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            blocks.len(),
            N,
            "the deploy section's sh blocks: {blocks:#?}"
        );
        for (block, start) in blocks.iter().zip(starts) {
            assert!(
                block.starts_with(start),
                "expected {start:?}, found:\n{block}"
            );
        }
        let substituted: Vec<String> = blocks.iter().map(|b| self.substitute(b)).collect();
        substituted.try_into().expect("N blocks")
    }

    fn substitute(&self, block: &str) -> String {
        block
            .replace("registry.example/podwall", &self.repository)
            .replace("registry.example", &self.registry.addr.to_string())
            .replace("--username USER", &format!("--username {}", registry::USER))
            .replace(
                "--docker-username=USER",
                &format!("--docker-username={}", registry::USER),
            )
            .replace(
                "--docker-password=PASSWORD",
                &format!("--docker-password={}", registry::PASSWORD),
            )
            .replace(
                "bash install/image.sh",
                &format!(
                    "bash {}",
                    bins::workspace_root().join("install/image.sh").display()
                ),
            )
    }

    /// Run a block with bash on the first node, from the working directory; panics with its
    /// output when a line fails.
    fn run(&self, script: &str) {
        self.run_stdin(script, "");
    }

    fn run_stdin(&self, script: &str, stdin: &str) {
        self.output(script, stdin);
    }

    /// Run a block as [`run`](Self::run) does; its standard output.
    fn output(&self, script: &str, stdin: &str) -> String {
        let mut cmd = self.cluster.nodes[0].netns.command("timeout");
        cmd.args(["300", "bash", "-e", "-c", script])
            .env("KUBECONFIG", self.cluster.kubeconfig())
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.registry.registries_conf(),
            )
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"));
        in_work_dir(&mut cmd, self.dir.path());
        let out =
            podwall_tests::cmd::run(&mut cmd, Some(stdin.as_bytes()), Duration::from_secs(320))
                .unwrap_or_else(|e| panic!("running {script}: {e:#}"));
        assert!(
            out.status.success(),
            "{script}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- registry ---\n{}",
            out.stdout,
            out.stderr,
            self.registry.log()
        );
        out.stdout
    }

    /// Run `f` with the kubelet running the cluster's DaemonSets and pods; it stops
    /// (removing what it started) when `f` returns or panics.
    fn with_kubelet(&self, f: impl FnOnce(&Workloads)) {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let nodes = self.cluster.nodes.iter().collect();
            let kubelet = Kubelet::new(
                &self.cluster.api,
                nodes,
                self.cluster.api.addr(),
                self.podman.clone(),
            );
            let workloads = kubelet.workloads();
            let stopping = &stop;
            s.spawn(move || kubelet.run(stopping));
            struct Stop<'s>(&'s AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            f(&workloads);
        });
    }

    /// Each node's CNI config files and their bytes, before podwall.
    fn node_configs(&self) -> Vec<Vec<(PathBuf, Vec<u8>)>> {
        self.cluster
            .nodes
            .iter()
            .map(|n| configs(&host_root(n)))
            .collect()
    }

    /// Each node pulled the image from the registry, logged in as the pull secret's user
    /// (the nodes have no credentials of their own).
    fn assert_pulled_with_the_secret(&self, tag: &str) {
        let log = self.registry.log();
        let path = self.repository.split_once('/').map_or("", |(_, p)| p);
        let manifest = format!("uri=/v2/{path}/manifests/{tag}");
        for addr in [LINK_A, LINK_B] {
            // The registry logs a request it let through its htpasswd check as authorized.
            let pulled = log.lines().any(|l| {
                l.contains(&manifest)
                    && l.contains("msg=\"authorized request\"")
                    && l.contains("http.request.method=GET")
                    && l.contains(&format!("remoteaddr=\"{addr}:"))
            });
            assert!(
                pulled,
                "no authenticated pull of {manifest} from {addr}:\n{log}"
            );
        }
    }

    /// docs/troubleshooting.md's `podwalld explain`, live and from what `kubectl get`
    /// prints, asked why other cannot reach web: denied, isolated by web-from-client.
    fn assert_explained(&self) {
        let block = sh_block_after("docs/troubleshooting.md", "**`podwalld explain`**");
        let script = block
            .replace("~/.kube/config", "$KUBECONFIG")
            .replace(
                "--from shop/web --to shop/db-0 --port 5432",
                "--from app/other --to app/web --port 7000",
            )
            .replace(
                "podwalld explain",
                &format!("{} explain", bins::daemon().display()),
            );
        let out = self.output(&script, "");
        let answers = out.matches("web-from-client").count();
        assert!(
            answers >= 2 && out.contains("denied"),
            "two answers naming the policy:\n{out}"
        );
    }

    /// podwall is chained into each node's own config, its plugin is in the node's
    /// `/opt/cni/bin`.
    fn assert_chained(&self) {
        for node in &self.cluster.nodes {
            let root = host_root(node);
            let text = std::fs::read_to_string(root.join("etc/cni/net.d/10-bridge.conflist"))
                .expect("the node's config");
            assert!(text.contains("\"podwall\""), "{}: {text}", node.name());
            assert!(root.join("opt/cni/bin/podwall").exists(), "{}", node.name());
        }
    }

    /// The cleanup ran on each node: its config is back byte for byte, its kernel holds no
    /// podwall table, and no podwall container runs.
    fn assert_removed(&self, before: &[Vec<(PathBuf, Vec<u8>)>]) {
        for (node, before) in self.cluster.nodes.iter().zip(before) {
            assert_eq!(&configs(&host_root(node)), before, "{}", node.name());
            let tables = node.netns.exec(&["nft", "list", "tables"]).expect("nft");
            assert!(
                !tables.stdout.contains("podwall"),
                "{}: {}",
                node.name(),
                tables.stdout
            );
        }
        assert!(
            eventually(SETTLE, || self.cluster.api.list(Kind::DaemonSet).is_empty()),
            "the DaemonSets are deleted"
        );
    }
}

impl Drop for Rehearsal<'_> {
    fn drop(&mut self) {
        for node in &self.cluster.nodes {
            self.podman.clear(node);
        }
        for tag in ["0.1.0", "0.2.0"] {
            let _ = Command::new("podman")
                .args(["rmi", "-f", &format!("{}:{tag}", self.repository)])
                .output();
        }
    }
}

fn configs(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root.join("etc/cni/net.d");
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// In namespace `app`: web on the first node serving TCP 7000, client and other on the
/// second, and the policy that admits client alone, applied with kubectl; the pods run by
/// the kubelet.
struct World<'w> {
    workloads: &'w Workloads,
}

impl<'w> World<'w> {
    fn apply(rehearsal: &Rehearsal, workloads: &'w Workloads) -> Self {
        let [a, b] = [0, 1].map(|i| rehearsal.cluster.nodes[i].name().to_string());
        let pod = |name: &str, node: &str, ports: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: app, labels: {{role: {name}}}}}\n\
                 spec: {{nodeName: {node}, containers: [{{name: c, image: busybox{ports}}}]}}\n"
            )
        };
        let yaml = [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n".to_string(),
            WEB_FROM_CLIENT.to_string(),
            pod("web", &a, &format!(", ports: [{{containerPort: {PORT}}}]")),
            pod("client", &b, ""),
            pod("other", &b, ""),
        ]
        .join("---\n");
        rehearsal.run_stdin("kubectl apply -f -", &yaml);
        let world = World { workloads };
        let all = ["app/web", "app/client", "app/other"];
        assert!(
            eventually(SETTLE, || {
                let running = world.lock();
                all.iter().all(|k| running.contains_key(*k))
            }),
            "the kubelet runs the three pods"
        );
        world
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Workload>> {
        self.workloads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reaches_web(&self, from: &str) -> bool {
        let running = self.lock();
        let (web, from) = (&running["app/web"], &running[from]);
        probe::tcp_connects(&from.pod.netns, web.pod.ip4(), PORT, QUICK)
    }

    /// client reaches web across the nodes, other does not (once both nodes know the
    /// policy and the pods: they came with one `kubectl apply`).
    fn assert_enforced(&self) {
        assert!(
            eventually(SETTLE, || self.reaches_web("app/client")),
            "client → web is allowed"
        );
        assert!(
            eventually(SETTLE, || !self.reaches_web("app/other")),
            "other → web is denied"
        );
        assert!(self.reaches_web("app/client") && !self.reaches_web("app/other"));
    }
}

/// docs/install.md's "Rehearse on the test cluster" block, as written: the test cluster
/// binary started, podwall installed on it with the kustomize overlay from a registry that
/// asks for a login, a policy enforced between pods on its two nodes, explained, and
/// uninstalled; the cluster stopped with everything it made.
#[test]
#[ignore = "needs root: builds and runs containers, creates network namespaces"]
fn the_install_rehearsal_in_the_docs_runs_as_written() {
    podwall_tests::require_root();
    let block = sh_block_after("docs/install.md", "## Rehearse on the test cluster");
    let (setup, rest) = block.split_once('\n').expect("lines");
    let (build, rest) = rest.split_once('\n').expect("lines");
    assert!(setup.starts_with("bash tests/setup.sh"), "{setup}");
    assert!(build.contains("cargo build -q -p podwall-tests --bin podwall-testcluster"));

    let work = work_dir("pwt-rehearsal-");
    let dir = work.path().join("cluster");
    let script = rest
        .replace("/tmp/podwall-rehearsal", &dir.display().to_string())
        .replace(
            "target/debug/podwall-testcluster",
            env!("CARGO_BIN_EXE_podwall-testcluster"),
        )
        .replace(
            "target/release/podwalld",
            &bins::daemon().display().to_string(),
        )
        .replace(
            "bash install/image.sh",
            &format!(
                "bash {}",
                bins::workspace_root().join("install/image.sh").display()
            ),
        );
    let mut cmd = Command::new("timeout");
    cmd.args(["600", "bash", "-e", "-c", &script]);
    in_work_dir(&mut cmd, work.path());
    let out = podwall_tests::cmd::run(&mut cmd, None, Duration::from_secs(620));
    // The image the block built, whatever happened (the cluster removed its own).
    let _ = Command::new("podman")
        .args(["rmi", "-f", &format!("{LINK_A}:5000/podwall:0.1.0")])
        .output();
    let out = out.unwrap_or_else(|e| panic!("running the rehearsal: {e:#}"));
    assert!(
        out.status.success(),
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        out.stdout,
        out.stderr
    );
    for line in [
        "client → web: connects",
        "other → web: denied",
        "web-from-client",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in:\n{}", out.stdout);
    }
    assert!(
        !dir.join("env").exists(),
        "the cluster removed its files when it stopped"
    );
}

/// A working directory with a copy of `install/`, whose manifests the commands edit.
fn work_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a working directory");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(bins::workspace_root().join("install"))
        .arg(dir.path())
        .status()
        .expect("copying install/");
    assert!(copied.success(), "copying install/");
    dir
}

/// Run from `dir`, with `HOME` there (kubectl keeps its cache in `$HOME/.kube`) and cargo's
/// and rustup's homes where they were (the image script builds with them).
fn in_work_dir(cmd: &mut Command, dir: &Path) {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let keep = |var: &str, default: &str| std::env::var(var).unwrap_or(format!("{home}/{default}"));
    cmd.current_dir(dir)
        .env("CARGO_HOME", keep("CARGO_HOME", ".cargo"))
        .env("RUSTUP_HOME", keep("RUSTUP_HOME", ".rustup"))
        .env("HOME", dir);
}

/// The first `sh` block after `heading` in the repository's file `doc`.
fn sh_block_after(doc: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(bins::workspace_root().join(doc))
        .unwrap_or_else(|e| panic!("reading {doc}: {e}"));
    text.split_once(heading)
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_string())
        .unwrap_or_else(|| panic!("{doc} has no sh block after {heading:?}"))
}
