//! CustomResourceDefinitions and what they switch on: a custom kind is served while the CRD
//! named `plural.group` exists, at the versions it marks `served`, with the names it gives
//! (singular, short names) in discovery. Deleting the CRD deletes its objects (`store.rs`).
//!
//! The server knows no schema: a CRD's `openAPIV3Schema` is stored, not applied, and a
//! custom object is stored as sent (see [`Kind::validate`]).

use std::cmp::Reverse;

use serde_json::{json, Value};

use super::kind::{split_api_version, Kind};
use super::status::ApiError;
use super::store::{meta_str, now_rfc3339, Store};

/// What the stored CRD of a custom kind says about serving it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definition {
    /// The versions marked `served`, in Kubernetes' priority order: the preferred one first.
    pub versions: Vec<String>,
    /// The version marked `storage`: objects are kept at it, whatever version wrote them.
    pub storage: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

impl Definition {
    /// Read a CRD (already validated as one).
    pub fn of(crd: &Value) -> Definition {
        let spec = &crd["spec"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        let versions = spec["versions"].as_array().map_or(&[][..], Vec::as_slice);
        let named = |flag: &str| -> Vec<String> {
            versions
                .iter()
                .filter(|v| v[flag].as_bool() == Some(true))
                .filter_map(|v| v["name"].as_str())
                .map(str::to_string)
                .collect()
        };
        let mut served = named("served");
        served.sort_by_key(|v| priority(v));
        let names = &spec["names"];
        Definition {
            versions: served,
            storage: named("storage").into_iter().next().unwrap_or_default(),
            singular: names["singular"].as_str().unwrap_or_default().to_string(),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
        }
    }
}

/// The stored CRD of custom kind `kind`, read; None for a built-in kind or without a CRD.
pub fn definition(store: &Store, kind: Kind) -> Option<Definition> {
    let crd = store.get(Kind::CustomResourceDefinition, "", &kind.crd()?)?;
    Some(Definition::of(&crd))
}

/// The versions `kind` is served at now, the preferred one first.
pub fn served_versions(store: &Store, kind: Kind) -> Vec<String> {
    match kind.crd() {
        None => kind
            .builtin_versions()
            .iter()
            .map(|v| v.to_string())
            .collect(),
        Some(_) => definition(store, kind).map_or_else(Vec::new, |d| d.versions),
    }
}

/// Check that the CRD of a custom object serves the version it is written at, and set it to
/// the storage version, the one the object is kept at; a no-op for a built-in kind.
pub fn to_storage_version(store: &Store, kind: Kind, obj: &mut Value) -> Result<(), ApiError> {
    let Some(crd) = kind.crd() else {
        return Ok(());
    };
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (_, version) = split_api_version(api_version);
    let definition = definition(store, kind).filter(|d| d.versions.iter().any(|v| v == version));
    let Some(definition) = definition else {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "no {} in version {api_version:?}: no CustomResourceDefinition {crd} serves it",
                kind.name()
            ),
        ));
    };
    obj["apiVersion"] = json!(kind.at(&definition.storage).api_version());
    Ok(())
}

/// The 404 of a request for a resource that is not served (at that version), as the real
/// server words it.
pub fn not_served() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// The checks of the real server that a test manifest could get wrong: the name is
/// `plural.group`, and exactly one version is the storage version.
pub fn validate(crd: &Value) -> Result<(), String> {
    let spec = &crd["spec"];
    let want = format!(
        "{}.{}",
        spec["names"]["plural"].as_str().unwrap_or_default(),
        spec["group"].as_str().unwrap_or_default()
    );
    let name = meta_str(crd, "name");
    if name != want {
        return Err(format!(
            "CustomResourceDefinition {name:?} is invalid: metadata.name: must be \
             spec.names.plural+\".\"+spec.group ({want:?})"
        ));
    }
    let storage = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if storage != 1 {
        return Err(format!(
            "CustomResourceDefinition {name:?} is invalid: spec.versions: must have exactly \
             one version marked as storage version (has {storage})"
        ));
    }
    Ok(())
}

/// The status the API server's CRD controllers give a CRD at once: its names accepted and
/// Established (clients such as `kubectl wait --for condition=established` wait for it).
pub fn default_status(crd: &mut Value) {
    if crd
        .get("status")
        .is_some_and(|s| s.get("conditions").is_some())
    {
        return;
    }
    let now = now_rfc3339();
    let condition = |kind: &str, reason: &str| {
        json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason,
               "message": ""})
    };
    crd["status"] = json!({
        "conditions": [condition("NamesAccepted", "NoConflicts"),
                       condition("Established", "InitialNamesAccepted")],
        "acceptedNames": crd["spec"]["names"].clone(),
        "storedVersions": [Definition::of(crd).storage],
    });
}

