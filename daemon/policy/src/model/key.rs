//! Identities of namespaced objects: `namespace/name`, for pods and policies alike.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::error::{Errors, Problem};

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

    /// The key of an API object of `kind` (without a namespace it lands in `default`), and the
    /// collector of its conversion errors, which already holds a missing name.
    pub(crate) fn of_api(meta: &ObjectMeta, kind: &'static str) -> (Self, Errors) {
        let namespace = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        let key = ObjectKey::new(namespace, meta.name.clone().unwrap_or_default());
        let mut errs = Errors::new(kind, key.to_string());
        if key.name.is_empty() {
            errs.push("metadata.name", Problem::Missing);
        }
        (key, errs)
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
