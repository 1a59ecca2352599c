//! `Status` objects: the body of every error the server returns, shaped like the real API
//! server's (kube-rs reads `code`, `reason` and `message` from them).

use serde_json::{json, Value};

/// An API error: what an HTTP call answers with a non-2xx status, and what a control call
/// returns when a test asks for something the real server would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code} {reason})")]
pub struct ApiError {
    /// HTTP status code, also `Status.code`.
    pub code: u16,
    /// `Status.reason`: `NotFound`, `AlreadyExists`, `Conflict`, `Expired`, `Forbidden`, …
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`, when the real server fills it in.
    pub details: Option<Box<Value>>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `pods "web" not found`, as the real server words it.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(details(resource, group, Some(name)))
    }

    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, group)),
        )
        .with_details(details(resource, group, Some(name)))
    }

    /// A too-old `resourceVersion`: what a watch reports in an `ERROR` event and a list answers
    /// with HTTP 410.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = (**details).clone();
        }
        status
    }
}

/// `networkpolicies.networking.k8s.io`: how the real server names a resource in messages.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// `Status.details` as the real server fills it: `kind` holds the resource name, not the kind.
pub fn details(resource: &str, group: &str, name: Option<&str>) -> Value {
    let mut d = json!({ "kind": resource });
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    if let Some(name) = name {
        d["name"] = json!(name);
    }
    d
}
