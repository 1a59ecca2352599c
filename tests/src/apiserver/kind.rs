//! The kinds the test API server stores, with the names the API uses for them: group, version,
//! plural resource name, list kind, scope and the field selectors the real server supports.

use serde_json::Value;

/// A kind of object the server serves through list and watch: the ones the daemon reads,
/// and the ones an install applies (for `kubectl apply` and the rig's kubelet stand-in).
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
}

impl Kind {
    pub const ALL: [Kind; 11] = [
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
        }
    }

    /// API group; "" is the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io",
            Kind::DaemonSet => "apps",
            Kind::ClusterRole | Kind::ClusterRoleBinding => "rbac.authorization.k8s.io",
            _ => "",
        }
    }

    /// `apiVersion` as it appears in objects (every kind here is served at `v1`).
    pub fn api_version(self) -> String {
        match self.group() {
            "" => "v1".to_string(),
            group => format!("{group}/v1"),
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
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Namespace | Kind::Node | Kind::ClusterRole | Kind::ClusterRoleBinding
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

    /// The kind an object declares with `apiVersion` and `kind`.
    pub fn of_object(obj: &Value) -> Option<Kind> {
        let api_version = obj.get("apiVersion")?.as_str()?;
        let kind = obj.get("kind")?.as_str()?;
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// Fill in the defaults the real API server gives fields a client left out, where a
    /// client depends on them (`kubectl rollout status` refuses a DaemonSet without a
    /// RollingUpdate strategy, and the server defaults to one).
    pub fn default_fields(self, obj: &mut Value) {
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
    pub fn validate(self, obj: &Value) -> Result<(), String> {
        use k8s_openapi::api::{
            apps::v1 as apps, core::v1, networking::v1 as net, rbac::v1 as rbac,
        };
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
        };
        result.map_err(|e| format!("not a valid {}: {e}", self.name()))
    }
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
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace"});
        assert_eq!(Kind::of_object(&ns), Some(Kind::Namespace));
    }
}
