//! Manifests as text → a [`Snapshot`] and the list of what was wrong with them.
//!
//! Pure: the caller reads the files (the daemon's `--manifests` source and
//! `podwalld explain` both do) and passes `(file name, text)` pairs. A file holds one or more
//! YAML (or JSON) documents; each is a Namespace, a Pod, a NetworkPolicy
//! (`networking.k8s.io/v1`, or `extensions/v1beta1` as older guides write it, converted on
//! load), a ClusterNetworkPolicy (`policy.networking.k8s.io` v1beta1 or v1alpha2) or a
//! `List` of them. Other kinds are skipped and listed in [`Loaded::skipped`].

use serde::Deserialize;
use serde_norway::Value;

use crate::error::{ModelError, Problem};
use crate::model::{
    cluster_api, ClusterNetworkPolicyApi, ClusterPolicy, Namespace, ObjectKey, Pod, Policy,
    Snapshot, DEFAULT_NAMESPACE,
};

/// The API version NetworkPolicy was served under before `networking.k8s.io/v1`.
pub const LEGACY_POLICY_API: &str = "extensions/v1beta1";
const POLICY_API: &str = "networking.k8s.io/v1";

/// What a set of manifest files amounts to.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// Every problem, in file order. A broken NetworkPolicy is still in the snapshot, as its
    /// fail-closed stand-in.
    pub errors: Vec<ManifestError>,
    /// `file: kind name` of documents of kinds policy does not use.
    pub skipped: Vec<String>,
}

impl Loaded {
    /// Whether some object could not be read at all, so the snapshot may lack a policy and
    /// must not be trusted to be closed enough.
    pub fn has_fatal_errors(&self) -> bool {
        self.errors.iter().any(ManifestError::is_fatal)
    }
}

/// A problem with one file, document or object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The document is not YAML, or not an object we can identify.
    #[error("{file}: document {document}: {message}")]
    Unreadable {
        file: String,
        document: usize,
        message: String,
    },
    /// A field of an identified object is wrong.
    #[error("{file}: {error}")]
    Object { file: String, error: ModelError },
    /// The same object twice; the first one is kept.
    #[error("{file}: {kind} {object} is also defined in {first}, which is kept")]
    Duplicate {
        file: String,
        kind: &'static str,
        object: String,
        first: String,
    },
}

impl ManifestError {
    /// Unreadable documents are fatal: we cannot know what they would have enforced.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ManifestError::Unreadable { .. })
    }
}

/// What to read besides Namespaces, Pods and NetworkPolicies.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// ClusterNetworkPolicies (`policy.networking.k8s.io` v1beta1 and v1alpha2): on in
    /// [`load`]; off leaves them in [`Loaded::skipped`].
    pub cluster_policies: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_policies: true,
        }
    }
}

/// Parses manifest files given as `(file name, text)`.
pub fn load<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Loaded {
    load_with(Options::default(), files)
}

/// [`load`], reading what `options` asks for too.
pub fn load_with<'a>(
    options: Options,
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Loaded {
    let mut loader = Loader {
        options,
        ..Loader::default()
    };
    for (file, text) in files {
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let document = i + 1;
            match Value::deserialize(doc) {
                Ok(Value::Null) => {}
                Ok(value) => loader.object(file, document, value),
                Err(e) => {
                    loader.unreadable(file, document, format!("not valid YAML: {e}"));
                    // The parser cannot resynchronise after a syntax error.
                    break;
                }
            }
        }
    }
    loader.done
}

#[derive(Default)]
struct Loader {
    options: Options,
    done: Loaded,
    origin: std::collections::BTreeMap<(&'static str, String), String>,
}

impl Loader {
    fn unreadable(&mut self, file: &str, document: usize, message: String) {
        self.done.errors.push(ManifestError::Unreadable {
            file: file.to_string(),
            document,
            message,
        });
    }

    fn model_errors(&mut self, file: &str, errors: Vec<ModelError>) {
        self.done
            .errors
            .extend(errors.into_iter().map(|error| ManifestError::Object {
                file: file.to_string(),
                error,
            }));
    }

