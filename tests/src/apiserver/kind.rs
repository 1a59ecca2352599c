//! The kinds the test API server stores, with the names the API uses for them: group,
//! versions, plural resource name, list kind, scope and the field selectors the real server
//! supports.
//!
//! A built-in kind is served at fixed versions. A custom kind (ClusterNetworkPolicy) is
//! served only while its CustomResourceDefinition exists, at the versions that CRD serves
//! (`crd.rs`); a request resolves to a [`Gvk`], which names the version its answer is in.

use serde_json::{json, Value};

use super::crd;

/// A kind of object the server serves through list and watch: the ones the daemon reads,
/// the ones an install applies (for `kubectl apply` and the rig's kubelet stand-in), and
/// CustomResourceDefinitions with the one custom kind this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    NetworkPolicy,
    Node,
    ServiceAccount,
    Secret,
    ConfigMap,
    ResourceQuota,
    DaemonSet,
    ClusterRole,
    ClusterRoleBinding,
    CustomResourceDefinition,
    ClusterNetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::Node,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::ResourceQuota,
        Kind::DaemonSet,
        Kind::ClusterRole,
        Kind::ClusterRoleBinding,
        Kind::CustomResourceDefinition,
        Kind::ClusterNetworkPolicy,
    ];

    /// `kind` as it appears in objects.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Node => "Node",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::ResourceQuota => "ResourceQuota",
            Kind::DaemonSet => "DaemonSet",
            Kind::ClusterRole => "ClusterRole",
            Kind::ClusterRoleBinding => "ClusterRoleBinding",
            Kind::CustomResourceDefinition => "CustomResourceDefinition",
            Kind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }

    /// API group; "" is the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io",
            Kind::DaemonSet => "apps",
            Kind::ClusterRole | Kind::ClusterRoleBinding => "rbac.authorization.k8s.io",
            Kind::CustomResourceDefinition => "apiextensions.k8s.io",
            Kind::ClusterNetworkPolicy => "policy.networking.k8s.io",
            _ => "",
        }
    }

    /// The versions a built-in kind is always served at, the preferred one first; none for a
    /// custom kind, whose CRD lists them.
    pub fn builtin_versions(self) -> &'static [&'static str] {
        match self.crd() {
            None => &["v1"],
            Some(_) => &[],
        }
    }

    /// The name of the CustomResourceDefinition a custom kind is served by (`plural.group`,
    /// as the API server requires); None for a built-in kind.
    pub fn crd(self) -> Option<String> {
        match self {
            Kind::ClusterNetworkPolicy => Some(format!("{}.{}", self.plural(), self.group())),
            _ => None,
        }
    }

    /// The custom kind the CRD named `crd` serves, if this server knows it.
    pub fn defined_by(crd: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.crd().is_some_and(|name| name == crd))
    }

    /// This kind at `version`.
    pub fn at(self, version: &str) -> Gvk {
        Gvk {
            kind: self,
            version: version.to_string(),
        }
    }

    /// The resource name in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Node => "nodes",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::ResourceQuota => "resourcequotas",
            Kind::DaemonSet => "daemonsets",
            Kind::ClusterRole => "clusterroles",
            Kind::ClusterRoleBinding => "clusterrolebindings",
            Kind::CustomResourceDefinition => "customresourcedefinitions",
            Kind::ClusterNetworkPolicy => "clusternetworkpolicies",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Namespace
                | Kind::Node
                | Kind::ClusterRole
                | Kind::ClusterRoleBinding
                | Kind::CustomResourceDefinition
                | Kind::ClusterNetworkPolicy
        )
    }

    /// Field selectors the real API server accepts for this kind (every kind has the metadata
    /// ones; pods and namespaces register a few more).
    pub fn field_labels(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            Kind::Namespace => &["metadata.name", "status.phase"],
            Kind::Node => &["metadata.name", "spec.unschedulable"],
            Kind::Secret => &["metadata.name", "metadata.namespace", "type"],
            _ => &["metadata.name", "metadata.namespace"],
        }
    }

    /// The kind served at `group`/`plural`, if any.
    pub fn from_resource(group: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural)
    }

    /// The kind an object declares with `apiVersion` and `kind`. A custom kind is found at
    /// any version: whether its CRD serves that version is the store's to check.
    pub fn of_object(obj: &Value) -> Option<Kind> {
        let api_version = obj.get("apiVersion")?.as_str()?;
        Kind::of_type(api_version, obj.get("kind")?.as_str()?)
    }

    /// The kind named by an `apiVersion` and a `kind`, as in an object or a Rust type.
    pub fn of_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = split_api_version(api_version);
        Kind::ALL.into_iter().find(|k| {
            k.group() == group
                && k.name() == kind
                && (k.crd().is_some() || k.builtin_versions().contains(&version))
        })
    }

    /// Fill in the defaults the real API server gives fields a client left out, where a
    /// client depends on them (`kubectl rollout status` refuses a DaemonSet without a
    /// RollingUpdate strategy, and the server defaults to one).
    pub fn default_fields(self, obj: &mut Value) {
        if self == Kind::CustomResourceDefinition {
            crd::default_status(obj);
        }
        if self == Kind::DaemonSet {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("updateStrategy").or_insert_with(|| {
                    serde_json::json!({"type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
                });
                spec.entry("revisionHistoryLimit")
                    .or_insert_with(|| serde_json::json!(10));
            }
        }
    }

    /// Check that `obj` is a well-formed object of this kind by reading it as the k8s-openapi
    /// type, so a typo in a test manifest fails at the control call rather than in the client.
    /// A custom object is checked as far as the server knows it without its schema: an object
    /// with object metadata; its spec is the client's (tests send fail-closed fields).
    pub fn validate(self, obj: &Value) -> Result<(), String> {
        use k8s_openapi::api::{
            apps::v1 as apps, core::v1, networking::v1 as net, rbac::v1 as rbac,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        fn check<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<(), serde_json::Error> {
            T::deserialize(obj).map(drop)
        }
        let result = match self {
            Kind::Pod => check::<v1::Pod>(obj),
            Kind::Namespace => check::<v1::Namespace>(obj),
            Kind::NetworkPolicy => check::<net::NetworkPolicy>(obj),
            Kind::Node => check::<v1::Node>(obj),
            Kind::ServiceAccount => check::<v1::ServiceAccount>(obj),
            Kind::Secret => check::<v1::Secret>(obj),
            Kind::ConfigMap => check::<v1::ConfigMap>(obj),
            Kind::ResourceQuota => check::<v1::ResourceQuota>(obj),
            Kind::DaemonSet => check::<apps::DaemonSet>(obj),
            Kind::ClusterRole => check::<rbac::ClusterRole>(obj),
            Kind::ClusterRoleBinding => check::<rbac::ClusterRoleBinding>(obj),
            Kind::CustomResourceDefinition => {
                check::<ext::CustomResourceDefinition>(obj).map_err(|e| e.to_string())?;
                return crd::validate(obj);
            }
            Kind::ClusterNetworkPolicy => match obj.get("metadata") {
                Some(meta) => check::<ObjectMeta>(meta),
                None => Ok(()),
            },
        };
        result.map_err(|e| format!("not a valid {}: {e}", self.name()))
    }
}

/// A kind at one version: what a request URL names, and the `apiVersion` the objects of its
/// answer carry (a custom object is stored once and served at every version its CRD serves,
/// as through a no-op conversion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gvk {
    pub kind: Kind,
    pub version: String,
}

