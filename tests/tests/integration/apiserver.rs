//! The test API server driven by the client the daemon uses in production: kube-rs with a
//! kubeconfig, its watcher and reflector. Plain tests: loopback only, no root.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::{reflector, WatchStreamExt};
use kube::{Api, Client, Config, Resource, ResourceExt};
use podwall_tests::apiserver::{ApiServer, Permission};

/// How long any single expectation may take; everything here normally takes milliseconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

pub(crate) async fn client(server: &ApiServer, dir: &tempfile::TempDir) -> Client {
    let path = server.kubeconfig(dir.path());
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube accepts the kubeconfig");
    Client::try_from(config).expect("building a client")
}

fn pod_yaml(ns: &str, name: &str, node: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\n\
         spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n"
    )
}

/// Retry at once, a little later each time is not needed against a local server.
pub(crate) struct Quick;
impl Iterator for Quick {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
}
impl Backoff for Quick {
    fn reset(&mut self) {}
}

/// A stream polled on its own task, as the daemon polls its watchers: a watcher only opens
/// its watch when polled after the initial list, so the test must not be the one to poll it.
pub(crate) struct Background<T> {
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn background<S>(stream: S) -> Background<S::Item>
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    Background { rx, task }
}

/// Take stream items until `done` says so; panics after the deadline with what was seen.
pub(crate) async fn until<T: std::fmt::Debug>(
    stream: &mut Background<T>,
    mut done: impl FnMut(&[T]) -> bool,
) -> Vec<T> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + DEADLINE;
    while !done(&seen) {
        match tokio::time::timeout_at(end, stream.rx.recv()).await {
            Ok(Some(item)) => seen.push(item),
            Ok(None) => panic!("stream ended; saw {seen:?}"),
            Err(_) => panic!("deadline passed; saw {seen:?}"),
        }
    }
    seen
}

/// A short name for each watcher event, to compare sequences.
fn label(e: &Result<Event<Pod>, watcher::Error>) -> String {
    match e {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(p)) => format!("InitApply {}", p.name_any()),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(p)) => format!("Apply {}", p.name_any()),
        Ok(Event::Delete(p)) => format!("Delete {}", p.name_any()),
        Err(_) => "Error".into(),
    }
}

pub(crate) async fn eventually(mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "condition not met within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn kube_client_lists_and_gets_pods_through_the_kubeconfig() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    server
        .create_yaml(&pod_yaml("shop", "web", "n1", "web"))
        .unwrap();
    server
        .create_yaml(&pod_yaml("ops", "probe", "n2", "probe"))
        .unwrap();
    let client = client(&server, &dir).await;

    let list = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap(), p.name_any()))
        .collect();
    assert_eq!(names, ["ops/probe", "shop/web"]);
    assert_eq!(
        list.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    assert!(list
        .items
        .iter()
        .all(|p| p.uid().is_some() && p.resource_version().is_some()));

    let web = Api::<Pod>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .unwrap();
    assert_eq!(web.spec.unwrap().node_name.as_deref(), Some("n1"));
    let missing = Api::<Pod>::namespaced(client, "shop")
        .get("nope")
        .await
        .unwrap_err();
    assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));

    let verbs: Vec<_> = server
        .requests()
        .iter()
        .map(|r| (r.verb.clone(), r.namespace.clone()))
        .collect();
    assert_eq!(
        verbs,
        [
            ("list".to_string(), None),
            ("get".to_string(), Some("shop".to_string())),
            ("get".to_string(), Some("shop".to_string())),
        ]
    );
}

#[tokio::test]
async fn watcher_sees_added_modified_and_deleted_from_control_calls() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    server
        .create_yaml(&pod_yaml("shop", "old", "n1", "web"))
        .unwrap();
    let api = Api::<Pod>::all(client(&server, &dir).await);
    let mut events = background(watcher(api, watcher::Config::default()));

    let init = until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    assert_eq!(
        init.iter().map(label).collect::<Vec<_>>(),
        ["Init", "InitApply old", "InitDone"]
    );
    eventually(|| server.open_watches() == 1).await;

    server
        .create_yaml(&pod_yaml("shop", "new", "n1", "web"))
        .unwrap();
    server
        .apply_yaml(&pod_yaml("shop", "new", "n1", "db"))
        .unwrap();
    server.delete::<Pod>("shop", "old").unwrap();
    let live = until(&mut events, |s| s.len() == 3).await;
    assert_eq!(
        live.iter().map(label).collect::<Vec<_>>(),
        ["Apply new", "Apply new", "Delete old"]
    );
    let Ok(Event::Apply(relabelled)) = &live[1] else {
        unreachable!()
    };
    assert_eq!(relabelled.labels()["app"], "db");

    let watch = server
        .requests()
        .into_iter()
        .find(|r| r.verb == "watch")
        .expect("a watch request");
    for param in [
        "allowWatchBookmarks=true",
        "timeoutSeconds=290",
        "resourceVersion=",
    ] {
        assert!(watch.uri.contains(param), "{} lacks {param}", watch.uri);
    }
}

