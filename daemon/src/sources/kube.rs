//! The Kubernetes source: kube-rs watchers of Pods (every node's: they are peers),
//! Namespaces and NetworkPolicies, folded into one `Snapshot` of the cluster.
//!
//! `Cache` is the pure part (watch events in, snapshot out) and is unit-tested; `run` owns
//! the watchers, batches bursts of events into one publication, reports each kind's state to
//! `/healthz`, and posts a Kubernetes Event on each NetworkPolicy that fails to compile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace as ApiNamespace, Pod as ApiPod};
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use podwall_policy::error::ModelError;
use podwall_policy::model::{Namespace, ObjectKey, Pod, Policy};
use podwall_policy::{Event as Change, Snapshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Update as SourceUpdate, Updates};
use crate::health::Health;
use crate::metrics::Metrics;

/// The kinds podwall watches, by their API resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Pods,
    Namespaces,
    NetworkPolicies,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pods, Kind::Namespaces, Kind::NetworkPolicies];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Namespaces => "namespaces",
            Kind::NetworkPolicies => "networkpolicies",
        }
    }
}

/// One watcher event, of whichever kind. Moved once per event, so the size difference of
/// the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Update {
    Pod(Event<ApiPod>),
    Namespace(Event<ApiNamespace>),
    Policy(Event<ApiPolicy>),
}

/// A policy that converted with errors: enforced as its fail-closed stand-in, and reported.
#[derive(Debug, Clone)]
pub struct Broken {
    pub policy: ApiPolicy,
    pub errors: Vec<ModelError>,
}

/// Objects being relisted, kept apart until the list is complete, so that a relist (after a
/// 410 Gone or a dropped watch) swaps in whole and causes no churn.
#[derive(Default)]
struct Relist {
    pods: BTreeMap<ObjectKey, Pod>,
    namespaces: BTreeMap<String, Namespace>,
    policies: BTreeMap<ObjectKey, Policy>,
}

/// The cluster as the watchers have told it so far.
#[derive(Default)]
pub struct Cache {
    snapshot: Snapshot,
    synced: BTreeSet<Kind>,
    relists: BTreeMap<Kind, Relist>,
}

