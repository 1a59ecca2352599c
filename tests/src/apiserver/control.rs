//! The control interface to the world: tests create, change and delete objects directly,
//! typed (k8s-openapi types) or as YAML streams, and the store assigns versions and uids as
//! etcd does. Watches see these changes as they see a client's writes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::lock;
use super::store::{self, WriteMode};
use super::{ApiError, ApiServer, Kind};

impl ApiServer {
    /// Create an object of a k8s-openapi type the server serves (`Pod`, `NetworkPolicy`,
    /// `CustomResourceDefinition`, …); returns it as stored, with uid and resourceVersion. A namespaced object without a namespace goes to `default`.
    pub fn create<K: TypedObject>(&self, obj: &K) -> Result<K, ApiError> {
        self.write_typed(obj, WriteMode::Create)
    }

    /// Replace an existing object. A resourceVersion on `obj` must be the current one
    /// (409 Conflict otherwise); without one the update is unconditional.
    pub fn update<K: TypedObject>(&self, obj: &K) -> Result<K, ApiError> {
        self.write_typed(obj, WriteMode::Update)
    }

    /// Create or replace, whatever the resourceVersion.
    pub fn apply<K: TypedObject>(&self, obj: &K) -> Result<K, ApiError> {
        self.write_typed(obj, WriteMode::Apply)
    }

    /// Delete; `namespace` is ignored for Namespaces. Returns the object's last state.
    pub fn delete<K: TypedObject>(&self, namespace: &str, name: &str) -> Result<K, ApiError> {
        let obj = lock(&self.shared.store).delete(kind_of::<K>()?, namespace, name)?;
        from_value(obj)
    }

    /// The object as stored now.
    pub fn get<K: TypedObject>(&self, namespace: &str, name: &str) -> Option<K> {
        let obj = lock(&self.shared.store).get(kind_of::<K>().ok()?, namespace, name)?;
        from_value(obj).ok()
    }

    /// Set an object's `status` as its controller does through the status subresource: the
    /// rest of the object stays as stored, whatever a client wrote meanwhile.
    pub fn set_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let mut store = lock(&self.shared.store);
        let mut obj = store
            .get(kind, namespace, name)
            .ok_or_else(|| ApiError::not_found(kind.plural(), kind.group(), name))?;
        obj["status"] = status;
        store.write(obj, WriteMode::Update)
    }

    /// Every object of `kind` as stored now, in namespace/name order, as JSON.
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        lock(&self.shared.store).objects(kind)
    }

    /// Create every object in a YAML stream (documents separated by `---`); stops at the
    /// first error. A ClusterNetworkPolicy needs its CRD first (404 without it), earlier in
    /// the stream or before it.
    pub fn create_yaml(&self, yaml: &str) -> Result<Vec<Value>, ApiError> {
        self.write_yaml(yaml, WriteMode::Create)
    }

    /// Update every object in a YAML stream.
    pub fn update_yaml(&self, yaml: &str) -> Result<Vec<Value>, ApiError> {
        self.write_yaml(yaml, WriteMode::Update)
    }

    /// Create or replace every object in a YAML stream.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, ApiError> {
        self.write_yaml(yaml, WriteMode::Apply)
    }

    /// [`apply_yaml`](Self::apply_yaml) of many documents (a world of thousands of pods), a
    /// stream of 500 at a time: a stream is parsed whole before its first object is written.
    pub fn apply_documents<S: AsRef<str>>(&self, docs: &[S]) -> Result<(), ApiError> {
        for chunk in docs.chunks(500) {
            self.apply_yaml(&crate::manifests::documents(chunk))?;
        }
        Ok(())
    }

    /// Delete every object a YAML stream names (by kind, namespace and name).
    pub fn delete_yaml(&self, yaml: &str) -> Result<Vec<Value>, ApiError> {
        let mut deleted = Vec::new();
        for doc in yaml_documents(yaml)? {
            let kind =
                Kind::of_object(&doc).ok_or_else(|| ApiError::bad_request("unsupported kind"))?;
            let ns = store::meta_str(&doc, "namespace");
            let ns = if ns.is_empty() { "default" } else { ns };
            deleted.push(lock(&self.shared.store).delete(
                kind,
                ns,
                store::meta_str(&doc, "name"),
            )?);
        }
        Ok(deleted)
    }

    fn write_typed<K: TypedObject>(&self, obj: &K, mode: WriteMode) -> Result<K, ApiError> {
        kind_of::<K>()?;
        let value = serde_json::to_value(obj).map_err(|e| ApiError::bad_request(e.to_string()))?;
        from_value(lock(&self.shared.store).write(value, mode)?)
    }

    fn write_yaml(&self, yaml: &str, mode: WriteMode) -> Result<Vec<Value>, ApiError> {
        let mut written = Vec::new();
        for doc in yaml_documents(yaml)? {
            written.push(lock(&self.shared.store).write(doc, mode)?);
        }
        Ok(written)
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }
}

/// A k8s-openapi object type the control interface takes.
pub trait TypedObject: k8s_openapi::Resource + Serialize + DeserializeOwned {}
impl<K: k8s_openapi::Resource + Serialize + DeserializeOwned> TypedObject for K {}

fn kind_of<K: TypedObject>() -> Result<Kind, ApiError> {
    Kind::of_type(K::API_VERSION, K::KIND).ok_or_else(|| {
        ApiError::bad_request(format!(
            "the test API server does not serve {}/{}",
            K::API_VERSION,
            K::KIND
        ))
    })
}

fn from_value<K: DeserializeOwned>(obj: Value) -> Result<K, ApiError> {
    serde_json::from_value(obj).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The documents of a YAML stream as JSON, skipping empty ones.
fn yaml_documents(yaml: &str) -> Result<Vec<Value>, ApiError> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)
            .map_err(|e| ApiError::bad_request(format!("reading YAML: {e}")))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}