impl Gvk {
    /// `apiVersion` as it appears in objects: `v1`, `networking.k8s.io/v1`, …
    pub fn api_version(&self) -> String {
        match self.kind.group() {
            "" => self.version.clone(),
            group => format!("{group}/{}", self.version),
        }
    }

    /// `obj` as served at this version, with its `apiVersion` and `kind` (objects in watch
    /// events and single-object answers carry them; built-in list items do not).
    pub fn stamp(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(self.api_version());
        obj["kind"] = json!(self.kind.name());
        obj
    }
}

/// `("networking.k8s.io", "v1")` from `networking.k8s.io/v1`, `("", "v1")` from `v1`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_resource_and_by_object() {
        assert_eq!(
            Kind::from_resource("networking.k8s.io", "networkpolicies"),
            Some(Kind::NetworkPolicy)
        );
        assert_eq!(Kind::from_resource("", "networkpolicies"), None);
        let ns = json!({"apiVersion": "v1", "kind": "Namespace"});
        assert_eq!(Kind::of_object(&ns), Some(Kind::Namespace));
        let old = json!({"apiVersion": "networking.k8s.io/v1beta1", "kind": "NetworkPolicy"});
        assert_eq!(Kind::of_object(&old), None);
    }

    #[test]
    fn a_custom_kind_is_named_by_its_crd_and_found_at_any_version() {
        let crd = Kind::ClusterNetworkPolicy.crd().unwrap();
        assert_eq!(crd, "clusternetworkpolicies.policy.networking.k8s.io");
        assert_eq!(Kind::defined_by(&crd), Some(Kind::ClusterNetworkPolicy));
        assert_eq!(Kind::defined_by("widgets.example.com"), None);
        let cnp = json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
                         "kind": "ClusterNetworkPolicy"});
        assert_eq!(Kind::of_object(&cnp), Some(Kind::ClusterNetworkPolicy));
        let at = Kind::ClusterNetworkPolicy.at("v1alpha2");
        assert_eq!(at.stamp(json!({}))["apiVersion"], cnp["apiVersion"]);
        assert_eq!(Kind::Pod.at("v1").api_version(), "v1");
    }

    #[test]
    fn a_custom_object_needs_no_schema_but_object_metadata() {
        let cnp = |meta: Value| {
            json!({"apiVersion": "policy.networking.k8s.io/v1beta1",
                   "kind": "ClusterNetworkPolicy", "metadata": meta,
                   "spec": {"tier": "Nonsense", "subject": {"future": {}}}})
        };
        let kind = Kind::ClusterNetworkPolicy;
        assert_eq!(kind.validate(&cnp(json!({"name": "a"}))), Ok(()));
        assert!(kind.validate(&cnp(json!({"labels": "x"}))).is_err());
    }
}