    /// Records where an object came from; false (and an error) if it was seen already.
    fn first_time(&mut self, file: &str, kind: &'static str, object: String) -> bool {
        match self.origin.get(&(kind, object.clone())) {
            Some(first) => {
                self.done.errors.push(ManifestError::Duplicate {
                    file: file.to_string(),
                    kind,
                    object,
                    first: first.clone(),
                });
                false
            }
            None => {
                self.origin.insert((kind, object), file.to_string());
                true
            }
        }
    }

    fn object(&mut self, file: &str, document: usize, mut value: Value) {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(api), Some(kind)) = (text(&value, "apiVersion"), text(&value, "kind")) else {
            return self.unreadable(file, document, "apiVersion and kind are required".into());
        };
        if kind == "List" || kind.ends_with("List") {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for item in items {
                self.object(file, document, item);
            }
            return;
        }
        let meta = value.get("metadata");
        let name = meta.and_then(|m| text(m, "name")).unwrap_or_default();
        let namespace = meta
            .and_then(|m| text(m, "namespace"))
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let cluster_policy = kind == "ClusterNetworkPolicy"
            && api.split_once('/').is_some_and(|(g, v)| {
                g == cluster_api::GROUP && cluster_api::VERSIONS.contains(&v)
            });
        let wanted = matches!(
            (api.as_str(), kind.as_str()),
            ("v1", "Namespace" | "Pod") | (POLICY_API | LEGACY_POLICY_API, "NetworkPolicy")
        ) || (cluster_policy && self.options.cluster_policies);
        if !wanted {
            self.done
                .skipped
                .push(format!("{file}: {api} {kind} {name}"));
            return;
        }
        if name.is_empty() {
            return self.unreadable(file, document, format!("{kind} without metadata.name"));
        }
        match kind.as_str() {
            "ClusterNetworkPolicy" => self.cluster_policy(file, &name, value),
            "Namespace" => match serde_norway::from_value(value) {
                Err(e) => self.unreadable(file, document, format!("namespace {name}: {e}")),
                Ok(ns) => match Namespace::from_api(&ns) {
                    Err(e) => self.model_errors(file, vec![e]),
                    Ok(ns) => {
                        if self.first_time(file, "namespace", ns.name.clone()) {
                            self.done.snapshot.upsert_namespace(ns);
                        }
                    }
                },
            },
            "Pod" => match serde_norway::from_value(value) {
                Err(e) => self.unreadable(file, document, format!("pod {namespace}/{name}: {e}")),
                Ok(pod) => {
                    let (pod, errors) = Pod::from_api(&pod);
                    self.model_errors(file, errors);
                    if self.first_time(file, "pod", pod.key.to_string()) {
                        self.done.snapshot.upsert_pod(pod);
                    }
                }
            },
            _ => {
                // extensions/v1beta1 NetworkPolicy has the same fields as networking.k8s.io/v1.
                if let Value::Mapping(m) = &mut value {
                    m.insert("apiVersion".into(), POLICY_API.into());
                }
                let key = ObjectKey::new(namespace, name);
                let (policy, errors) = match serde_norway::from_value(value) {
                    Ok(np) => Policy::from_api(&np),
                    // We know which policy this is but not what it says: fail closed.
                    Err(e) => (
                        Policy::fail_closed(key.clone()),
                        vec![ModelError {
                            kind: "networkpolicy",
                            object: key.to_string(),
                            field: "spec".into(),
                            problem: Problem::Malformed(e.to_string()),
                        }],
                    ),
                };
                self.model_errors(file, errors);
                if self.first_time(file, "networkpolicy", policy.key.to_string()) {
                    self.done.snapshot.upsert_policy(policy);
                }
            }
        }
    }
}

