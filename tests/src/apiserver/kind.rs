//! The kinds the test API server stores, with the names the API uses for them: group, version,
//! plural resource name, list kind, scope and the field selectors the real server supports.

use serde_json::Value;

/// A kind of object the server serves through list and watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    NetworkPolicy,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Pod, Kind::Namespace, Kind::NetworkPolicy, Kind::Node];

    /// `kind` as it appears in objects.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Node => "Node",
        }
    }

    /// API group; "" is the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Namespace | Kind::Node => "",
            Kind::NetworkPolicy => "networking.k8s.io",
        }
    }

    /// `apiVersion` as it appears in objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Namespace | Kind::Node => "v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    /// The resource name in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Node => "nodes",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
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
            Kind::NetworkPolicy => &["metadata.name", "metadata.namespace"],
            Kind::Node => &["metadata.name", "spec.unschedulable"],
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

    /// Check that `obj` is a well-formed object of this kind by reading it as the k8s-openapi
    /// type, so a typo in a test manifest fails at the control call rather than in the client.
    pub fn validate(self, obj: &Value) -> Result<(), String> {
        use k8s_openapi::api::{core::v1, networking::v1 as net};
        let result = match self {
            Kind::Pod => serde_json::from_value::<v1::Pod>(obj.clone()).map(drop),
            Kind::Namespace => serde_json::from_value::<v1::Namespace>(obj.clone()).map(drop),
            Kind::NetworkPolicy => {
                serde_json::from_value::<net::NetworkPolicy>(obj.clone()).map(drop)
            }
            Kind::Node => serde_json::from_value::<v1::Node>(obj.clone()).map(drop),
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
