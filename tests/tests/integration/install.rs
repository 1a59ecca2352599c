//! Issue 6: what an operator applies. The install-cni script under busybox `sh` against
//! temporary host directories (one fixture per starting state, checked byte for byte, run
//! twice, then uninstalled); the conflist it writes driven through the real libcni and
//! bridge plugin with a pod enforced; and the manifests of `install/` read as the Kubernetes
//! objects they claim to be, with the ClusterRole granting exactly what the daemon calls.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount, Toleration};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use podwall_tests::bins;
use podwall_tests::cmd::{self, Output};
use podwall_tests::rbac::DAEMON_PERMISSIONS;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// The install-cni script under busybox sh

fn root() -> PathBuf {
    bins::workspace_root()
}

fn fixture(case: &str) -> PathBuf {
    root().join("tests/fixtures/install").join(case)
}

/// The plugin the script installs: the static build (`tests/setup.sh`), or a debug build
/// when only `cargo build` ran.
fn plugin_binary() -> PathBuf {
    if std::env::var_os("PODWALL_PLUGIN").is_some() {
        return bins::plugin();
    }
    let candidates = [
        bins::target_dir().join("x86_64-unknown-linux-gnu/release/podwall"),
        bins::target_dir().join("debug/podwall"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("no podwall binary: run tests/setup.sh (or cargo build -p podwall)")
        })
}

/// Every file of a directory, hidden ones included, by name. `.gitkeep` marks an empty
/// fixture directory and is not part of it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().into_string().unwrap(), e.path()))
        .filter(|(name, _)| name != ".gitkeep")
        .map(|(name, path)| (name, std::fs::read(path).unwrap()))
        .collect()
}

