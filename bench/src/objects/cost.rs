//! What the daemon's source spends on each event (decode and fold, on the thread's CPU
//! clock), and what writing the whole cluster state to the store costs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace as ApiNamespace;
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;
use kube::core::WatchEvent as WireEvent;
use kube::runtime::watcher::Event;
use nix::time::{clock_gettime, ClockId};
use podwalld::sources::kube::{Cache, SlimPod, Update};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::life::{event_line, Stage};
use super::{Options, Persisted, Timed};
use crate::stats::Samples;

/// A watch event's line decoded as kube-rs decodes it, then the event the watcher hands on.
pub(super) fn decode<K: DeserializeOwned + Clone>(line: &[u8]) -> Result<Event<K>> {
    match serde_json::from_slice::<WireEvent<K>>(line).context("decoding a watch event")? {
        WireEvent::Added(o) | WireEvent::Modified(o) => Ok(Event::Apply(o)),
        WireEvent::Deleted(o) => Ok(Event::Delete(o)),
        WireEvent::Bookmark(_) | WireEvent::Error(_) => anyhow::bail!("not an object event"),
    }
}

fn cpu_now() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Run `f`, returning its result and the thread CPU time it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = cpu_now();
    let out = f();
    (out, cpu_now().saturating_sub(start))
}

/// A cache that has listed `pods` pods like `ready` (each with its own name and address),
/// one namespace and one policy.
fn listed_cache(pods: usize, ready: &Value, namespace: &Value, policy: &Value) -> Result<Cache> {
    let mut cache = Cache::default();
    cache.apply(Update::Pod(Event::Init));
    for i in 0..pods {
        let mut pod = ready.clone();
        pod["metadata"]["name"] = json!(format!("other-{i}"));
        let ip = format!("10.{}.{}.{}", 96 + i / 65536, i / 256 % 256, i % 256);
        pod["status"]["podIP"] = json!(ip);
        pod["status"]["podIPs"] = json!([{ "ip": ip }]);
        cache.apply(Update::Pod(Event::InitApply(serde_json::from_value(pod)?)));
    }
    cache.apply(Update::Pod(Event::InitDone));
    for update in [
        Update::Namespace(Event::Init),
        Update::Namespace(Event::InitApply(serde_json::from_value(namespace.clone())?)),
        Update::Namespace(Event::InitDone),
        Update::Policy(Event::Init),
        Update::Policy(Event::InitApply(serde_json::from_value(policy.clone())?)),
        Update::Policy(Event::InitDone),
    ] {
        cache.apply(update);
    }
    Ok(cache)
}

/// Rewrites of the whole cluster state timed at each size (the first write is not).
pub(super) const PERSIST_ROUNDS: usize = 5;

pub(super) fn time_persist(
    pods: usize,
    ready: &Value,
    namespace: &Value,
    policy: &Value,
) -> Result<Persisted> {
    let cache = listed_cache(pods, ready, namespace, policy)?;
    let snapshot = cache.snapshot();
    #[derive(serde::Serialize)]
    struct Shape<'a> {
        namespaces: Vec<&'a podwall_policy::Namespace>,
        pods: Vec<&'a podwall_policy::Pod>,
        policies: Vec<&'a podwall_policy::Policy>,
    }
    let bytes = serde_json::to_vec(&Shape {
        namespaces: snapshot.namespaces.values().collect(),
        pods: snapshot.pods.values().collect(),
        policies: snapshot.policies.values().collect(),
    })?
    .len();
    let dir = tempfile::tempdir()?;
    let store = podwalld::store::Store::open(dir.path())?;
    store.put_cluster(snapshot)?;
    let mut row = Persisted {
        pods,
        bytes,
        cpu: Samples::default(),
        wall: Samples::default(),
    };
    for _ in 0..PERSIST_ROUNDS {
        let started = Instant::now();
        let (written, cpu) = timed(|| store.put_cluster(snapshot));
        written?;
        row.wall.push(started.elapsed());
        row.cpu.push(cpu);
    }
    Ok(row)
}

pub(super) fn time_folds(
    options: &Options,
    life: &[Stage],
    namespace: &Value,
    policy: &Value,
) -> Result<Vec<Timed>> {
    let mut cache = listed_cache(options.cache_pods, &life[4].object, namespace, policy)?;

    let lines: Vec<Vec<u8>> = life.iter().map(|s| event_line(s.kind, &s.object)).collect();
    let mut rows: Vec<Timed> = life
        .iter()
        .enumerate()
        .map(|(i, s)| Timed {
            what: format!("pod {}: {}", i + 1, s.what),
            decode: Samples::default(),
            fold: Samples::default(),
            changes: false,
        })
        .collect();
    for round in 0..options.rounds {
        for (row, line) in rows.iter_mut().zip(&lines) {
            let (event, d) = timed(|| decode::<SlimPod>(line));
            let event = event?;
            let ((changes, _), f) = timed(|| cache.apply(Update::Pod(event)));
            row.decode.push(d);
            row.fold.push(f);
            if round == 0 {
                row.changes = !changes.is_empty();
            }
        }
    }

    // A namespace and a policy changing (a label, a port): decode and fold alternate
    // between two versions, so every fold changes something.
    let mut ns2 = namespace.clone();
    ns2["metadata"]["labels"]["team"] = json!("payments-eu");
    let mut np2 = policy.clone();
    np2["spec"]["egress"][0]["ports"][0]["port"] = json!(5433);
    let mut ns_row = Timed {
        what: "namespace label changed".into(),
        decode: Samples::default(),
        fold: Samples::default(),
        changes: true,
    };
    let mut np_row = Timed {
        what: "networkpolicy changed".into(),
        ..ns_row.clone()
    };
    let ns_lines = [
        event_line("MODIFIED", &ns2),
        event_line("MODIFIED", namespace),
    ];
    let np_lines = [event_line("MODIFIED", &np2), event_line("MODIFIED", policy)];
    for round in 0..options.rounds {
        let line = &ns_lines[round % 2];
        let (event, d) = timed(|| decode::<ApiNamespace>(line));
        let event = event?;
        let (_, f) = timed(|| cache.apply(Update::Namespace(event)));
        ns_row.decode.push(d);
        ns_row.fold.push(f);
        let line = &np_lines[round % 2];
        let (event, d) = timed(|| decode::<ApiPolicy>(line));
        let event = event?;
        let (_, f) = timed(|| cache.apply(Update::Policy(event)));
        np_row.decode.push(d);
        np_row.fold.push(f);
    }
    rows.push(ns_row);
    rows.push(np_row);
    Ok(rows)
}
