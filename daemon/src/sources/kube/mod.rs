//! The Kubernetes source: kube-rs watchers of Pods (every node's: they are peers),
//! Namespaces, NetworkPolicies and, where their CRD is installed, ClusterNetworkPolicies,
//! folded into one `Snapshot` of the cluster.
//!
//! `run` owns the watchers: it batches bursts of events into one publication and reports
//! each kind's state to `/healthz`. The rest is split by concern: `cache` is the pure part
//! (watch events in, snapshot out) and is unit-tested; `slim` decodes a Pod into only what
//! enforcement reads; `cluster` follows the ClusterNetworkPolicy CRD; `events` posts a
//! Kubernetes Event on each policy that fails to compile; `lookup` GETs a pod the watch has
//! not delivered yet, for the plugin socket.

mod cache;
pub mod cluster;
mod events;
mod lookup;
pub mod podcidr;
mod slim;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace as ApiNamespace;
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use podwall_policy::Snapshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::cache::{Broken, Cache, Update};
pub use self::cluster::ClusterPolicyObject;
use self::events::BrokenPolicyEvents;
pub use self::lookup::PodLookup;
pub use self::slim::SlimPod;
use super::{Update as SourceUpdate, Updates};
use crate::health::Health;
use crate::metrics::Metrics;

/// The kinds podwall watches, by their API resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Pods,
    Namespaces,
    NetworkPolicies,
    /// Listed as empty while the cluster has no CRD for them.
    ClusterNetworkPolicies,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Pods,
        Kind::Namespaces,
        Kind::NetworkPolicies,
        Kind::ClusterNetworkPolicies,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Namespaces => "namespaces",
            Kind::NetworkPolicies => "networkpolicies",
            Kind::ClusterNetworkPolicies => "clusternetworkpolicies",
        }
    }
}

/// How long a burst of events may gather before the snapshot is published: long enough that
/// a burst becomes one transaction, short next to the time a pod takes to start.
const BATCH: Duration = Duration::from_millis(5);
/// A watch error that persists this long (the watcher retries with backoff) marks the kind
/// unhealthy; a relist after a 410 or a dropped connection recovers well before.
const ERROR_GRACE: Duration = Duration::from_secs(15);
/// Objects per list request (`limit`, then `continue`): a first list of a large cluster
/// arrives page by page, and no response holds the whole cluster. (kube-rs's default too,
/// said here so that it stays so.)
const LIST_PAGE: u32 = 500;

/// Why a kind's watch does not give the cluster's state.
#[derive(Debug)]
pub enum WatchError {
    /// An API call failed; the watcher retries with backoff.
    Api(watcher::Error),
    /// The cluster serves the kind in a form podwall cannot read (its CRD serves no version
    /// podwall knows): nothing to retry until the CRD changes.
    Unreadable(String),
}

type Item = (Kind, Result<Update, WatchError>);

fn stream<K>(api: Api<K>, kind: Kind, wrap: fn(WatchEvent<K>) -> Update) -> impl Stream<Item = Item>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(api, watcher::Config::default().page_size(LIST_PAGE))
        .default_backoff()
        .map(move |item| (kind, item.map(wrap).map_err(WatchError::Api)))
}

/// The watchers. Once every kind has listed, the whole snapshot is sent; after that, the
/// changes of each batch.
///
/// Every kind is marked unsynced in `health` when this is called, not when the returned
/// future first runs: a caller may start serving before it spawns the watchers (a start
/// from the stored state), and readiness must not be green in between.
pub fn run(
    client: Client,
    cache: Cache,
    tx: Updates,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    node: String,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    for kind in Kind::ALL {
        health.set_source(kind.as_str(), Err("waiting for the first list".into()));
    }
    watch(client, cache, tx, health, metrics, node, shutdown)
}

async fn watch(
    client: Client,
    mut cache: Cache,
    tx: Updates,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    node: String,
    shutdown: CancellationToken,
) {
    let mut kube_events = BrokenPolicyEvents::new(client.clone(), node);
    let mut streams = futures::stream::select_all([
        stream(Api::<SlimPod>::all(client.clone()), Kind::Pods, Update::Pod).boxed(),
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
        cluster::stream(client.clone()).boxed(),
    ]);
    let mut failing: BTreeMap<Kind, Instant> = BTreeMap::new();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = streams.next() => match item { Some(item) => item, None => return },
        };
        let was_synced = cache.is_synced();
        let mut changes = Vec::new();
        let mut broken = Vec::new();
        let mut handle = |(kind, item): Item, cache: &mut Cache| match item {
            Ok(update) => {
                if matches!(
                    update,
                    Update::Pod(WatchEvent::Init)
                        | Update::Namespace(WatchEvent::Init)
                        | Update::Policy(WatchEvent::Init)
                        | Update::ClusterPolicy(WatchEvent::Init)
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
                match err {
                    WatchError::Api(_) => {
                        warn!(kind = kind.as_str(), error = %reason, "watch failed; retrying with backoff")
                    }
                    WatchError::Unreadable(_) => {
                        warn!(kind = kind.as_str(), error = %reason, "cannot read the kind until its CRD changes")
                    }
                }
                let since = *failing.entry(kind).or_insert_with(Instant::now);
                if is_permanent(&err) || since.elapsed() > ERROR_GRACE {
                    health.set_source(kind.as_str(), Err(reason));
                }
            }
        };
        handle(first, &mut cache);
        let deadline = tokio::time::Instant::now() + BATCH;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, streams.next()).await {
            handle(item, &mut cache);
        }
        for broken in &broken {
            kube_events.report(broken).await;
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

fn api_error(err: &WatchError) -> Option<&kube::core::Status> {
    let WatchError::Api(err) = err else {
        return None;
    };
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(e))
        | watcher::Error::WatchStartFailed(kube::Error::Api(e))
        | watcher::Error::WatchFailed(kube::Error::Api(e))
        | watcher::Error::WatchError(e) => Some(e),
        _ => None,
    }
}

/// Errors that retrying does not cure: red at once, not after the grace.
fn is_permanent(err: &WatchError) -> bool {
    matches!(err, WatchError::Unreadable(_)) || api_error(err).is_some_and(|e| e.code == 403)
}

/// A 403 carries the API server's sentence naming the verb and resource it refused.
fn describe(err: &WatchError) -> String {
    let err = match (err, api_error(err)) {
        (WatchError::Unreadable(reason), _) => return reason.clone(),
        (_, Some(e)) if e.code == 403 => return format!("forbidden (RBAC): {}", e.message),
        (_, Some(e)) => return format!("{} ({}): {}", e.reason, e.code, e.message),
        (WatchError::Api(err), None) => err,
    };
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A client from `--kubeconfig`, or the in-cluster config when there is none.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no API server: not running in a pod; pass --kubeconfig FILE, or --manifests DIR for standalone mode",
        )?,
    };
    kube::Client::try_from(config).context("creating the API client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_kind_is_unsynced_from_the_call_not_from_the_first_poll() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = Client::try_from(config).expect("a client");
        let health = Arc::new(Health::default());
        health.set_ready();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let watchers = run(
            client,
            Cache::default(),
            tx,
            health.clone(),
            Arc::new(Metrics::default()),
            "n1".into(),
            CancellationToken::new(),
        );
        // Not spawned yet: a start from the stored state serves first.
        let reason = health.reason().unwrap_or_default();
        for kind in Kind::ALL {
            assert!(reason.contains(kind.as_str()), "{reason}");
        }
        drop(watchers);
    }
}