#[tokio::test]
async fn reflector_store_converges_on_the_server_state() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let api = Api::<Pod>::all(client(&server, &dir).await);
    let (reader, writer) = reflector::store::<Pod>();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).backoff(Quick),
    );
    let task = tokio::spawn(stream.for_each(|_| async {}));

    for n in 0..5 {
        server
            .create_yaml(&pod_yaml("shop", &format!("p{n}"), "n1", "web"))
            .unwrap();
    }
    server.delete::<Pod>("shop", "p0").unwrap();
    server
        .apply_yaml(&pod_yaml("shop", "p1", "n2", "web"))
        .unwrap();
    let names = || {
        reader
            .state()
            .iter()
            .map(|p| p.name_any())
            .collect::<BTreeSet<_>>()
    };
    let want: BTreeSet<_> = ["p1", "p2", "p3", "p4"].map(String::from).into();
    eventually(|| names() == want).await;
    let rv = server.get::<Pod>("shop", "p1").unwrap().resource_version();
    eventually(|| {
        reader
            .state()
            .iter()
            .any(|p| p.name_any() == "p1" && p.resource_version() == rv)
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn compaction_and_a_dropped_watch_make_the_watcher_relist_and_converge() {
    // No timed bookmarks: one arriving between compact and drop would make the watcher's
    // version current again, and it would resume instead of relisting.
    let server = ApiServer::builder()
        .bookmark_interval(Duration::from_secs(3600))
        .start();
    let dir = tempfile::tempdir().unwrap();
    server
        .create_yaml(&pod_yaml("shop", "a", "n1", "web"))
        .unwrap();
    let api = Api::<Pod>::all(client(&server, &dir).await);
    let mut events = background(watcher(api, watcher::Config::default()).backoff(Quick));
    until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    eventually(|| server.open_watches() == 1).await;

    server
        .create_yaml(&pod_yaml("shop", "b", "n1", "web"))
        .unwrap();
    server.delete::<Pod>("shop", "a").unwrap();
    let live = until(&mut events, |s| s.len() == 2).await;
    assert_eq!(
        live.iter().map(label).collect::<Vec<_>>(),
        ["Apply b", "Delete a"]
    );
    server.compact();
    server.drop_watches();

    // The re-watch from the last version seen gets 410 Expired and the watcher starts over.
    let relist = until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    let labels: Vec<_> = relist
        .into_iter()
        .map(|e| label(&e))
        .filter(|l| l != "Error")
        .collect();
    assert_eq!(labels, ["Init", "InitApply b", "InitDone"]);
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.verb == "list")
        .count();
    assert_eq!(lists, 2);
    eventually(|| server.open_watches() == 1).await;
    server
        .create_yaml(&pod_yaml("shop", "c", "n1", "web"))
        .unwrap();
    let live = until(&mut events, |s| s.len() == 1).await;
    assert_eq!(label(&live[0]), "Apply c");
}

#[tokio::test]
async fn paginated_initial_list_returns_every_object_once() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    for n in 0..7 {
        server
            .create_yaml(&pod_yaml("shop", &format!("p{n}"), "n1", "web"))
            .unwrap();
    }
    let api = Api::<Pod>::all(client(&server, &dir).await);
    let mut events = background(watcher(api, watcher::Config::default().page_size(3)));
    let init = until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    let applied: Vec<_> = init
        .iter()
        .map(label)
        .filter(|l| l.starts_with("InitApply"))
        .collect();
    assert_eq!(applied.len(), 7, "{applied:?}");
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "list")
        .map(|r| r.uri)
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists.iter().all(|u| u.contains("limit=3")));
    assert!(lists[1].contains("continue="));
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_and_watches() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    server
        .create_yaml(&pod_yaml("shop", "web", "n1", "web"))
        .unwrap();
    server
        .create_yaml(&pod_yaml("shop", "db", "n1", "db"))
        .unwrap();
    server
        .create_yaml(&pod_yaml("shop", "far", "n2", "web"))
        .unwrap();
    let api = Api::<Pod>::all(client(&server, &dir).await);

    let on_n1 = api
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(
        on_n1.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["db", "web"]
    );
    let webs = api
        .list(&ListParams::default().labels("app in (web),app!=db"))
        .await
        .unwrap();
    assert_eq!(
        webs.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["far", "web"]
    );
    let unsupported = api
        .list(&ListParams::default().fields("spec.image=x"))
        .await
        .unwrap_err();
    assert!(matches!(unsupported, kube::Error::Api(s) if s.code == 400));

    let config = watcher::Config::default()
        .labels("app=web")
        .fields("spec.nodeName=n1");
    let mut events = background(watcher(api, config));
    let init = until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    assert_eq!(
        init.iter().map(label).collect::<Vec<_>>(),
        ["Init", "InitApply web", "InitDone"]
    );
    eventually(|| server.open_watches() == 1).await;
    // Moving out of the selection is a DELETED, moving in an ADDED, as from a real server.
    server
        .apply_yaml(&pod_yaml("shop", "web", "n1", "db"))
        .unwrap();
    server
        .apply_yaml(&pod_yaml("shop", "db", "n1", "web"))
        .unwrap();
    server
        .apply_yaml(&pod_yaml("shop", "far", "n2", "other"))
        .unwrap();
    server
        .create_yaml(&pod_yaml("shop", "new", "n1", "web"))
        .unwrap();
    let live = until(&mut events, |s| s.len() == 3).await;
    assert_eq!(
        live.iter().map(label).collect::<Vec<_>>(),
        ["Delete web", "Apply db", "Apply new"]
    );
}