/// Inode and modification time of every file: a file rewritten with the same bytes still
/// changes these.
fn stamps(dir: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                (m.ino(), m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

fn show(files: &BTreeMap<String, Vec<u8>>) -> String {
    files
        .iter()
        .map(|(n, b)| format!("--- {n}\n{}", String::from_utf8_lossy(b)))
        .collect()
}

fn assert_same_files(actual: &Path, expected: &Path, what: &str) {
    let (a, e) = (files(actual), files(expected));
    assert!(
        a == e,
        "{what}: {} differs from {}\n=== got:\n{}\n=== expected:\n{}",
        actual.display(),
        expected.display(),
        show(&a),
        show(&e)
    );
}

/// A throw-away host: `opt/cni/bin`, `etc/cni/net.d` (seeded from a fixture) and the
/// ConfigMap's default conflist where the init container mounts it. The script runs under
/// this machine's busybox, or in podwall's image (`image`: its tag) as the init container.
pub(crate) struct Host {
    dir: tempfile::TempDir,
    image: Option<String>,
}

impl Host {
    fn new(before: &Path) -> Self {
        Self::with_image(before, None)
    }

    fn with_image(before: &Path, image: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pwt-install-")
            .tempdir()
            .unwrap();
        let host = Host {
            dir,
            image: image.map(str::to_string),
        };
        std::fs::create_dir_all(host.bin_dir()).unwrap();
        std::fs::create_dir_all(host.net_dir()).unwrap();
        std::fs::create_dir_all(host.default_conflist().parent().unwrap()).unwrap();
        for (name, bytes) in files(before) {
            std::fs::write(host.net_dir().join(name), bytes).unwrap();
        }
        std::fs::write(host.default_conflist(), default_conflist()).unwrap();
        host
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("opt/cni/bin")
    }

    fn net_dir(&self) -> PathBuf {
        self.dir.path().join("etc/cni/net.d")
    }

    fn default_conflist(&self) -> PathBuf {
        self.dir.path().join("etc/podwall/10-podwall.conflist")
    }

    /// `busybox sh install/install-cni.sh <mode>`, as the init container runs it.
    fn run(&self, mode: &str, extra_env: &[(&str, &str)]) -> Output {
        if let Some(image) = &self.image {
            return self.run_in_image(image, mode, extra_env);
        }
        let busybox = Path::new("/usr/bin/busybox");
        assert!(
            busybox.is_file(),
            "busybox not found: install the Debian package busybox (tests/setup.sh does)"
        );
        let mut sh = Command::new(busybox);
        sh.arg("sh")
            .arg(root().join("install/install-cni.sh"))
            .arg(mode)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_BIN_DIR", self.bin_dir())
            .env("CNI_NET_DIR", self.net_dir())
            .env("PODWALL_BIN", plugin_binary())
            .env("DEFAULT_CONFLIST", self.default_conflist());
        for (k, v) in extra_env {
            sh.env(k, v);
        }
        cmd::run(&mut sh, None, cmd::SHORT).unwrap()
    }

    /// The install-cni init container itself: the image's script and plugin, the host's
    /// directories mounted where the DaemonSet mounts them, a read-only root.
    fn run_in_image(&self, image: &str, mode: &str, extra_env: &[(&str, &str)]) -> Output {
        let mounts = [
            (self.bin_dir(), "/host/opt/cni/bin", ""),
            (self.net_dir(), "/host/etc/cni/net.d", ""),
            (self.dir.path().join("etc/podwall"), "/etc/podwall", ":ro"),
        ];
        let mut run = podwall_tests::image::podman_run();
        run.args(["--network", "none", "--read-only", "--cap-drop", "ALL"]);
        for (host, path, mode) in mounts {
            run.arg("-v")
                .arg(format!("{}:{path}{mode}", host.display()));
        }
        let env = [
            ("CNI_BIN_DIR", "/host/opt/cni/bin"),
            ("CNI_NET_DIR", "/host/etc/cni/net.d"),
            ("PODWALL_BIN", "/usr/local/bin/podwall"),
            ("DEFAULT_CONFLIST", "/etc/podwall/10-podwall.conflist"),
        ];
        for (k, v) in env.iter().chain(extra_env) {
            run.arg("-e").arg(format!("{k}={v}"));
        }
        run.args(["--entrypoint", "/bin/busybox", image, "sh"])
            .args(["/usr/local/bin/install-cni.sh", mode]);
        let out = cmd::run(&mut run, None, std::time::Duration::from_secs(60)).unwrap();
        // Paths in what the script says are the container's: name them as the host's.
        let host_paths = |text: &str| {
            text.replace("/host/opt/cni/bin", &self.bin_dir().display().to_string())
                .replace("/host/etc/cni/net.d", &self.net_dir().display().to_string())
        };
        Output {
            stdout: host_paths(&out.stdout),
            stderr: host_paths(&out.stderr),
            ..out
        }
    }

    fn install(&self) -> Output {
        self.run("install", &[])
    }

    fn uninstall(&self) -> Output {
        self.run("uninstall", &[])
    }
}

/// Install, check against `after/`, install again (nothing may be rewritten), uninstall and
/// check against `uninstalled/` when the fixture has one, else against `before/`.
fn install_round_trip(case: &str) {
    install_round_trip_in(case, None);
}

/// The round trip of `case`, under this machine's busybox or in the image tagged `image`.
pub(crate) fn install_round_trip_in(case: &str, image: Option<&str>) {
    let host = Host::with_image(&fixture(case).join("before"), image);
    let first = host.install();
    assert!(first.success(), "{case}: first install: {first}");
    assert_same_files(&host.net_dir(), &fixture(case).join("after"), case);
    let plugin = host.bin_dir().join("podwall");
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(plugin_binary()).unwrap(),
        "{case}: the plugin is installed"
    );
    assert_eq!(
        std::fs::metadata(&plugin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        files(&host.bin_dir()).len(),
        1,
        "{case}: no temp file left in the bin dir"
    );

    let (net, bin) = (stamps(&host.net_dir()), stamps(&host.bin_dir()));
    let second = host.install();
    assert!(second.success(), "{case}: second install: {second}");
    assert_eq!(
        stamps(&host.net_dir()),
        net,
        "{case}: a second install rewrites no config file"
    );
    assert_eq!(
        stamps(&host.bin_dir()),
        bin,
        "{case}: a second install leaves an identical plugin alone"
    );
    assert_same_files(&host.net_dir(), &fixture(case).join("after"), case);

    let out = host.uninstall();
    assert!(out.success(), "{case}: uninstall: {out}");
    let restored = if fixture(case).join("uninstalled").is_dir() {
        fixture(case).join("uninstalled")
    } else {
        fixture(case).join("before")
    };
    assert_same_files(&host.net_dir(), &restored, &format!("{case} uninstalled"));
    let again = host.uninstall();
    assert!(again.success(), "{case}: second uninstall: {again}");
    assert_same_files(
        &host.net_dir(),
        &restored,
        &format!("{case} uninstalled twice"),
    );
    assert!(plugin.is_file(), "uninstall keeps the binary by default");
}

#[test]
fn existing_conflist_gets_podwall_appended_once_and_uninstall_restores_its_bytes() {
    install_round_trip("conflist");
}

#[test]
fn kube_router_conf_becomes_a_conflist_and_uninstall_puts_it_back() {
    install_round_trip("kuberouter-conf");
}

#[test]
fn node_without_config_gets_the_configmap_default() {
    install_round_trip("empty");
}

#[test]
fn already_chained_config_is_left_byte_identical() {
    let case = "installed";
    let host = Host::new(&fixture(case).join("before"));
    let before = stamps(&host.net_dir());
    let out = host.install();
    assert!(out.success(), "{out}");
    assert_eq!(stamps(&host.net_dir()), before, "not even rewritten");
    install_round_trip(case);
}

#[test]
fn malformed_config_is_left_untouched_with_one_line_naming_it() {
    malformed_config_left_untouched_in(None);
}

/// The malformed case, under this machine's busybox or in the image tagged `image`.
pub(crate) fn malformed_config_left_untouched_in(image: Option<&str>) {
    let host = Host::with_image(&fixture("malformed").join("before"), image);
    let before = stamps(&host.net_dir());
    let out = host.install();
    assert!(!out.success(), "install must fail: {out}");
    assert_eq!(stamps(&host.net_dir()), before);
    assert_same_files(
        &host.net_dir(),
        &fixture("malformed").join("after"),
        "malformed",
    );
    let file = host.net_dir().join("10-bridge.conflist");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("podwall: "))
        .unwrap_or_else(|| panic!("no podwall line: {out}"));
    assert!(
        line.contains(&file.display().to_string()) && line.contains("not JSON"),
        "{line}"
    );
    let out = host.uninstall();
    assert!(out.success(), "uninstall skips what it cannot read: {out}");
    assert_eq!(stamps(&host.net_dir()), before);
}

#[test]
fn upgrade_replaces_the_plugin_by_rename_and_keeps_the_config() {
    let host = Host::new(&fixture("installed").join("before"));
    let plugin = host.bin_dir().join("podwall");
    std::fs::write(&plugin, b"old plugin").unwrap();
    let old_inode = std::fs::metadata(&plugin).unwrap().ino();
    let net = stamps(&host.net_dir());
    let out = host.install();
    assert!(out.success(), "{out}");
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(plugin_binary()).unwrap()
    );
    assert_ne!(
        std::fs::metadata(&plugin).unwrap().ino(),
        old_inode,
        "a new file renamed into place, never written over a running binary"
    );
    assert_eq!(stamps(&host.net_dir()), net);
}

