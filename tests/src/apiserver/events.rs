//! Kubernetes Events posted by the client: `core/v1` (`/api/v1/namespaces/{ns}/events`) and
//! `events.k8s.io/v1` (`/apis/events.k8s.io/v1/namespaces/{ns}/events`), kept in the order they
//! arrived so a test can check what the daemon reported and on which object.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use super::http::{json_response, lock, method_not_allowed, Body, Shared};
use super::route::ApiRequest;
use super::status::ApiError;
use super::store::meta_str;

/// One Event as created or patched by the client, after the server filled in its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedEvent {
    /// `v1` or `events.k8s.io/v1`.
    pub api_version: String,
    /// `create` for a POST, `patch` for a merge patch of an earlier one (kube-rs's recorder
    /// patches an event it sends again, to count the series).
    pub verb: String,
    pub namespace: String,
    /// The whole Event as stored.
    pub object: Value,
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubject {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl PostedEvent {
    pub fn name(&self) -> &str {
        self.str_at("/metadata/name")
    }

    /// `reason`, the machine-readable cause (e.g. `PolicyCompileFailed`).
    pub fn reason(&self) -> &str {
        self.str_at("/reason")
    }

    /// `Normal` or `Warning`.
    pub fn event_type(&self) -> &str {
        self.str_at("/type")
    }

    /// The human-readable text: `note` in events.k8s.io/v1, `message` in core/v1.
    pub fn message(&self) -> &str {
        let note = self.str_at("/note");
        if note.is_empty() {
            self.str_at("/message")
        } else {
            note
        }
    }

    /// The object the Event is about: `regarding` in events.k8s.io/v1, `involvedObject` in
    /// core/v1.
    pub fn subject(&self) -> EventSubject {
        let field = if self.api_version == "v1" {
            "involvedObject"
        } else {
            "regarding"
        };
        let r = &self.object[field];
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        EventSubject {
            api_version: s("apiVersion"),
            kind: s("kind"),
            namespace: s("namespace"),
            name: s("name"),
        }
    }

    fn str_at(&self, pointer: &str) -> &str {
        self.object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// RFC 7386 JSON merge patch, what `Patch::Merge` sends.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (_, Some(p)) => {
            *target = json!({});
            merge_patch(target, &Value::Object(p.clone()));
        }
        _ => *target = patch.clone(),
    }
}

/// Create, patch or list Events; they are recorded, not watched.
pub(super) fn event(
    shared: &Shared,
    r: &ApiRequest,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    let api_version = if r.group.is_empty() {
        "v1".to_string()
    } else {
        format!("{}/v1", r.group)
    };
    let Some(namespace) = r.namespace.clone() else {
        return match r.verb.as_str() {
            "list" => Ok(event_list(shared, &api_version, None)),
            _ => Err(method_not_allowed()),
        };
    };
    let parse = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("decoding Event: {e}")))
    };
    let mut events = lock(&shared.events);
    let latest = |events: &[PostedEvent], name: &str| {
        events
            .iter()
            .rev()
            .find(|e| e.api_version == api_version && e.namespace == namespace && e.name() == name)
            .map(|e| e.object.clone())
    };
    let (code, object) = match (r.verb.as_str(), &r.name) {
        ("create", None) => {
            let mut obj = parse()?;
            let valid = if r.group.is_empty() {
                serde_json::from_value::<k8s_openapi::api::core::v1::Event>(obj.clone()).map(drop)
            } else {
                serde_json::from_value::<k8s_openapi::api::events::v1::Event>(obj.clone()).map(drop)
            };
            valid.map_err(|e| ApiError::bad_request(format!("decoding Event: {e}")))?;
            let ns = meta_str(&obj, "namespace");
            if !ns.is_empty() && ns != namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if !obj.get("metadata").is_some_and(Value::is_object) {
                obj["metadata"] = json!({});
            }
            if meta_str(&obj, "name").is_empty() {
                let prefix = meta_str(&obj, "generateName").to_string();
                obj["metadata"]["name"] = json!(format!("{prefix}{:05x}", events.len() + 1));
            }
            let name = meta_str(&obj, "name").to_string();
            if latest(&events, &name).is_some() {
                return Err(ApiError::already_exists("events", &r.group, &name));
            }
            obj["metadata"]["namespace"] = json!(namespace);
            obj["apiVersion"] = json!(api_version);
            obj["kind"] = json!("Event");
            (201, obj)
        }
        ("patch", Some(name)) => {
            let mut obj = latest(&events, name)
                .ok_or_else(|| ApiError::not_found("events", &r.group, name))?;
            merge_patch(&mut obj, &parse()?);
            (200, obj)
        }
        ("get", Some(name)) => {
            let obj = latest(&events, name)
                .ok_or_else(|| ApiError::not_found("events", &r.group, name))?;
            return Ok(json_response(200, &obj));
        }
        ("list", None) => {
            drop(events);
            return Ok(event_list(shared, &api_version, Some(&namespace)));
        }
        _ => return Err(method_not_allowed()),
    };
    let mut object = object;
    // Events live in etcd too: each write takes a version from the same counter.
    let rv = lock(&shared.store).bump();
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    if object["metadata"].get("uid").is_none() {
        object["metadata"]["uid"] = json!(format!("00000000-0000-4000-9000-{rv:012x}"));
    }
    events.push(PostedEvent {
        api_version,
        verb: r.verb.clone(),
        namespace,
        object: object.clone(),
    });
    Ok(json_response(code, &object))
}

fn event_list(shared: &Shared, api_version: &str, namespace: Option<&str>) -> Response<Body> {
    let mut latest: BTreeMap<(String, String), Value> = BTreeMap::new();
    for e in lock(&shared.events).iter() {
        if e.api_version == api_version && namespace.is_none_or(|ns| ns == e.namespace) {
            latest.insert(
                (e.namespace.clone(), e.name().to_string()),
                e.object.clone(),
            );
        }
    }
    let rv = lock(&shared.store).resource_version();
    json_response(
        200,
        &json!({"kind": "EventList", "apiVersion": api_version,
                "metadata": {"resourceVersion": rv.to_string()},
                "items": latest.into_values().collect::<Vec<_>>()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_replaces_removes_and_recurses() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1], "e": 1});
        merge_patch(
            &mut t,
            &json!({"a": {"b": 5, "c": null}, "d": [2], "f": {"g": 1}}),
        );
        assert_eq!(t, json!({"a": {"b": 5}, "d": [2], "e": 1, "f": {"g": 1}}));
    }

    #[test]
    fn subject_and_message_read_both_event_apis() {
        let core = PostedEvent {
            api_version: "v1".into(),
            verb: "create".into(),
            namespace: "shop".into(),
            object: json!({"involvedObject": {"kind": "NetworkPolicy", "name": "p"}, "message": "bad"}),
        };
        assert_eq!(core.subject().kind, "NetworkPolicy");
        assert_eq!(core.message(), "bad");
        let new = PostedEvent {
            api_version: "events.k8s.io/v1".into(),
            object: json!({"regarding": {"kind": "NetworkPolicy", "name": "p"}, "note": "bad"}),
            ..core
        };
        assert_eq!(new.subject().name, "p");
        assert_eq!(new.message(), "bad");
    }
}