#[tokio::test]
async fn denied_calls_are_403_kube_errors_that_name_the_missing_permission() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    server.deny("list", "pods");
    server.deny("watch", "networkpolicies");

    let err = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err:?}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        "pods is forbidden: User \"system:serviceaccount:kube-system:podwall\" cannot list \
         resource \"pods\" in API group \"\" at the cluster scope"
    );

    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), "shop");
    assert!(
        policies.list(&ListParams::default()).await.is_ok(),
        "only watch is denied"
    );
    let err = policies
        .watch(&WatchParams::default(), "0")
        .await
        .err()
        .expect("watch is denied");
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err:?}")
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .starts_with("networkpolicies.networking.k8s.io is forbidden"),
        "{}",
        status.message
    );
    assert!(status.message.ends_with(
        "cannot watch resource \"networkpolicies\" in API group \"networking.k8s.io\" in the namespace \"shop\""
    ));

    // The watcher surfaces it as an error and keeps trying, like against a real cluster.
    let mut events = background(
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).backoff(Quick),
    );
    let first = until(&mut events, |s| s.len() == 2).await;
    assert!(
        matches!(&first[1], Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 403)
    );
    server.allow("list", "pods");
    until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    eventually(|| server.open_watches() == 1).await;

    let needed = server.permissions();
    let p = |group: &str, resource: &str, verb: &str| Permission {
        group: group.into(),
        resource: resource.into(),
        verb: verb.into(),
    };
    for want in [
        p("", "pods", "list"),
        p("", "pods", "watch"),
        p("networking.k8s.io", "networkpolicies", "watch"),
    ] {
        assert!(needed.contains(&want), "{want:?} not in {needed:?}");
    }
}

#[tokio::test]
async fn watcher_recovers_after_an_outage() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    server
        .create_yaml(&pod_yaml("shop", "a", "n1", "web"))
        .unwrap();
    let api = Api::<Pod>::all(client(&server, &dir).await);
    let mut events = background(watcher(api, watcher::Config::default()).backoff(Quick));
    until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::InitDone)))
    })
    .await;
    eventually(|| server.open_watches() == 1).await;

    server.stop();
    assert!(
        std::net::TcpStream::connect(server.addr()).is_err(),
        "the port is closed"
    );
    until(&mut events, |s| s.iter().any(|e| e.is_err())).await;
    server
        .create_yaml(&pod_yaml("shop", "b", "n1", "web"))
        .unwrap();
    server.restart();

    // The re-watch replays what happened during the outage; no relist is needed.
    let after = until(&mut events, |s| {
        s.iter().any(|e| matches!(e, Ok(Event::Apply(_))))
    })
    .await;
    let labels: Vec<_> = after.iter().map(label).filter(|l| l != "Error").collect();
    assert_eq!(labels, ["Apply b"]);
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_an_expired_error_event_and_exact_list_a_410() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    server
        .create_yaml(&pod_yaml("shop", "a", "n1", "web"))
        .unwrap();
    let old = server.resource_version().to_string();
    server.compact();
    let api = Api::<Pod>::all(client(&server, &dir).await);

    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(DEADLINE, stream.try_next())
        .await
        .unwrap()
        .unwrap();
    let Some(WatchEvent::Error(status)) = first else {
        panic!("expected an ERROR event, got {first:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));

    let exact = ListParams::default()
        .at(&old)
        .matching(kube::api::VersionMatch::Exact);
    let err = api.list(&exact).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 410));
}

