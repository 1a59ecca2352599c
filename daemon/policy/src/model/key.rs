//! Identities of namespaced objects: `namespace/name`, for pods and policies alike.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Namespace a manifest without `metadata.namespace` lands in, as with `kubectl apply`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

/// Identity of a pod.
pub type PodKey = ObjectKey;
/// Identity of a NetworkPolicy.
pub type PolicyKey = ObjectKey;

impl ObjectKey {
    /// A key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `namespace/name`; both parts must be non-empty.
    pub fn parse(text: &str) -> Option<Self> {
        let (ns, name) = text.split_once('/')?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(ObjectKey::new(ns, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