#[test]
fn uninstall_can_remove_the_binary_and_install_honours_a_custom_entry() {
    let host = Host::new(&fixture("conflist").join("before"));
    let out = host.run(
        "install",
        &[(
            "PODWALL_ENTRY",
            r#"{"type":"podwall","failurePolicy":"open"}"#,
        )],
    );
    assert!(out.success(), "{out}");
    let list: Value =
        serde_json::from_slice(&std::fs::read(host.net_dir().join("10-bridge.conflist")).unwrap())
            .unwrap();
    assert_eq!(list["plugins"][3]["failurePolicy"], "open");
    let out = host.run("uninstall", &[("REMOVE_BINARY", "1")]);
    assert!(out.success(), "{out}");
    assert!(!host.bin_dir().join("podwall").exists());
    assert_same_files(
        &host.net_dir(),
        &fixture("conflist").join("before"),
        "removed",
    );
}

// ---------------------------------------------------------------------------------------
// The manifests

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde_norway::Value::deserialize(doc).unwrap())
        .map(|v| serde_json::to_value(v).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn manifest() -> Vec<Value> {
    documents(&root().join("install/podwall.yaml"))
}

/// Deserialise into the k8s-openapi type and back: a misspelt or misplaced field (which
/// k8s-openapi would silently drop) makes the round trip differ.
pub(crate) fn typed<K: DeserializeOwned + Serialize>(doc: &Value) -> K {
    let obj: K = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} is not a valid object: {e}", doc["kind"]));
    let back = serde_json::to_value(&obj).unwrap();
    assert_eq!(
        &back, doc,
        "{} has fields its type does not know",
        doc["kind"]
    );
    obj
}