#[tokio::test]
async fn watches_that_allow_bookmarks_get_them_with_the_current_version() {
    let server = ApiServer::builder()
        .bookmark_interval(Duration::from_millis(50))
        .start();
    let dir = tempfile::tempdir().unwrap();
    server
        .create_yaml(&pod_yaml("shop", "a", "n1", "web"))
        .unwrap();
    let api = Api::<Pod>::all(client(&server, &dir).await);
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(DEADLINE, stream.try_next())
        .await
        .unwrap()
        .unwrap();
    let Some(WatchEvent::Bookmark(bookmark)) = first else {
        panic!("expected a BOOKMARK, got {first:?}")
    };
    assert_eq!(bookmark.metadata.resource_version, rv);
    assert_eq!(
        (
            bookmark.types.api_version.as_str(),
            bookmark.types.kind.as_str()
        ),
        ("v1", "Pod")
    );
}

#[tokio::test]
async fn events_of_both_apis_are_recorded_with_their_subject() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let policy: NetworkPolicy = serde_norway::from_str(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: shop}\n\
         spec: {podSelector: {}}\n",
    )
    .unwrap();
    let policy = server.create(&policy).unwrap();
    let client = client(&server, &dir).await;

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "podwalld".into(),
            instance: Some("n1".into()),
        },
    );
    let event = RecordedEvent {
        type_: EventType::Warning,
        reason: "PolicyCompileFailed".into(),
        note: Some("bad CIDR".into()),
        action: "Compile".into(),
        secondary: None,
    };
    let reference = policy.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    // The same event again: kube's recorder patches the first one to count a series.
    recorder.publish(&event, &reference).await.unwrap();

    let core: CoreEvent = serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": "deny-all."},
        "involvedObject": {"kind": "NetworkPolicy", "namespace": "shop", "name": "deny-all"},
        "reason": "PolicyCompileFailed", "message": "bad CIDR", "type": "Warning",
    }))
    .unwrap();
    Api::<CoreEvent>::namespaced(client, "shop")
        .create(&PostParams::default(), &core)
        .await
        .unwrap();

    let events = server.events();
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.api_version.as_str(), e.verb.as_str(), e.reason()))
        .collect();
    assert_eq!(
        summary,
        [
            ("events.k8s.io/v1", "create", "PolicyCompileFailed"),
            ("events.k8s.io/v1", "patch", "PolicyCompileFailed"),
            ("v1", "create", "PolicyCompileFailed"),
        ]
    );
    for e in &events {
        let subject = e.subject();
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.namespace.as_str(),
                subject.name.as_str()
            ),
            ("NetworkPolicy", "shop", "deny-all")
        );
        assert_eq!(e.message(), "bad CIDR");
        assert_eq!(e.namespace, "shop");
    }
    let perms = server.permissions();
    assert!(perms
        .iter()
        .any(|p| p.group == "events.k8s.io" && p.resource == "events" && p.verb == "create"));
}

#[test]
fn requests_without_the_token_are_unauthorized() {
    use std::io::{Read, Write};
    let server = ApiServer::start();
    let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.write_all(b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"reason\":\"Unauthorized\""), "{answer}");
}

/// `GET /version` with the token from inside `ns`, on a thread that entered it.
fn version_status_in(ns: &podwall_tests::TestNetns, server: &ApiServer) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let (addr, token) = (server.addr(), server.token().to_string());
    ns.run_in(move || {
        let mut conn = std::net::TcpStream::connect_timeout(&addr, DEADLINE)?;
        conn.set_read_timeout(Some(DEADLINE))?;
        let request = format!(
            "GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer.lines().next().unwrap_or("").to_string())
    })
}

#[test]
#[ignore = "needs root: creates a network namespace"]
fn server_started_in_a_netns_is_reachable_there_and_restarts_there() {
    let ns = podwall_tests::TestNetns::new("apiserver");
    let server = ApiServer::start_in(&ns);
    assert_eq!(version_status_in(&ns, &server).unwrap(), "HTTP/1.1 200 OK");
    server.stop();
    assert!(
        version_status_in(&ns, &server).is_err(),
        "still reachable after stop"
    );
    server.restart();
    assert_eq!(version_status_in(&ns, &server).unwrap(), "HTTP/1.1 200 OK");
}
