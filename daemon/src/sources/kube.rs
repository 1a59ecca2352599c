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
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use podwall_policy::diff::diff;
use podwall_policy::model::{ModelError, Namespace, Pod, PodKey, Policy, PolicyKey};
use podwall_policy::{Event, Snapshot};
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
    Pod(WatchEvent<ApiPod>),
    Namespace(WatchEvent<ApiNamespace>),
    Policy(WatchEvent<ApiPolicy>),
}

/// A policy that converted with errors: enforced as its fail-closed stand-in, and reported.
#[derive(Debug, Clone)]
pub struct Broken {
    pub policy: ApiPolicy,
    pub errors: Vec<ModelError>,
}

/// The cluster as the watchers have told it so far.
#[derive(Default)]
pub struct Cache {
    snapshot: Snapshot,
    synced: BTreeSet<Kind>,
    /// Objects being relisted, kept apart until the list is complete, so that a relist (after
    /// a 410 Gone or a dropped watch) swaps in whole and causes no churn. A kind's buffer is
    /// a `Snapshot` in which only that kind's map is filled.
    relists: BTreeMap<Kind, Snapshot>,
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
    pub fn apply(&mut self, update: Update) -> (Vec<Event>, Vec<Broken>) {
        let mut broken = Vec::new();
        let changes = match update {
            Update::Pod(event) => self.fold(event, &mut broken),
            Update::Namespace(event) => self.fold(event, &mut broken),
            Update::Policy(event) => self.fold(event, &mut broken),
        };
        (changes, broken)
    }

    /// The one fold of a watch, whatever its kind: a list gathers in its relist buffer and
    /// replaces the kind's map at `InitDone`; the other events change the snapshot itself.
    fn fold<K: Watched>(&mut self, event: WatchEvent<K>, broken: &mut Vec<Broken>) -> Vec<Event> {
        match event {
            WatchEvent::Init => {
                self.relists.insert(K::KIND, Snapshot::default());
                Vec::new()
            }
            WatchEvent::InitApply(api) => {
                if let Some((key, value)) = K::convert(api, broken) {
                    K::map(self.relists.entry(K::KIND).or_default()).insert(key, value);
                }
                Vec::new()
            }
            WatchEvent::InitDone => {
                let mut relist = self.relists.remove(&K::KIND).unwrap_or_default();
                self.synced.insert(K::KIND);
                replace(
                    K::map(&mut self.snapshot),
                    std::mem::take(K::map(&mut relist)),
                    K::upserted,
                    K::deleted,
                )
            }
            WatchEvent::Apply(api) => match K::convert(api, broken) {
                Some((key, value)) => upsert(K::map(&mut self.snapshot), key, value, K::upserted),
                None => Vec::new(),
            },
            WatchEvent::Delete(api) => match K::deleted_key(&api) {
                Some(key) => remove(K::map(&mut self.snapshot), key, K::deleted),
                None => Vec::new(),
            },
        }
    }
}

/// A kind of API object the cache folds: how one converts, which map of a `Snapshot` holds
/// it, and which compiler events announce it.
trait Watched: Sized {
    const KIND: Kind;
    type Key: Ord + Clone;
    type Value: PartialEq + Clone;

    /// The object as the compiler sees it, with its key, or `None` to skip it. Problems are
    /// logged here; a policy's are also pushed to `broken`, to be reported on the object.
    fn convert(self, broken: &mut Vec<Broken>) -> Option<(Self::Key, Self::Value)>;
    /// The key of a deleted object, or `None` when it has none (so it cannot be cached).
    fn deleted_key(&self) -> Option<Self::Key>;
    /// The map of this kind in `snapshot`.
    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<Self::Key, Self::Value>;
    fn upserted(value: Self::Value) -> Event;
    fn deleted(key: Self::Key) -> Event;
}

impl Watched for ApiPod {
    const KIND: Kind = Kind::Pods;
    type Key = PodKey;
    type Value = Pod;

