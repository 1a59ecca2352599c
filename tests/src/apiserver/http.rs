//! The HTTP/1.1 side, plain or over TLS: accept connections, authenticate the bearer token,
//! resolve the request, apply the test's RBAC denials, and answer lists, gets, watches (chunked
//! newline-delimited JSON), writes, discovery and Event writes the way the real API server does.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::PostedEvent;
use super::kind::Kind;
use super::route::{self, ApiRequest, Target};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{details, qualified, ApiError};
use super::store::{Filter, ListQuery, Store, WatchMsg};
use super::write;
use super::{crd, discovery, events};

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Everything the connections share with the control interface.
#[derive(Debug)]
pub struct Shared {
    pub store: Mutex<Store>,
    pub requests: Mutex<Vec<ApiRequest>>,
    /// (verb, resource) pairs answered with 403; `*` matches any.
    pub denied: Mutex<Vec<(String, String)>>,
    pub events: Mutex<Vec<PostedEvent>>,
    pub token: String,
    pub user: String,
}

/// Lock a mutex, also after a panic elsewhere: a failed test must not hide behind poison.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accept connections until `stop`; each connection is dropped (closed without goodbye) when
/// `stop` fires, which is what a crashed or unreachable API server looks like to a client.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((socket, _)) = accepted else {
            // Out of file descriptors and the like: try again rather than go deaf.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (shared, stop, tls) = (shared.clone(), stop.clone(), tls.clone());
        tracker.spawn(async move {
            match tls {
                None => connection(socket, shared, stop).await,
                Some(tls) => {
                    let handshake = tokio::select! {
                        _ = stop.cancelled() => return,
                        h = tls.accept(socket) => h,
                    };
                    if let Ok(stream) = handshake {
                        connection(stream, shared, stop).await;
                    }
                }
            }
        });
    }
}

/// Serve one connection until it closes or `stop` fires.
async fn connection<I>(io: I, shared: Arc<Shared>, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = stop.cancelled() => {}
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let uri = req.uri().to_string();
    let path = req.uri().path().to_string();
    let query = route::parse_query(req.uri().query().unwrap_or(""));
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token));
    let mut record = match route::parse_path(&path) {
        Target::NonResource(_) => ApiRequest {
            verb: method.to_lowercase(),
            group: String::new(),
            version: String::new(),
            resource: String::new(),
            subresource: None,
            namespace: None,
            name: None,
            uri,
            status: 0,
        },
        Target::Resource {
            group,
            version,
            resource,
            namespace,
            name,
            subresource,
        } => ApiRequest {
            verb: route::verb(&method, name.is_some(), &query),
            group,
            version,
            resource,
            subresource,
            namespace,
            name,
            uri,
            status: 0,
        },
    };
    let response = if !authorized {
        error(&ApiError::new(401, "Unauthorized", "Unauthorized"))
    } else if let Some(forbidden) = forbidden(shared, &record) {
        error(&forbidden)
    } else if !record.is_resource() {
        discovery::discovery(&path, &lock(&shared.store))
    } else {
        let content_type = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(&ApiError::bad_request(format!("reading body: {e}"))),
        };
        resource(shared, &record, &query, &content_type, &body).unwrap_or_else(|e| error(&e))
    };
    record.status = response.status().as_u16();
    lock(&shared.requests).push(record);
    response
}

/// The 403 the real authorizer gives when the test denied this verb on this resource.
fn forbidden(shared: &Shared, r: &ApiRequest) -> Option<ApiError> {
    let resource = r.rbac_resource();
    let denied = lock(&shared.denied).iter().any(|(verb, res)| {
        (verb == "*" || *verb == r.verb)
            && r.is_resource()
            && (res == "*" || *res == resource || *res == qualified(&resource, &r.group))
    });
    if !denied {
        return None;
    }
    let what = match &r.name {
        Some(name) => format!("{} \"{name}\"", qualified(&r.resource, &r.group)),
        None => qualified(&r.resource, &r.group),
    };
    let scope = match &r.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        shared.user, r.verb, r.group
    );
    Some(
        ApiError::new(403, "Forbidden", message).with_details(details(
            &r.resource,
            &r.group,
            r.name.as_deref(),
        )),
    )
}