fn one<K: DeserializeOwned + Serialize>(kind: &str) -> K {
    let docs: Vec<Value> = manifest()
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(docs.len(), 1, "one {kind} in install/podwall.yaml");
    typed(&docs[0])
}

fn default_conflist() -> String {
    let cm: ConfigMap = one("ConfigMap");
    cm.data.unwrap()["10-podwall.conflist"].clone()
}

#[test]
fn the_one_file_is_the_parts_in_order() {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(root().join("install/base"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    parts.sort();
    let from_parts: Vec<Value> = parts.iter().flat_map(|p| documents(p)).collect();
    assert_eq!(
        manifest(),
        from_parts,
        "install/podwall.yaml is stale: run install/build.sh"
    );
}

#[test]
fn manifests_are_the_right_kinds_and_versions() {
    let kinds: Vec<(String, String)> = manifest()
        .iter()
        .map(|d| {
            (
                d["apiVersion"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("v1", "ConfigMap"),
        ("apps/v1", "DaemonSet"),
    ];
    assert_eq!(
        kinds,
        expect
            .iter()
            .map(|(a, k)| (a.to_string(), k.to_string()))
            .collect::<Vec<_>>()
    );
    let sa: ServiceAccount = one("ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some("podwall"));
    assert_eq!(sa.metadata.namespace.as_deref(), Some("kube-system"));
    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "podwall");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "podwall", Some("kube-system"))
    );
    // The identity the test API server names in its 403s.
    assert_eq!(
        podwall_tests::apiserver::DEFAULT_USER,
        "system:serviceaccount:kube-system:podwall"
    );
}

#[test]
fn cluster_role_grants_exactly_what_the_daemon_calls() {
    let role: ClusterRole = one("ClusterRole");
    let mut granted = std::collections::BTreeSet::new();
    for rule in role.rules.unwrap() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "no narrowing or non-resource rules: {rule:?}"
        );
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "no wildcards: {rule:?}"
                    );
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    // The list the kube_rbac root test checks against the test API server's request log.
    let needed: std::collections::BTreeSet<(String, String, String)> = DAEMON_PERMISSIONS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        granted, needed,
        "the ClusterRole grants what the daemon calls and nothing more"
    );
}

fn tolerates(tolerations: &[Toleration], key: &str, effect: &str) -> bool {
    tolerations.iter().any(|t| {
        let op = t.operator.as_deref().unwrap_or("Equal");
        let key_ok = match t.key.as_deref() {
            None | Some("") => op == "Exists",
            Some(k) => k == key && (op == "Exists" || t.value.as_deref().unwrap_or("").is_empty()),
        };
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == effect);
        key_ok && effect_ok
    })
}

fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn daemonset_runs_everywhere_with_the_host_paths_probes_and_privileges_it_needs() {
    let ds: DaemonSet = one("DaemonSet");
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
    let spec = ds.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("podwall"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    for (key, effect) in [
        ("node-role.kubernetes.io/control-plane", "NoSchedule"),
        ("node-role.kubernetes.io/master", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("CriticalAddonsOnly", "NoSchedule"),
    ] {
        assert!(
            tolerates(&tolerations, key, effect),
            "tolerates {key}:{effect}"
        );
    }

    let daemon = container(&pod.containers, "podwalld");
    let env = daemon.env.clone().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName")
    );
    for (probe, path) in [
        (&daemon.liveness_probe, "/livez"),
        (&daemon.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        // The daemon serves it on the node's loopback only, out of the pods' reach.
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(20244)
        );
    }
    let requests = daemon
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));

    let sc = daemon.security_context.clone().unwrap();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    assert_eq!(caps.add, Some(vec!["NET_ADMIN".to_string()]));

    // Host paths: where each is, and who mounts it how.
    let volumes: BTreeMap<String, String> = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|v| v.host_path.map(|h| (v.name, h.path)))
        .collect();
    let paths: Vec<&str> = volumes.values().map(String::as_str).collect();
    for path in [
        "/run/podwall",
        "/var/lib/podwall",
        "/etc/cni/net.d",
        "/opt/cni/bin",
        "/lib/modules",
        "/var/lib/cni",
    ] {
        assert!(paths.contains(&path), "hostPath {path}");
    }
    let mounts = |c: &Container| -> BTreeMap<String, (String, bool)> {
        c.volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                volumes
                    .get(&m.name)
                    .map(|host| (host.clone(), (m.mount_path, m.read_only.unwrap_or(false))))
            })
            .collect()
    };
    let daemon_mounts = mounts(daemon);
    assert_eq!(
        daemon_mounts.get("/run/podwall"),
        Some(&("/run/podwall".into(), false))
    );
    assert_eq!(
        daemon_mounts.get("/var/lib/podwall"),
        Some(&("/var/lib/podwall".into(), false))
    );
    assert_eq!(
        daemon_mounts.get("/var/lib/cni"),
        Some(&("/var/lib/cni".into(), true)),
        "the runtime's CNI cache is read, never written"
    );
    let init = pod.init_containers.clone().unwrap();
    let kernel = container(&init, "kernel-setup");
    assert_eq!(
        mounts(kernel).get("/lib/modules"),
        Some(&("/lib/modules".into(), true)),
        "modules are read, never written"
    );
    let install = container(&init, "install-cni");
    let install_mounts = mounts(install);
    assert_eq!(
        install_mounts.get("/etc/cni/net.d"),
        Some(&("/host/etc/cni/net.d".into(), false))
    );
    assert_eq!(
        install_mounts.get("/opt/cni/bin"),
        Some(&("/host/opt/cni/bin".into(), false))
    );
    let install_caps = install
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .unwrap();
    assert_eq!(install_caps.drop, Some(vec!["ALL".to_string()]));
    assert!(install_caps.add.is_none());
    let command = install.command.clone().unwrap();
    assert_eq!(
        command[..3],
        ["/bin/busybox", "sh", "/usr/local/bin/install-cni.sh"],
        "the init container runs the script under the busybox sh these tests use"
    );
}

#[test]
fn configmap_default_is_the_fixture_and_a_valid_conflist() {
    let default = default_conflist();
    assert_eq!(
        default.as_bytes(),
        std::fs::read(fixture("empty/after/10-podwall.conflist")).unwrap(),
        "tests/fixtures/install/empty/after follows the ConfigMap"
    );
    let list: Value = serde_json::from_str(&default).unwrap();
    assert_eq!(list["plugins"][0]["type"], "bridge");
    assert_eq!(
        list["plugins"].as_array().unwrap().last().unwrap()["type"],
        "podwall"
    );
}

#[test]
fn cleanup_manifest_is_a_daemonset_that_uninstalls() {
    let docs = documents(&root().join("install/cleanup/podwall-cleanup.yaml"));
    assert_eq!(docs.len(), 1);
    let ds: DaemonSet = typed(&docs[0]);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let init = pod.init_containers.unwrap();
    let uninstall = container(&init, "uninstall-cni");
    assert_eq!(
        uninstall
            .command
            .clone()
            .unwrap()
            .last()
            .map(String::as_str),
        Some("uninstall")
    );
}

// ---------------------------------------------------------------------------------------
// What install-cni writes, through the real libcni

