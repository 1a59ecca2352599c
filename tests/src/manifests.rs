//! The `--manifests` directory of a standalone node: Namespace, Pod and NetworkPolicy
//! manifests that a test writes, replaces and deletes while the daemon follows the directory;
//! and the CRD a test installs in the test API server to have ClusterNetworkPolicies served.
//!
//! Every change is atomic: the text goes to a dotfile (which the daemon skips) and is renamed
//! into place, so the daemon never reads half a file. Small YAML builders keep the tests'
//! worlds short and readable.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use podwall_policy::manifests::{load, Loaded};

/// A directory of manifest files.
#[derive(Debug, Clone)]
pub struct ManifestDir {
    path: PathBuf,
}

impl ManifestDir {
    /// Use (and create) `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating manifests dir {}: {e}", path.display()));
        ManifestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write (or replace) `file` with `text`, atomically.
    pub fn write(&self, file: &str, text: &str) {
        assert!(
            !file.starts_with('.') && !file.contains('/'),
            "a plain manifest file name: {file}"
        );
        let partial = self
            .path
            .join(format!(".{file}.{}", crate::netns::next_id()));
        let target = self.path.join(file);
        fs::write(&partial, text)
            .and_then(|()| fs::rename(&partial, &target))
            .unwrap_or_else(|e| panic!("writing manifest {}: {e}", target.display()));
    }

    /// Delete `file`; a file that is not there is already deleted.
    pub fn remove(&self, file: &str) {
        let path = self.path.join(file);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing manifest {}: {e}", path.display()),
        }
    }

    /// Copy a file (e.g. one of `conf/policies/`) into the directory under `file`.
    pub fn copy_from(&self, source: &Path, file: &str) {
        let text = fs::read_to_string(source)
            .unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
        self.write(file, &text);
    }

    /// The manifest files as the daemon reads them: `(name, text)`, dotfiles skipped.
    pub fn files(&self) -> Result<Vec<(String, String)>> {
        let mut files = Vec::new();
        for entry in
            fs::read_dir(&self.path).with_context(|| format!("reading {}", self.path.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let manifest = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
            if name.starts_with('.') || !manifest {
                continue;
            }
            files.push((name, fs::read_to_string(entry.path())?));
        }
        files.sort();
        Ok(files)
    }

    /// The directory parsed by the policy crate, as the daemon and `podwalld explain` do.
    pub fn load(&self) -> Loaded {
        let files = self
            .files()
            .unwrap_or_else(|e| panic!("reading the manifests: {e:#}"));
        load(files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    }
}

/// Labels as a YAML flow map: `{app: web, tier: "1"}`.
fn labels_yaml(labels: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}: {}", quote(v)))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// A YAML scalar that stays a string (`"1"`, `"true"`).
fn quote(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialise")
}

/// A Namespace manifest.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {}}}\n",
        labels_yaml(labels)
    )
}

/// A container port of a Pod manifest: `(name, number, protocol)`.
pub type PortDecl<'a> = (&'a str, u16, &'a str);

/// A Pod manifest builder. For a pod of the test's node only labels and ports matter (the
/// daemon takes its addresses from the CNI result); a remote pod needs `node` and `ips`.
#[derive(Debug, Clone, Default)]
pub struct PodManifest {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    ports: Vec<(String, u16, String)>,
    node: Option<String>,
    ips: Vec<IpAddr>,
}