fn resource(
    shared: &Shared,
    r: &ApiRequest,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    if r.resource == "events"
        && matches!(r.group.as_str(), "" | "events.k8s.io")
        && r.version == "v1"
    {
        return events::event(shared, r, body);
    }
    let kind = Kind::from_resource(&r.group, &r.resource)
        .filter(|k| k.namespaced() || r.namespace.is_none())
        .ok_or_else(crd::not_served)?;
    let gvk = kind.at(&r.version);
    // One lock from the check to the answer: a CRD deleted meanwhile cannot leave a custom
    // object behind, or answer a list of a kind no longer served.
    let mut store = lock(&shared.store);
    if !crd::served_versions(&store, kind).contains(&r.version) {
        return Err(crd::not_served());
    }
    if r.subresource.is_some() {
        return Err(method_not_allowed());
    }
    if !matches!(r.verb.as_str(), "get" | "list" | "watch") {
        let (code, obj) = write::write(
            &mut store,
            &gvk,
            &r.verb,
            r.namespace.as_deref(),
            r.name.as_deref(),
            content_type,
            body,
        )?;
        return Ok(json_response(code, &gvk.stamp(obj)));
    }
    let mut filter = Filter {
        namespace: r.namespace.clone(),
        labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str), kind)
            .map_err(ApiError::bad_request)?,
    };
    match (r.verb.as_str(), &r.name) {
        ("get", Some(name)) => {
            let ns = r.namespace.as_deref().unwrap_or("");
            let obj = store.get(kind, ns, name);
            match obj {
                Some(obj) if kind.namespaced() == r.namespace.is_some() => {
                    Ok(json_response(200, &gvk.stamp(obj)))
                }
                _ => Err(ApiError::not_found(kind.plural(), kind.group(), name)),
            }
        }
        ("watch", name) => {
            if let Some(name) = name {
                // The old form of watching one object: `…/pods/web?watch=true`.
                filter.fields = FieldSelector::parse(&format!("metadata.name={name}"), kind)
                    .expect("metadata.name is a field of every kind");
            }
            let bookmarks = query
                .get("allowWatchBookmarks")
                .is_some_and(|v| v == "true");
            let timeout = match query.get("timeoutSeconds") {
                Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
                })?)),
                None => None,
            };
            let rv = query.get("resourceVersion").map(String::as_str);
            let rx = store.watch(gvk, filter, rv, bookmarks)?;
            Ok(watch_response(rx, timeout))
        }
        _ => {
            let q = ListQuery {
                resource_version: query.get("resourceVersion").cloned(),
                resource_version_match: query.get("resourceVersionMatch").cloned(),
                limit: match query.get("limit") {
                    Some(l) => Some(
                        l.parse()
                            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
                    ),
                    None => None,
                },
                continue_token: query.get("continue").cloned().filter(|c| !c.is_empty()),
            };
            let page = store.list(kind, &filter, &q)?;
            drop(store);
            let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
            if let Some(token) = page.continue_token {
                metadata["continue"] = json!(token);
            }
            if let Some(remaining) = page.remaining {
                metadata["remainingItemCount"] = json!(remaining);
            }
            // Custom objects in a list carry their apiVersion, the one asked for.
            let items = page
                .items
                .iter()
                .map(|obj| match kind.crd() {
                    None => Cow::Borrowed(&**obj),
                    Some(_) => Cow::Owned(gvk.stamp(Value::clone(obj))),
                })
                .collect();
            Ok(json_response(
                200,
                &ListBody {
                    kind: format!("{}List", kind.name()),
                    api_version: gvk.api_version(),
                    metadata,
                    items,
                },
            ))
        }
    }
}

pub(super) fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

/// A watch: events as newline-delimited JSON in a chunked body. The body ends cleanly after
/// `timeout` (as `timeoutSeconds` asks) or after a 410 ERROR; a `Cut` ends it with an error,
/// which makes hyper drop the connection without the final chunk.
fn watch_response(
    rx: tokio::sync::mpsc::UnboundedReceiver<WatchMsg>,
    timeout: Option<Duration>,
) -> Response<Body> {
    let frames = futures::stream::unfold((rx, false), |(mut rx, cut)| async move {
        if cut {
            return None;
        }
        match rx.recv().await? {
            WatchMsg::Line(line) => Some((Ok(Frame::data(line)), (rx, false))),
            WatchMsg::Cut => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "watch dropped by the test",
                )),
                (rx, true),
            )),
        }
    });
    let frames = match timeout {
        Some(t) => frames.take_until(tokio::time::sleep(t)).boxed(),
        None => frames.boxed(),
    };
    Response::builder()
        .status(200)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .expect("a response with a static header builds")
}

pub(super) fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A list response, serialized straight from the stored objects (a `json!` body would copy
/// each of them first).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    kind: String,
    api_version: String,
    metadata: Value,
    items: Vec<Cow<'a, Value>>,
}

pub(super) fn json_response(code: u16, body: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(
            serde_json::to_vec(body).expect("a JSON value serializes"),
        )))
        .expect("a response with a valid status builds")
}

pub(super) fn error(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}