#[test]
#[ignore = "needs root: creates network namespaces"]
fn conflist_written_by_install_cni_attaches_and_enforces_through_libcni() {
    use podwall_tests::manifests::{documents as yaml_docs, namespace, PodManifest};
    use podwall_tests::probe::{self, EchoServer, PROBE_TIMEOUT};
    use podwall_tests::{Node, NodeOptions, Pod};

    let world = yaml_docs(&[
        namespace("web", &[]),
        namespace("other", &[]),
        PodManifest::new("web", "a").yaml(),
        PodManifest::new("other", "c").yaml(),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: web}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n".to_string(),
    ]);
    let node = Node::standalone("inst", NodeOptions::default(), &[("world.yaml", world)]);
    // The node's CNI dirs as a host has them: bridge only, and no podwall binary yet.
    let bin_dir = node.dir().join("bin");
    std::fs::remove_file(bin_dir.join("podwall")).unwrap();
    let net_dir = node.dir().join("net.d");
    std::fs::create_dir_all(&net_dir).unwrap();
    let bridge_only = node.conflist_json("1.0.0", None);
    std::fs::write(
        net_dir.join("10-bridge.conflist"),
        serde_json::to_vec_pretty(&bridge_only).unwrap(),
    )
    .unwrap();

    let mut sh = Command::new("busybox");
    sh.arg("sh")
        .arg(root().join("install/install-cni.sh"))
        .arg("install")
        .env("CNI_BIN_DIR", &bin_dir)
        .env("CNI_NET_DIR", &net_dir)
        .env("PODWALL_BIN", bins::plugin())
        .env("DEFAULT_CONFLIST", "/nonexistent")
        .env("PODWALL_ENTRY", node.podwall_entry().to_string());
    let out = cmd::run(&mut sh, None, cmd::SHORT).unwrap();
    assert!(out.success(), "{out}");
    let conflist = net_dir.join("10-bridge.conflist");
    let written: Value = serde_json::from_slice(&std::fs::read(&conflist).unwrap()).unwrap();
    assert_eq!(written["plugins"][1]["type"], "podwall");

    let a = Pod::named("inst-a", "web", "a");
    let c = Pod::named("inst-c", "other", "c");
    for pod in [&a, &c] {
        node.libcni("add", &conflist, pod).unwrap_or_else(|e| {
            panic!("ADD {} with the installed conflist: {e}", pod.container_id)
        });
    }
    node.expect_attached(a.ip4());
    node.libcni("check", &conflist, &a)
        .unwrap_or_else(|e| panic!("CHECK: {e}"));
    let at_a = EchoServer::start(&a.netns, 80);
    let at_c = EchoServer::start(&c.netns, 80);
    assert!(
        !probe::tcp_connects(&c.netns, a.ip4(), at_a.port(), PROBE_TIMEOUT),
        "web denies ingress: other/c → web/a is dropped"
    );
    assert!(
        probe::tcp_connects(&a.netns, c.ip4(), at_c.port(), PROBE_TIMEOUT),
        "other is not isolated: web/a → other/c connects"
    );
    for pod in [&a, &c] {
        node.libcni("del", &conflist, pod)
            .unwrap_or_else(|e| panic!("DEL {}: {e}", pod.container_id));
    }
    assert_eq!(node.status(), (true, 0));
}

/// Issue 15: `podwall --version` answers without a CNI environment.
#[test]
fn the_plugin_says_its_version() {
    let out = std::process::Command::new(plugin_binary())
        .arg("--version")
        .env_remove("CNI_COMMAND")
        .output()
        .expect("running podwall --version");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("podwall {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// The README's `sed` line that starts with `start`, as written there.
fn readme_line(start: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    readme
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no README line starts with {start:?}"))
        .to_string()
}

#[test]
fn the_readme_retags_both_manifests_and_names_the_pull_secret_in_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("install/cleanup")).unwrap();
    let manifests = [
        "install/podwall.yaml",
        "install/cleanup/podwall-cleanup.yaml",
    ];
    for file in manifests {
        std::fs::copy(root().join(file), dir.path().join(file)).unwrap();
    }
    for line in [
        readme_line("sed -i 's|image: podwall:0.1.0|"),
        readme_line("sed -i 's|^      hostNetwork: true$|"),
    ] {
        let mut sh = Command::new("sh");
        sh.args(["-c", &line]).current_dir(dir.path());
        let out = cmd::run(&mut sh, None, std::time::Duration::from_secs(10))
            .and_then(Output::ok)
            .unwrap_or_else(|e| panic!("{line}: {e:#}"));
        assert!(out.stderr.is_empty(), "{line}: {}", out.stderr);
    }
    for file in manifests {
        let docs: Vec<Value> = documents(&dir.path().join(file))
            .into_iter()
            .filter(|d| d["kind"] == "DaemonSet")
            .collect();
        assert_eq!(docs.len(), 1, "{file}");
        let ds: DaemonSet = typed(&docs[0]);
        let pod = ds.spec.unwrap().template.spec.unwrap();
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in containers {
            assert_eq!(
                c.image.as_deref(),
                Some("registry.example/podwall:0.1.0"),
                "{file}: {}",
                c.name
            );
        }
        let secrets: Vec<String> = (pod.image_pull_secrets.iter().flatten())
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(secrets, ["podwall-pull"], "{file}");
    }
}