impl PodManifest {
    pub fn new(namespace: &str, name: &str) -> Self {
        PodManifest {
            namespace: namespace.into(),
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    pub fn ports(mut self, ports: &[PortDecl]) -> Self {
        self.ports = ports
            .iter()
            .map(|(n, p, proto)| (n.to_string(), *p, proto.to_string()))
            .collect();
        self
    }

    /// A pod scheduled on `node` with the addresses the API server reports: a pod of another
    /// node, or one of this node that podwall did not attach (adopted).
    pub fn remote(mut self, node: &str, ips: &[IpAddr]) -> Self {
        self.node = Some(node.into());
        self.ips = ips.to_vec();
        self
    }

    pub fn yaml(&self) -> String {
        let labels: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut out = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {}}}\nspec:\n",
            self.name,
            self.namespace,
            labels_yaml(&labels)
        );
        if let Some(node) = &self.node {
            let _ = writeln!(out, "  nodeName: {node}");
        }
        out.push_str("  containers:\n  - name: c\n    image: busybox\n");
        if !self.ports.is_empty() {
            out.push_str("    ports:\n");
            for (name, port, proto) in &self.ports {
                let _ = writeln!(
                    out,
                    "    - {{name: {name}, containerPort: {port}, protocol: {proto}}}"
                );
            }
        }
        out.push_str("status:\n  phase: Running\n");
        if let Some(first) = self.ips.first() {
            let _ = writeln!(out, "  podIP: {}", quote(&first.to_string()));
            out.push_str("  podIPs:\n");
            for ip in &self.ips {
                let _ = writeln!(out, "  - ip: {}", quote(&ip.to_string()));
            }
        }
        out
    }
}

/// Namespace `namespace` with one pod per name of `roles`, labelled `role: <name>` (the
/// world the issue 13 tests share with [`DB_FROM_API`]).
pub fn role_pods(namespace_name: &str, roles: &[&str]) -> String {
    let mut docs = vec![namespace(namespace_name, &[])];
    docs.extend(roles.iter().map(|role| {
        PodManifest::new(namespace_name, role)
            .labels(&[("role", role)])
            .yaml()
    }));
    documents(&docs)
}

/// In namespace `app`, only pods labelled `role: api` may reach those labelled `role: db`.
pub const DB_FROM_API: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: app}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: api}}}]
";

/// Several manifests in one file.
pub fn documents<S: AsRef<str>>(docs: &[S]) -> String {
    docs.iter()
        .map(|d| d.as_ref().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// The ClusterNetworkPolicy CRD as the install ships it (install/crds).
pub fn cluster_policy_crd() -> String {
    let path = crate::bins::workspace_root().join("install/crds/clusternetworkpolicies.yaml");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A ClusterNetworkPolicy (v1beta1); `body` is its spec after tier and priority, unindented.
pub fn cluster_policy(name: &str, tier: &str, priority: u16, body: &str) -> String {
    let mut text = format!(
        "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n"
    );
    for line in body.lines() {
        let _ = writeln!(text, "  {line}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_load_into_the_policy_model() {
        let text = documents(&[
            namespace("shop", &[("team", "web")]),
            PodManifest::new("shop", "db")
                .labels(&[("app", "db"), ("tier", "1")])
                .ports(&[("sql", 5432, "TCP")])
                .yaml(),
            PodManifest::new("shop", "far")
                .remote("elsewhere", &["10.9.0.4".parse().unwrap()])
                .yaml(),
        ]);
        let loaded = load([("w.yaml", text.as_str())]);
        assert!(loaded.errors.is_empty(), "{:?}\n{text}", loaded.errors);
        let snap = &loaded.snapshot;
        assert_eq!(snap.namespaces["shop"].labels["team"], "web");
        let db = snap
            .pods
            .values()
            .find(|p| p.key.name == "db")
            .expect("db loaded");
        assert_eq!(db.labels["tier"], "1");
        assert_eq!(
            db.named_port("sql", podwall_policy::Protocol::Tcp),
            Some(5432)
        );
        let far = snap.pods.values().find(|p| p.key.name == "far").unwrap();
        assert_eq!(far.node.as_deref(), Some("elsewhere"));
        assert_eq!(far.ips, vec!["10.9.0.4".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn writes_are_atomic_renames_and_removal_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ManifestDir::new(tmp.path().join("m"));
        dir.write("a.yaml", &namespace("x", &[]));
        dir.write("a.yaml", &namespace("y", &[]));
        assert_eq!(dir.files().unwrap().len(), 1);
        assert!(dir.load().snapshot.namespaces.contains_key("y"));
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no partial files left behind");
        dir.remove("a.yaml");
        dir.remove("a.yaml");
        assert!(dir.files().unwrap().is_empty());
    }
}
