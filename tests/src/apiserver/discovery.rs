//! Discovery (`/api`, `/apis`, `/apis/{group}[/{version}]`, `/version`) and the OpenAPI
//! document, generated from the kinds this server serves now.

use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use super::crd;
use super::http::{error, full, json_response, Body};
use super::kind::Kind;
use super::store::Store;

/// Discovery documents for the kinds served now (every verb on each, and Events), enough
/// for kube-rs's `Discovery`, kubectl's REST mapper and clients that check the server
/// version. A custom kind's group shows only while its CRD exists, at the versions it serves.
pub(super) fn discovery(path: &str, store: &Store) -> Response<Body> {
    let groups = groups(store);
    let body = match path.trim_end_matches('/') {
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "podwall-test",
            "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.0",
            "compiler": "gc", "platform": "linux/amd64"
        }),
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        "/api/v1" => json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
            "resources": resources(store, "", "v1")}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups.iter().map(Group::to_json).collect::<Vec<_>>()}),
        "/healthz" | "/livez" | "/readyz" => {
            return Response::new(full(Bytes::from_static(b"ok")));
        }
        // An OpenAPI v2 document without definitions (an empty protobuf message): kubectl
        // refuses to apply without one, and skips its client-side checks of a kind the
        // document does not define; the objects are still checked here, as typed objects.
        "/openapi/v2" => {
            return Response::builder()
                .status(200)
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                )
                .body(full(Bytes::new()))
                .expect("a response with a static header builds");
        }
        other => {
            let rest = other.strip_prefix("/apis/").unwrap_or_default();
            let (name, version) = rest.split_once('/').unwrap_or((rest, ""));
            let group = groups.iter().find(|g| g.name == name);
            match (group, version) {
                (Some(g), "") => {
                    let mut body = g.to_json();
                    body["kind"] = json!("APIGroup");
                    body["apiVersion"] = json!("v1");
                    body
                }
                (Some(g), v) if g.versions.iter().any(|gv| gv == v) => {
                    json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": format!("{name}/{v}"),
                        "resources": resources(store, name, v)})
                }
                _ => return error(&crd::not_served()),
            }
        }
    };
    json_response(200, &body)
}

/// A named API group and the versions it is served at, the preferred one first.
struct Group {
    name: &'static str,
    versions: Vec<String>,
}

impl Group {
    fn to_json(&self) -> Value {
        let gv = |v: &String| json!({"groupVersion": format!("{}/{v}", self.name), "version": v});
        let versions: Vec<Value> = self.versions.iter().map(gv).collect();
        json!({"name": self.name, "preferredVersion": versions.first(), "versions": versions})
    }
}

/// The named groups served now, in the order of [`Kind::ALL`], and `events.k8s.io`.
fn groups(store: &Store) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| !k.group().is_empty()) {
        let versions = crd::served_versions(store, kind);
        if versions.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|g| g.name == kind.group()) {
            Some(group) => group.versions.extend(versions),
            None => groups.push(Group {
                name: kind.group(),
                versions,
            }),
        }
    }
    for group in &mut groups {
        group.versions.sort_by_key(|v| crd::priority(v));
        group.versions.dedup();
    }
    groups.push(Group {
        name: "events.k8s.io",
        versions: vec!["v1".into()],
    });
    groups
}

/// The resources of `group` served at `version`: every verb on each kind, and Events in the
/// core and events groups. A custom kind's singular and short names come from its CRD.
fn resources(store: &Store, group: &str, version: &str) -> Vec<Value> {
    let all = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| {
        json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced,
               "kind": kind, "verbs": verbs, "shortNames": []})
    };
    let mut out: Vec<Value> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group)
        .filter(|k| crd::served_versions(store, *k).iter().any(|v| v == version))
        .map(|k| {
            let mut r = resource(k.plural(), k.name(), k.namespaced(), &all);
            match crd::definition(store, k) {
                Some(d) => {
                    r["singularName"] = json!(d.singular);
                    r["shortNames"] = json!(d.short_names);
                    r["categories"] = json!(d.categories);
                }
                None => r["shortNames"] = json!(short_names(k)),
            }
            r
        })
        .collect();
    if version == "v1" && matches!(group, "" | "events.k8s.io") {
        let events = ["create", "get", "list", "patch"];
        out.push(resource("events", "Event", true, &events));
    }
    out
}

/// The short names `kubectl get` knows built-in kinds by.
fn short_names(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::DaemonSet => &["ds"],
        Kind::Pod => &["po"],
        Kind::Namespace => &["ns"],
        Kind::ConfigMap => &["cm"],
        Kind::ServiceAccount => &["sa"],
        Kind::NetworkPolicy => &["netpol"],
        Kind::CustomResourceDefinition => &["crd", "crds"],
        _ => &[],
    }
}