/// Kubernetes' order of versions (`v1` > `v1beta2` > `v1beta1` > `v1alpha1` > anything else,
/// that alphabetically): a sort key, smallest first.
pub fn priority(version: &str) -> (u8, Reverse<u64>, Reverse<u64>, String) {
    let other = (3, Reverse(0), Reverse(0), version.to_string());
    let Some(rest) = version.strip_prefix('v') else {
        return other;
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (major, rest) = rest.split_at(digits);
    let Ok(major) = major.parse::<u64>() else {
        return other;
    };
    let (level, minor) = match rest {
        "" => (0, "0"),
        r => match (r.strip_prefix("beta"), r.strip_prefix("alpha")) {
            (Some(minor), _) => (1, minor),
            (_, Some(minor)) => (2, minor),
            _ => return other,
        },
    };
    match minor.parse::<u64>() {
        Ok(minor) => (level, Reverse(major), Reverse(minor), String::new()),
        Err(_) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::store::{Filter, WatchMsg, WriteMode};

    fn cnp_crd(versions: Value) -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "clusternetworkpolicies.policy.networking.k8s.io"},
               "spec": {"group": "policy.networking.k8s.io", "scope": "Cluster",
                        "names": {"kind": "ClusterNetworkPolicy", "plural": "clusternetworkpolicies",
                                  "singular": "clusternetworkpolicy", "shortNames": ["cnp"]},
                        "versions": versions}})
    }

    #[test]
    fn versions_sort_like_kubernetes_and_the_served_ones_count() {
        let mut v = [
            "v1alpha2",
            "foo",
            "v1",
            "v2beta1",
            "v1beta1",
            "v1alpha10",
            "v2",
        ];
        v.sort_by_key(|v| priority(v));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v2beta1",
                "v1beta1",
                "v1alpha10",
                "v1alpha2",
                "foo"
            ]
        );
        let crd = cnp_crd(json!([
            {"name": "v1alpha2", "served": true, "storage": false},
            {"name": "v1alpha1", "served": false, "storage": false},
            {"name": "v1beta1", "served": true, "storage": true}]));
        let d = Definition::of(&crd);
        assert_eq!(d.versions, ["v1beta1", "v1alpha2"]);
        assert_eq!(d.storage, "v1beta1");
        assert_eq!(d.short_names, ["cnp"]);
        assert_eq!(validate(&crd), Ok(()));
    }

    #[test]
    fn a_crd_is_named_plural_dot_group_with_one_storage_version() {
        let mut crd = cnp_crd(json!([{"name": "v1beta1", "served": true, "storage": true}]));
        crd["metadata"]["name"] = json!("cnps.policy.networking.k8s.io");
        assert!(validate(&crd).unwrap_err().contains("spec.names.plural"));
        let two = cnp_crd(json!([{"name": "v1beta1", "served": true, "storage": true},
                                 {"name": "v1alpha2", "served": true, "storage": true}]));
        assert!(validate(&two).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn a_new_crd_is_established_with_its_names() {
        let mut crd = cnp_crd(json!([{"name": "v1beta1", "served": true, "storage": true}]));
        default_status(&mut crd);
        let conditions = crd["status"]["conditions"].as_array().unwrap();
        assert!(conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"));
        assert_eq!(crd["status"]["acceptedNames"]["shortNames"], json!(["cnp"]));
        assert_eq!(crd["status"]["storedVersions"], json!(["v1beta1"]));
    }

    fn cnp(version: &str, name: &str, tier: &str) -> Value {
        json!({"apiVersion": format!("policy.networking.k8s.io/{version}"),
               "kind": "ClusterNetworkPolicy", "metadata": {"name": name},
               "spec": {"tier": tier, "priority": 10}})
    }

    fn served_crd() -> Value {
        cnp_crd(json!([{"name": "v1beta1", "served": true, "storage": true},
                       {"name": "v1alpha2", "served": true, "storage": false}]))
    }

    #[test]
    fn a_custom_object_is_kept_only_while_its_crd_serves_its_version() {
        let mut s = Store::new(100);
        let kind = Kind::ClusterNetworkPolicy;
        let refused = s.write(cnp("v1beta1", "a", "Admin"), WriteMode::Create);
        assert_eq!(refused.unwrap_err().code, 404);
        assert!(served_versions(&s, kind).is_empty());
        s.write(served_crd(), WriteMode::Create).unwrap();
        assert_eq!(served_versions(&s, kind), ["v1beta1", "v1alpha2"]);
        let stored = s
            .write(cnp("v1alpha2", "a", "Admin"), WriteMode::Create)
            .unwrap();
        assert_eq!(stored["apiVersion"], "policy.networking.k8s.io/v1beta1");
        let unserved = s.write(cnp("v1alpha1", "b", "Admin"), WriteMode::Create);
        assert_eq!(unserved.unwrap_err().code, 404);
        // The same object written at the other version is no change.
        let again = s
            .write(cnp("v1beta1", "a", "Admin"), WriteMode::Apply)
            .unwrap();
        assert_eq!(
            meta_str(&again, "resourceVersion"),
            meta_str(&stored, "resourceVersion")
        );
    }

    #[test]
    fn deleting_the_crd_deletes_its_objects_and_then_ends_their_watches() {
        let mut s = Store::new(100);
        let kind = Kind::ClusterNetworkPolicy;
        s.write(served_crd(), WriteMode::Create).unwrap();
        let mut rx = s
            .watch(kind.at("v1alpha2"), Filter::default(), None, false)
            .unwrap();
        s.write(cnp("v1beta1", "a", "Admin"), WriteMode::Create)
            .unwrap();
        let crd = kind.crd().unwrap();
        s.delete(Kind::CustomResourceDefinition, "", &crd).unwrap();
        let mut events = Vec::new();
        while let Some(msg) = rx.blocking_recv() {
            let WatchMsg::Line(line) = msg else {
                panic!("a watch of a deleted kind ends cleanly, it is not cut");
            };
            events.push(serde_json::from_slice::<Value>(&line).unwrap());
        }
        let types: Vec<&Value> = events.iter().map(|e| &e["type"]).collect();
        assert_eq!(types, ["ADDED", "DELETED"]);
        assert_eq!(
            events[1]["object"]["apiVersion"],
            "policy.networking.k8s.io/v1alpha2"
        );
        assert!(s.objects(kind).is_empty());
        assert!(served_versions(&s, kind).is_empty());
        assert_eq!(s.open_watches(), 0);
    }
}
