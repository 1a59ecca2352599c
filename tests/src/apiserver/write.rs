//! Writes over HTTP, as `kubectl apply`, `create`, `set image` and `delete` send them: create
//! (POST), update (PUT), patch (JSON merge patch and strategic merge patch) and delete. A write
//! to the main resource of a kind with a status keeps the stored status, as the real server's
//! status subresource does; the rig's controllers set status through the control interface.

use serde_json::{json, Map, Value};

use super::events::merge_patch;
use super::kind::{Gvk, Kind};
use super::protobuf;
use super::status::ApiError;
use super::store::{meta_str, Store, WriteMode};

/// The write `verb` asks of `gvk`; returns the HTTP code and the object as stored.
pub fn write(
    store: &mut Store,
    gvk: &Gvk,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let kind = gvk.kind;
    let parse = || -> Result<Value, ApiError> {
        if content_type.starts_with(protobuf::MEDIA_TYPE) {
            return protobuf::decode(body);
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("decoding {}: {e}", kind.name())))
    };
    let ns = namespace.unwrap_or("");
    match (verb, name) {
        ("create", None) => {
            let obj = with_namespace(parse()?, gvk, namespace)?;
            Ok((201, store.write(obj, WriteMode::Create)?))
        }
        ("update", Some(name)) => {
            let obj = with_namespace(parse()?, gvk, namespace)?;
            named(&obj, name)?;
            let old = store
                .get(kind, ns, name)
                .ok_or_else(|| ApiError::not_found(kind.plural(), kind.group(), name))?;
            let obj = keep_status(obj, &old);
            Ok((200, store.write(obj, WriteMode::Update)?))
        }
        ("patch", Some(name)) => {
            let old = store
                .get(kind, ns, name)
                .ok_or_else(|| ApiError::not_found(kind.plural(), kind.group(), name))?;
            let patch = parse()?;
            // Patched as the URL's version, as the real server converts it first.
            let mut obj = gvk.stamp(old.clone());
            match content_type.split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" => merge_patch(&mut obj, &patch),
                "application/strategic-merge-patch+json" => strategic_merge(&mut obj, &patch),
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"),
                    ))
                }
            }
            named(&obj, name)?;
            let obj = keep_status(obj, &old);
            Ok((200, store.write(obj, WriteMode::Update)?))
        }
        ("delete", Some(name)) => Ok((200, store.delete(kind, ns, name)?)),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The object with the namespace of its URL; a different one in the body is refused, and so
/// is another kind or version than the URL's.
fn with_namespace(mut obj: Value, gvk: &Gvk, namespace: Option<&str>) -> Result<Value, ApiError> {
    let api_version = gvk.api_version();
    if Kind::of_object(&obj) != Some(gvk.kind) || obj["apiVersion"] != api_version.as_str() {
        return Err(ApiError::bad_request(format!(
            "the body is not a {} ({api_version})",
            gvk.kind.name(),
        )));
    }
    if let Some(ns) = namespace {
        let declared = meta_str(&obj, "namespace");
        if !declared.is_empty() && declared != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["namespace"] = json!(ns);
    }
    Ok(obj)
}

fn named(obj: &Value, name: &str) -> Result<(), ApiError> {
    match meta_str(obj, "name") {
        n if n == name => Ok(()),
        n => Err(ApiError::bad_request(format!(
            "the name of the object ({n:?}) does not match the name on the URL ({name:?})"
        ))),
    }
}

/// Status is written through its subresource only.
fn keep_status(mut obj: Value, old: &Value) -> Value {
    if let Some(map) = obj.as_object_mut() {
        match old.get("status") {
            Some(status) => map.insert("status".to_string(), status.clone()),
            None => map.remove("status"),
        };
    }
    obj
}

/// The merge key of a list field, for the fields podwall's manifests and `kubectl set image`
/// patch (from the Kubernetes types' `patchMergeKey`); other lists are replaced whole.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    }
}

/// A strategic merge patch, as far as the patches kubectl sends for these kinds go: maps merge
/// (null deletes a key), lists with a merge key merge element by element (`$patch: delete`
/// removes one), other lists are replaced, and the ordering directives are dropped.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match (v, merge_key(k)) {
            (Value::Null, _) => {
                t.remove(k);
            }
            (Value::Array(items), Some(key)) => {
                let list = t.entry(k.clone()).or_insert_with(|| json!([]));
                merge_list(list, items, key);
            }
            (Value::Object(_), _) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(target: &mut Value, items: &[Value], key: &str) {
    if !target.is_array() {
        *target = json!([]);
    }
    let Some(list) = target.as_array_mut() else {
        return;
    };
    for item in items {
        let id = item.get(key);
        let at = id.and_then(|id| list.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (at, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item),
            (None, false) => list.push(item.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_image_merges_one_container_by_name() {
        let mut ds = json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "install-cni", "image": "a:1", "env": [{"name": "X", "value": "1"}]}],
            "containers": [{"name": "podwalld", "image": "a:1", "args": ["--x"]}],
            "tolerations": [{"operator": "Exists"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "podwalld"}],
            "containers": [{"name": "podwalld", "image": "a:2"}],
            "tolerations": [{"key": "k", "operator": "Exists"}]}}}});
        strategic_merge(&mut ds, &patch);
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"],
            json!([{"name": "podwalld", "image": "a:2", "args": ["--x"]}])
        );
        assert_eq!(spec["initContainers"][0]["image"], "a:1");
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "k", "operator": "Exists"}])
        );
        assert!(spec.get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn delete_directive_and_null_remove() {
        let mut obj = json!({"a": {"b": 1}, "volumes": [{"name": "x"}, {"name": "y"}]});
        strategic_merge(
            &mut obj,
            &json!({"a": {"b": null}, "volumes": [{"name": "x", "$patch": "delete"}]}),
        );
        assert_eq!(obj, json!({"a": {}, "volumes": [{"name": "y"}]}));
    }
}
