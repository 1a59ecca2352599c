//! Kubernetes Events posted by the client: `core/v1` (`/api/v1/namespaces/{ns}/events`) and
//! `events.k8s.io/v1` (`/apis/events.k8s.io/v1/namespaces/{ns}/events`), kept in the order they
//! arrived so a test can check what the daemon reported and on which object.

use serde_json::{json, Value};

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