    fn convert(self, _: &mut Vec<Broken>) -> Option<(PodKey, Pod)> {
        let pod = pod_from_api(&self);
        Some((pod.key.clone(), pod))
    }

    fn deleted_key(&self) -> Option<PodKey> {
        Some(pod_from_api(self).key)
    }

    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<PodKey, Pod> {
        &mut snapshot.pods
    }

    fn upserted(pod: Pod) -> Event {
        Event::Pod(pod)
    }

    fn deleted(key: PodKey) -> Event {
        Event::PodDeleted(key)
    }
}

/// A pod always converts: a field it cannot use is ignored, which is worth a debug line only.
fn pod_from_api(api: &ApiPod) -> Pod {
    let (pod, errors) = Pod::from_api(api);
    for error in errors {
        debug!(pod = %pod.key, error = %error, "pod field ignored");
    }
    pod
}

impl Watched for ApiNamespace {
    const KIND: Kind = Kind::Namespaces;
    type Key = String;
    type Value = Namespace;

    fn convert(self, _: &mut Vec<Broken>) -> Option<(String, Namespace)> {
        match Namespace::from_api(&self) {
            Ok(ns) => Some((ns.name.clone(), ns)),
            Err(error) => {
                warn!(error = %error, "namespace skipped");
                None
            }
        }
    }

    fn deleted_key(&self) -> Option<String> {
        self.metadata.name.clone()
    }

    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<String, Namespace> {
        &mut snapshot.namespaces
    }

    fn upserted(ns: Namespace) -> Event {
        Event::Namespace(ns)
    }

    fn deleted(name: String) -> Event {
        Event::NamespaceDeleted(name)
    }
}

impl Watched for ApiPolicy {
    const KIND: Kind = Kind::NetworkPolicies;
    type Key = PolicyKey;
    type Value = Policy;

    /// A policy with errors converts to its fail-closed stand-in, and is reported.
    fn convert(self, broken: &mut Vec<Broken>) -> Option<(PolicyKey, Policy)> {
        let (policy, errors) = Policy::from_api(&self);
        if !errors.is_empty() {
            broken.push(Broken {
                policy: self,
                errors,
            });
        }
        Some((policy.key.clone(), policy))
    }

    /// A deleted policy needs no report, however broken it was.
    fn deleted_key(&self) -> Option<PolicyKey> {
        Some(Policy::from_api(self).0.key)
    }

    fn map(snapshot: &mut Snapshot) -> &mut BTreeMap<PolicyKey, Policy> {
        &mut snapshot.policies
    }

    fn upserted(policy: Policy) -> Event {
        Event::Policy(policy)
    }

    fn deleted(key: PolicyKey) -> Event {
        Event::PolicyDeleted(key)
    }
}

/// Swap in a complete list; what differed, as changes (none after a relist of an unchanged
/// cluster).
fn replace<K: Ord + Clone, V: PartialEq + Clone>(
    current: &mut BTreeMap<K, V>,
    listed: BTreeMap<K, V>,
    upserted: fn(V) -> Event,
    deleted: fn(K) -> Event,
) -> Vec<Event> {
    let changes = diff(current, &listed)
        .map(|change| match change.new_value() {
            Some(value) => upserted(value.clone()),
            None => deleted(change.key().clone()),
        })
        .collect();
    *current = listed;
    changes
}

fn upsert<K: Ord, V: PartialEq + Clone>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    upserted: fn(V) -> Event,
) -> Vec<Event> {
    match map.insert(key, value.clone()) {
        Some(old) if old == value => Vec::new(),
        _ => vec![upserted(value)],
    }
}

fn remove<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, deleted: fn(K) -> Event) -> Vec<Event> {
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
    wrap: fn(WatchEvent<K>) -> Update,
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
                    Update::Pod(WatchEvent::Init)
                        | Update::Namespace(WatchEvent::Init)
                        | Update::Policy(WatchEvent::Init)
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
