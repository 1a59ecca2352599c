//! Discovery (`/api`, `/apis`, `/version`) and the OpenAPI document, generated from the
//! kinds this server serves.

use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use super::http::{error, full, json_response, Body};
use super::kind::Kind;
use super::status::ApiError;

/// Discovery documents for the kinds this server serves (every verb on each, and Events),
/// enough for kube-rs's `Discovery`, kubectl's REST mapper and clients that check the
/// server version.
pub(super) fn discovery(path: &str) -> Response<Body> {
    let all = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    let events = ["create", "get", "list", "patch"];
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str], short: &[&str]| {
        json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced,
               "kind": kind, "verbs": verbs, "shortNames": short})
    };
    let resources = |group: &str| -> Vec<Value> {
        let mut out: Vec<Value> = Kind::ALL
            .into_iter()
            .filter(|k| k.group() == group)
            .map(|k| {
                let short: &[&str] = match k {
                    Kind::DaemonSet => &["ds"],
                    Kind::Pod => &["po"],
                    Kind::Namespace => &["ns"],
                    Kind::ConfigMap => &["cm"],
                    Kind::ServiceAccount => &["sa"],
                    Kind::NetworkPolicy => &["netpol"],
                    _ => &[],
                };
                resource(k.plural(), k.name(), k.namespaced(), &all, short)
            })
            .collect();
        if matches!(group, "" | "events.k8s.io") {
            out.push(resource("events", "Event", true, &events, &[]));
        }
        out
    };
    let groups = [
        "networking.k8s.io",
        "apps",
        "rbac.authorization.k8s.io",
        "events.k8s.io",
    ];
    let body = match path.trim_end_matches('/') {
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "podwall-test",
            "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.0",
            "compiler": "gc", "platform": "linux/amd64"
        }),
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        "/api/v1" => json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
            "resources": resources("")}),
        "/apis" => {
            let group = |name: &str| {
                let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
                json!({"name": name, "versions": [gv], "preferredVersion": gv})
            };
            json!({"kind": "APIGroupList", "apiVersion": "v1",
                   "groups": groups.iter().map(|g| group(g)).collect::<Vec<_>>()})
        }
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
        other => match groups.iter().find(|g| other == format!("/apis/{g}/v1")) {
            Some(g) => json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": format!("{g}/v1"), "resources": resources(g)}),
            None => {
                return error(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ))
            }
        },
    };
    json_response(200, &body)
}