impl Loader {
    fn cluster_policy(&mut self, file: &str, name: &str, value: Value) {
        let (policy, errors) = match serde_norway::from_value::<ClusterNetworkPolicyApi>(value) {
            Ok(api) => ClusterPolicy::from_api(&api),
            Err(e) => ClusterPolicy::from_malformed(name, e.to_string()),
        };
        self.model_errors(file, errors);
        if self.first_time(file, "clusternetworkpolicy", policy.name.clone()) {
            self.done
                .snapshot
                .cluster_policies
                .insert(policy.name.clone(), policy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, PodKey};

    #[test]
    fn several_documents_and_kinds_load_from_one_file() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: n1
  containers: [{name: c, image: i, ports: [{containerPort: 80, name: serve-80-tcp}]}]
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
";
        let loaded = load([("world.yaml", text)]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.skipped, ["world.yaml: apps/v1 Deployment d"]);
        let snap = &loaded.snapshot;
        assert_eq!(snap.namespaces["x"].labels["team"], "a");
        assert_eq!(
            snap.namespaces["x"].labels["kubernetes.io/metadata.name"],
            "x"
        );
        let pod = &snap.pods[&PodKey::new("x", "a")];
        assert_eq!(pod.ips.len(), 2);
        assert_eq!(pod.node.as_deref(), Some("n1"));
        assert_eq!(
            pod.named_port("serve-80-tcp", crate::Protocol::Tcp),
            Some(80)
        );
    }

    #[test]
    fn extensions_v1beta1_policy_loads_like_networking_v1() {
        let body = "
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: 6379}]
";
        let new = load([(
            "a.yaml",
            &*format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy{body}"),
        )]);
        let old = load([(
            "b.yaml",
            &*format!("apiVersion: extensions/v1beta1\nkind: NetworkPolicy{body}"),
        )]);
        assert!(new.errors.is_empty() && old.errors.is_empty());
        assert_eq!(new.snapshot, old.snapshot);
        assert_eq!(new.snapshot.policies.len(), 1);
    }

    #[test]
    fn broken_policy_is_reported_and_kept_as_a_closed_stand_in() {
        let text = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.9.0.0/25]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
";
        let loaded = load([("p.yaml", text)]);
        assert!(!loaded.has_fatal_errors());
        let shown: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            ["p.yaml: networkpolicy x/bad: spec.ingress[0].from[0].ipBlock.except[0]: 10.9.0.0/25 is not inside cidr 10.0.0.0/24"]
        );
        let bad = &loaded.snapshot.policies[&ObjectKey::new("x", "bad")];
        assert!(bad.broken && bad.isolates(Direction::Ingress) && bad.ingress.is_empty());
        let good = &loaded.snapshot.policies[&ObjectKey::new("x", "good")];
        assert!(!good.broken && good.ingress.len() == 1);
    }

    #[test]
    fn policy_of_the_wrong_shape_fails_closed_for_its_whole_namespace() {
        let text = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: odd, namespace: x}
spec:
  ingress: {from: nope}
";
        let loaded = load([("p.yaml", text)]);
        assert_eq!(loaded.errors.len(), 1);
        assert!(!loaded.has_fatal_errors());
        let p = &loaded.snapshot.policies[&ObjectKey::new("x", "odd")];
        assert!(
            p.broken && p.isolates_ingress && p.isolates_egress && p.pod_selector.is_everything()
        );
    }

    #[test]
    fn unparsable_yaml_and_nameless_objects_are_fatal() {
        let loaded = load([
            ("a.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n"),
            (
                "b.yaml",
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {}\n",
            ),
            ("c.yaml", "just: a map\n"),
        ]);
        assert!(loaded.has_fatal_errors());
        let files: Vec<String> = loaded
            .errors
            .iter()
            .map(|e| e.to_string().split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(files, ["a.yaml", "b.yaml", "c.yaml"]);
    }

    #[test]
    fn duplicate_objects_keep_the_first_and_say_so() {
        let pod = |ip: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x}}\nstatus: {{podIP: {ip}}}\n")
        };
        let (one, two) = (pod("10.0.0.1"), pod("10.0.0.2"));
        let loaded = load([("1.yaml", one.as_str()), ("2.yaml", two.as_str())]);
        assert_eq!(loaded.errors.len(), 1);
        assert_eq!(
            loaded.errors[0].to_string(),
            "2.yaml: pod x/a is also defined in 1.yaml, which is kept"
        );
        assert_eq!(
            loaded.snapshot.pods[&PodKey::new("x", "a")].ips,
            vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn lists_are_unpacked_and_json_is_accepted() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "y"}}
        ]}"#;
        let loaded = load([("l.json", text)]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert!(loaded.snapshot.namespaces.contains_key("y"));
        assert!(loaded.snapshot.pods.contains_key(&PodKey::new("y", "b")));
    }
}