impl Cache {
    /// Start from the last-known state (the store's), which the first lists replace.
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        Self {
            snapshot,
            ..Default::default()
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether every kind has completed its first list.
    pub fn is_synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    pub fn is_kind_synced(&self, kind: Kind) -> bool {
        self.synced.contains(&kind)
    }

    /// Apply one watch event. Returns what changed in the snapshot, as compiler events, and
    /// the policies that converted with errors.
    pub fn apply(&mut self, update: Update) -> (Vec<Change>, Vec<Broken>) {
        match update {
            Update::Pod(event) => (self.pod(event), Vec::new()),
            Update::Namespace(event) => (self.namespace(event), Vec::new()),
            Update::Policy(event) => self.policy(event),
        }
    }

    fn pod(&mut self, event: Event<ApiPod>) -> Vec<Change> {
        let convert = |api: &ApiPod| {
            let (pod, errors) = Pod::from_api(api);
            for error in errors {
                debug!(pod = %pod.key, error = %error, "pod field ignored");
            }
            pod
        };
        match event {
            Event::Init => {
                self.relists.insert(Kind::Pods, Relist::default());
                Vec::new()
            }
            Event::InitApply(api) => {
                let pod = convert(&api);
                self.relists
                    .entry(Kind::Pods)
                    .or_default()
                    .pods
                    .insert(pod.key.clone(), pod);
                Vec::new()
            }
            Event::InitDone => {
                let relist = self.relists.remove(&Kind::Pods).unwrap_or_default();
                self.synced.insert(Kind::Pods);
                replace(
                    &mut self.snapshot.pods,
                    relist.pods,
                    Change::Pod,
                    Change::PodDeleted,
                )
            }
            Event::Apply(api) => {
                let pod = convert(&api);
                upsert(&mut self.snapshot.pods, pod.key.clone(), pod, Change::Pod)
            }
            Event::Delete(api) => remove(
                &mut self.snapshot.pods,
                convert(&api).key,
                Change::PodDeleted,
            ),
        }
    }

    fn namespace(&mut self, event: Event<ApiNamespace>) -> Vec<Change> {
        let convert = |api: &ApiNamespace| match Namespace::from_api(api) {
            Ok(ns) => Some(ns),
            Err(error) => {
                warn!(error = %error, "namespace skipped");
                None
            }
        };
        match event {
            Event::Init => {
                self.relists.insert(Kind::Namespaces, Relist::default());
                Vec::new()
            }
            Event::InitApply(api) => {
                if let Some(ns) = convert(&api) {
                    self.relists
                        .entry(Kind::Namespaces)
                        .or_default()
                        .namespaces
                        .insert(ns.name.clone(), ns);
                }
                Vec::new()
            }
            Event::InitDone => {
                let relist = self.relists.remove(&Kind::Namespaces).unwrap_or_default();
                self.synced.insert(Kind::Namespaces);
                replace(
                    &mut self.snapshot.namespaces,
                    relist.namespaces,
                    Change::Namespace,
                    Change::NamespaceDeleted,
                )
            }
            Event::Apply(api) => match convert(&api) {
                Some(ns) => upsert(
                    &mut self.snapshot.namespaces,
                    ns.name.clone(),
                    ns,
                    Change::Namespace,
                ),
                None => Vec::new(),
            },
            Event::Delete(api) => match api.metadata.name {
                Some(name) => remove(
                    &mut self.snapshot.namespaces,
                    name,
                    Change::NamespaceDeleted,
                ),
                None => Vec::new(),
            },
        }
    }

    fn policy(&mut self, event: Event<ApiPolicy>) -> (Vec<Change>, Vec<Broken>) {
        let mut broken = Vec::new();
        let mut convert = |api: ApiPolicy| {
            let (policy, errors) = Policy::from_api(&api);
            if !errors.is_empty() {
                broken.push(Broken {
                    policy: api,
                    errors,
                });
            }
            policy
        };
        let changes = match event {
            Event::Init => {
                self.relists
                    .insert(Kind::NetworkPolicies, Relist::default());
                Vec::new()
            }
            Event::InitApply(api) => {
                let policy = convert(api);
                self.relists
                    .entry(Kind::NetworkPolicies)
                    .or_default()
                    .policies
                    .insert(policy.key.clone(), policy);
                Vec::new()
            }
            Event::InitDone => {
                let relist = self
                    .relists
                    .remove(&Kind::NetworkPolicies)
                    .unwrap_or_default();
                self.synced.insert(Kind::NetworkPolicies);
                replace(
                    &mut self.snapshot.policies,
                    relist.policies,
                    Change::Policy,
                    Change::PolicyDeleted,
                )
            }
            Event::Apply(api) => {
                let policy = convert(api);
                upsert(
                    &mut self.snapshot.policies,
                    policy.key.clone(),
                    policy,
                    Change::Policy,
                )
            }
            Event::Delete(api) => {
                let (policy, _) = Policy::from_api(&api);
                remove(
                    &mut self.snapshot.policies,
                    policy.key,
                    Change::PolicyDeleted,
                )
            }
        };
        (changes, broken)
    }
}

/// Swap in a complete list; what differed, as changes (none after a relist of an unchanged
/// cluster).
fn replace<K: Ord + Clone, V: PartialEq + Clone>(
    current: &mut BTreeMap<K, V>,
    listed: BTreeMap<K, V>,
    upserted: fn(V) -> Change,
    deleted: fn(K) -> Change,
) -> Vec<Change> {
    let mut changes: Vec<Change> = listed
        .iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .map(|(_, v)| upserted(v.clone()))
        .collect();
    changes.extend(
        current
            .keys()
            .filter(|k| !listed.contains_key(k))
            .cloned()
            .map(deleted),
    );
    *current = listed;
    changes
}

fn upsert<K: Ord, V: PartialEq + Clone>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    upserted: fn(V) -> Change,
) -> Vec<Change> {
    match map.insert(key, value.clone()) {
        Some(old) if old == value => Vec::new(),
        _ => vec![upserted(value)],
    }
}

fn remove<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, deleted: fn(K) -> Change) -> Vec<Change> {
    match map.remove(&key) {
        Some(_) => vec![deleted(key)],
        None => Vec::new(),
    }
}

/// How long a burst of events may gather before the snapshot is published: long enough that
/// a burst becomes one transaction, short next to the time a pod takes to start.
const BATCH: Duration = Duration::from_millis(5);
/// A watch error that persists this long (the watcher retries with backoff) marks the kind
/// unhealthy; a relist after a 410 or a dropped connection recovers well before.
const ERROR_GRACE: Duration = Duration::from_secs(15);

fn stream<K>(
    api: Api<K>,
    kind: Kind,
    wrap: fn(Event<K>) -> Update,
) -> impl Stream<Item = (Kind, Result<Update, watcher::Error>)>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |item| (kind, item.map(wrap)))
}

