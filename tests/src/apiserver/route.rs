//! From an HTTP request line to what the API server's authorizer sees: verb, API group,
//! resource, subresource, namespace and name. The same record goes into the request log, so a
//! test can compare the calls a client made with the rules of a ClusterRole.

use std::collections::BTreeMap;

/// One request as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection; for
    /// non-resource URLs the lowercase HTTP method.
    pub verb: String,
    /// API group, "" for the core group.
    pub group: String,
    pub version: String,
    /// Plural resource name; empty for non-resource URLs such as `/api` or `/version`.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Path and query as sent.
    pub uri: String,
    /// The HTTP status the server answered with (200 for a watch that started).
    pub status: u16,
}

impl ApiRequest {
    /// False for discovery and other non-resource URLs (`/api`, `/apis`, `/version`), which a
    /// ClusterRole grants through `nonResourceURLs` (every cluster grants them through
    /// `system:discovery`).
    pub fn is_resource(&self) -> bool {
        !self.resource.is_empty()
    }

    /// `resource` or `resource/subresource`, as written in a ClusterRole rule.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A resource collection or object.
    Resource {
        group: String,
        version: String,
        resource: String,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
    /// `/api`, `/apis`, `/version`, `/healthz`, …
    NonResource(String),
}

/// Split `/api/v1/namespaces/shop/pods/web` and friends.
pub fn parse_path(path: &str) -> Target {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Target::NonResource(path.to_string()),
    };
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let (namespace, resource, name, subresource) = match rest {
        // /namespaces/{ns}/{resource}[/{name}[/{sub}]] — but /namespaces/{name}/status and
        // /finalize are subresources of the namespace itself.
        ["namespaces", ns, resource, tail @ ..]
            if !matches!(*resource, "status" | "finalize") || !tail.is_empty() =>
        {
            (
                Some(ns.to_string()),
                *resource,
                owned(tail.first()),
                owned(tail.get(1)),
            )
        }
        [resource, tail @ ..] => (None, *resource, owned(tail.first()), owned(tail.get(1))),
        [] => return Target::NonResource(path.to_string()),
    };
    Target::Resource {
        group: group.to_string(),
        version: version.to_string(),
        resource: resource.to_string(),
        namespace,
        name,
        subresource,
    }
}

/// The RBAC verb of a resource request, as the API server's request-info resolver derives it.
pub fn verb(method: &str, has_name: bool, query: &BTreeMap<String, String>) -> String {
    let watch = query
        .get("watch")
        .is_some_and(|w| matches!(w.as_str(), "true" | "1"));
    match (method, has_name) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return other.to_lowercase(),
    }
    .to_string()
}

/// Decode a query string (`+` is a space, `%XX` escapes); empty pairs (kube-rs sends `?&watch=…`)
/// are skipped, and a repeated key keeps its first value.
pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode(k)).or_insert_with(|| decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(
        path: &str,
    ) -> (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        match parse_path(path) {
            Target::Resource {
                group,
                resource,
                namespace,
                name,
                subresource,
                ..
            } => (group, resource, namespace, name, subresource),
            Target::NonResource(p) => panic!("{p} is not a resource path"),
        }
    }

    #[test]
    fn paths_resolve_like_the_request_info_resolver() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            res("/api/v1/pods"),
            ("".into(), "pods".into(), None, None, None)
        );
        assert_eq!(
            res("/api/v1/namespaces/shop/pods/web/status"),
            ("".into(), "pods".into(), s("shop"), s("web"), s("status"))
        );
        assert_eq!(
            res("/api/v1/namespaces"),
            ("".into(), "namespaces".into(), None, None, None)
        );
        assert_eq!(
            res("/api/v1/namespaces/shop"),
            ("".into(), "namespaces".into(), None, s("shop"), None)
        );
        assert_eq!(
            res("/api/v1/namespaces/shop/status"),
            ("".into(), "namespaces".into(), None, s("shop"), s("status"))
        );
        assert_eq!(
            res("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies"),
            (
                "networking.k8s.io".into(),
                "networkpolicies".into(),
                s("shop"),
                None,
                None
            )
        );
        assert_eq!(parse_path("/apis"), Target::NonResource("/apis".into()));
        assert_eq!(parse_path("/api/v1"), Target::NonResource("/api/v1".into()));
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        let q = parse_query("&watch=true&timeoutSeconds=290");
        assert_eq!(verb("GET", false, &q), "watch");
        assert_eq!(verb("GET", false, &parse_query("watch=1")), "watch");
        assert_eq!(verb("GET", false, &parse_query("watch=false")), "list");
        assert_eq!(verb("GET", true, &BTreeMap::new()), "get");
        assert_eq!(verb("POST", false, &BTreeMap::new()), "create");
        assert_eq!(verb("DELETE", false, &BTreeMap::new()), "deletecollection");
    }

    #[test]
    fn query_values_are_decoded() {
        let q =
            parse_query("labelSelector=app+in+%28a%2Cb%29&fieldSelector=spec.nodeName%3Dn1&x=%zz");
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["fieldSelector"], "spec.nodeName=n1");
        assert_eq!(q["x"], "%zz");
    }
}