/// The watchers. Once every kind has listed, the whole snapshot is sent; after that, the
/// changes of each batch.
pub async fn run(
    client: Client,
    mut cache: Cache,
    tx: Updates,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    node: String,
    shutdown: CancellationToken,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "podwall".into(),
            instance: Some(node),
        },
    );
    let mut streams = futures::stream::select_all([
        stream(Api::<ApiPod>::all(client.clone()), Kind::Pods, Update::Pod).boxed(),
        stream(
            Api::<ApiNamespace>::all(client.clone()),
            Kind::Namespaces,
            Update::Namespace,
        )
        .boxed(),
        stream(
            Api::<ApiPolicy>::all(client.clone()),
            Kind::NetworkPolicies,
            Update::Policy,
        )
        .boxed(),
    ]);
    for kind in Kind::ALL {
        health.set_source(kind.as_str(), Err("waiting for the first list".into()));
    }
    let mut failing: BTreeMap<Kind, Instant> = BTreeMap::new();
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = streams.next() => match item { Some(item) => item, None => return },
        };
        let was_synced = cache.is_synced();
        let mut changes = Vec::new();
        let mut broken = Vec::new();
        let mut handle = |(kind, item): (Kind, Result<Update, watcher::Error>),
                          cache: &mut Cache| match item {
            Ok(update) => {
                if matches!(
                    update,
                    Update::Pod(Event::Init)
                        | Update::Namespace(Event::Init)
                        | Update::Policy(Event::Init)
                ) && cache.is_kind_synced(kind)
                {
                    metrics.count_watch_restart();
                    info!(kind = kind.as_str(), "relisting");
                }
                let (c, b) = cache.apply(update);
                changes.extend(c);
                broken.extend(b);
                failing.remove(&kind);
                if cache.is_kind_synced(kind) {
                    health.set_source(kind.as_str(), Ok(()));
                }
            }
            Err(err) => {
                metrics.count_error("api");
                let reason = describe(&err);
                warn!(kind = kind.as_str(), error = %reason, "watch failed; retrying with backoff");
                let since = *failing.entry(kind).or_insert_with(Instant::now);
                if is_forbidden(&err) || since.elapsed() > ERROR_GRACE {
                    health.set_source(kind.as_str(), Err(reason));
                }
            }
        };
        handle(first, &mut cache);
        let deadline = tokio::time::Instant::now() + BATCH;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, streams.next()).await {
            handle(item, &mut cache);
        }
        for Broken { policy, errors } in broken {
            report_broken(&recorder, &mut reported, &policy, &errors).await;
        }
        // The first complete list is sent whole, even when it is empty or equals the stored
        // state: start-up waits for it.
        let update = match (was_synced, cache.is_synced()) {
            (false, true) => Some(SourceUpdate::Snapshot(cache.snapshot().clone())),
            (true, true) if !changes.is_empty() => Some(SourceUpdate::Changes(changes)),
            _ => None,
        };
        if let Some(update) = update {
            if tx.send(update).is_err() {
                return;
            }
        }
    }
}

/// Wait for the first complete list of every kind, or fail when `timeout` passes first
/// (naming each kind's state).
pub async fn wait_synced(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<SourceUpdate>,
    health: &Health,
    timeout: Duration,
) -> anyhow::Result<Snapshot> {
    match tokio::time::timeout(timeout, rx.recv()).await {
        Ok(Some(SourceUpdate::Snapshot(snapshot))) => Ok(snapshot),
        Ok(Some(SourceUpdate::Changes(_))) => {
            anyhow::bail!("the API watchers sent changes before a complete list")
        }
        Ok(None) => anyhow::bail!("the API watchers stopped before they synced"),
        Err(_) => anyhow::bail!(
            "caches did not sync within {}s: {}",
            timeout.as_secs(),
            health
                .reason()
                .unwrap_or_else(|| "no reason recorded".into())
        ),
    }
}

/// One Event per broken policy version, so the user sees the problem in `kubectl describe`.
async fn report_broken(
    recorder: &Recorder,
    reported: &mut BTreeSet<(String, String)>,
    policy: &ApiPolicy,
    errors: &[ModelError],
) {
    let uid = policy.metadata.uid.clone().unwrap_or_default();
    let version = policy.metadata.resource_version.clone().unwrap_or_default();
    let name = format!(
        "{}/{}",
        policy.metadata.namespace.as_deref().unwrap_or("default"),
        policy.metadata.name.as_deref().unwrap_or("")
    );
    let note: Vec<String> = errors.iter().map(ToString::to_string).collect();
    warn!(policy = %name, errors = ?note, "network policy does not compile; the pods it selects stay isolated");
    if !reported.insert((uid, version)) {
        return;
    }
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "InvalidNetworkPolicy".into(),
        note: Some(truncate(
            &format!(
                "podwall enforces nothing this policy allows, and isolates the pods it selects: {}",
                note.join("; ")
            ),
            1000,
        )),
        action: "Compile".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &policy.object_ref(&())).await {
        warn!(policy = %name, error = %err, "cannot post the event on the policy");
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn api_error(err: &watcher::Error) -> Option<&kube::core::Status> {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(e))
        | watcher::Error::WatchStartFailed(kube::Error::Api(e))
        | watcher::Error::WatchFailed(kube::Error::Api(e))
        | watcher::Error::WatchError(e) => Some(e),
        _ => None,
    }
}

fn is_forbidden(err: &watcher::Error) -> bool {
    api_error(err).is_some_and(|e| e.code == 403)
}

/// A 403 carries the API server's sentence naming the verb and resource it refused.
fn describe(err: &watcher::Error) -> String {
    match api_error(err) {
        Some(e) if e.code == 403 => format!("forbidden (RBAC): {}", e.message),
        Some(e) => format!("{} ({}): {}", e.reason, e.code, e.message),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests;
