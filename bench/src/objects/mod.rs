//! What realistic API objects weigh as watch events, and what `podwalld`'s source does with
//! each: the inputs of docs/scale.md. No root: it starts the test API server on the
//! loopback once (for the benchmarks' own pod, as that server stores it) and writes a store
//! in a temporary directory.
//!
//! The objects are `bench/objects/*.json`: a Deployment's pod with one container as the API
//! server returns it once kubelet has reported it running and ready (managedFields of
//! kube-controller-manager and kubelet included), a namespace and a NetworkPolicy applied
//! with `kubectl apply`. [`pod_life`] derives the versions a watch delivers over that pod's
//! life, from creation to deletion. Each event is measured as the API server writes it: one
//! line of compact JSON, `{"type":…,"object":…}`.
//!
//! [`measure`] then replays that life against the daemon's own `sources::kube::Cache` (the
//! pure fold every watch event goes through), holding `cache_pods` other pods, and times the
//! JSON decode kube-rs does and the fold, on the thread's CPU clock. Last, it times what the
//! daemon does at most every 5 s while the cluster changes: write the whole cluster state to
//! its store (`Store::put_cluster`, a file), at `persist_pods` cluster pods.

mod cost;
mod life;

use std::fmt::{self, Write as _};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use cost::{time_folds, time_persist, PERSIST_ROUNDS};
pub use life::{event_line, pod_essentials, pod_life, test_api_pod, Stage};
use life::{metadata_only, size, without_managed_fields};

use crate::stats::Samples;

/// The running, ready pod (also what a LIST returns for it).
pub const POD: &str = include_str!("../../objects/pod.json");
pub const NAMESPACE: &str = include_str!("../../objects/namespace.json");
pub const POLICY: &str = include_str!("../../objects/networkpolicy.json");

/// How long a measurement runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pod lives replayed; each gives one sample of every stage.
    pub rounds: usize,
    /// Other pods in the cache while it folds, so its maps have a realistic depth.
    pub cache_pods: usize,
    /// Cluster sizes, in pods, at which the store write of the cluster state is timed.
    pub persist_pods: Vec<usize>,
}

impl Options {
    pub fn full() -> Self {
        Options {
            rounds: 2000,
            cache_pods: 10_000,
            persist_pods: vec![15_000, 150_000],
        }
    }

    pub fn smoke() -> Self {
        Options {
            rounds: 20,
            cache_pods: 100,
            persist_pods: vec![100],
        }
    }
}

/// One row of the bytes table.
#[derive(Debug, Clone)]
pub struct EventSize {
    pub what: String,
    pub kind: &'static str,
    /// The whole event line, newline included.
    pub event: usize,
    /// Of which `metadata.managedFields` (with its key).
    pub managed_fields: usize,
    /// The object alone, as a LIST item.
    pub object: usize,
}

fn sized(what: String, kind: &'static str, object: &Value) -> EventSize {
    let full = size(object);
    EventSize {
        what,
        kind,
        event: event_line(kind, object).len(),
        managed_fields: full - size(&without_managed_fields(object)),
        object: full,
    }
}

/// CPU time of one stage, per event.
#[derive(Debug, Clone)]
pub struct Timed {
    pub what: String,
    pub decode: Samples,
    pub fold: Samples,
    /// Whether the fold changed the daemon's view of the cluster (a compiler event).
    pub changes: bool,
}

/// Everything `bench-objects` prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub sizes: Vec<EventSize>,
    pub life_event_bytes: usize,
    pub essentials: usize,
    /// The events of a pod's life that change the daemon's view, slimmed to the fields it
    /// keeps: what a proxy that drops the rest would send.
    pub slim_life_bytes: usize,
    pub slim_life_events: usize,
    pub metadata_only: usize,
    pub timed: Vec<Timed>,
    pub persisted: Vec<Persisted>,
}

/// One cluster size's store write.
#[derive(Debug, Clone)]
pub struct Persisted {
    pub pods: usize,
    /// The stored value: the whole cluster state as JSON.
    pub bytes: usize,
    /// Thread CPU and wall time of one `Store::put_cluster`, over `rounds` rewrites.
    pub cpu: Samples,
    pub wall: Samples,
}

pub fn measure(options: &Options) -> Result<Report> {
    let life = pod_life()?;
    let namespace: Value = serde_json::from_str(NAMESPACE).context("namespace.json")?;
    let policy: Value = serde_json::from_str(POLICY).context("networkpolicy.json")?;
    let test_pod = test_api_pod()?;
    let ready = &life[4].object;

    let mut sizes = vec![sized(
        "pod as the benchmarks' test API server serves it".into(),
        "MODIFIED",
        &test_pod,
    )];
    for (i, s) in life.iter().enumerate() {
        sizes.push(sized(
            format!("pod {}: {}", i + 1, s.what),
            s.kind,
            &s.object,
        ));
    }
    sizes.push(sized("namespace".into(), "MODIFIED", &namespace));
    sizes.push(sized("networkpolicy".into(), "MODIFIED", &policy));
    let life_event_bytes = life
        .iter()
        .map(|s| event_line(s.kind, &s.object).len())
        .sum();

    let timed = time_folds(options, &life, &namespace, &policy)?;
    let persisted = options
        .persist_pods
        .iter()
        .map(|&pods| time_persist(pods, &life[4].object, &namespace, &policy))
        .collect::<Result<_>>()?;
    let slim: Vec<usize> = life
        .iter()
        .zip(&timed)
        .filter(|(_, t)| t.changes)
        .map(|(s, _)| event_line(s.kind, &pod_essentials(&s.object)).len())
        .collect();
    Ok(Report {
        options: options.clone(),
        sizes,
        life_event_bytes,
        essentials: event_line("MODIFIED", &pod_essentials(ready)).len(),
        slim_life_bytes: slim.iter().sum(),
        slim_life_events: slim.len(),
        metadata_only: event_line("MODIFIED", &metadata_only(ready)).len(),
        timed,
        persisted,
    })
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Watch events as the API server writes them (one line of compact JSON), bytes\n"
        );
        let _ = writeln!(
            out,
            "| object | event | event bytes | of which managedFields | object bytes (as a LIST item) |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|");
        for s in &self.sizes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                s.what, s.kind, s.event, s.managed_fields, s.object
            );
        }
        let _ = writeln!(
            out,
            "\nOne pod's life: 8 events, {} bytes.",
            self.life_event_bytes
        );
        let _ = writeln!(
            out,
            "The ready pod as a metadata-only (PartialObjectMetadata) event: {} bytes; \
             only the fields podwalld keeps: {} bytes.",
            self.metadata_only, self.essentials
        );
        let _ = writeln!(
            out,
            "Only the {} events of a life that change podwalld's view, with only those fields: \
             {} bytes.\n",
            self.slim_life_events, self.slim_life_bytes
        );
        let _ = writeln!(
            out,
            "podwalld's source per event: decode (serde_json, as kube-rs) and fold \
             (sources::kube::Cache::apply), with {} other pods cached; thread CPU time, \
             µs over {} rounds\n",
            self.options.cache_pods, self.options.rounds
        );
        let _ = writeln!(
            out,
            "| event | decode p50 | decode p99 | fold p50 | fold p99 | changes podwalld's view |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for t in &self.timed {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                t.what,
                us(t.decode.p50()),
                us(t.decode.p99()),
                us(t.fold.p50()),
                us(t.fold.p99()),
                if t.changes { "yes" } else { "no" }
            );
        }
        let _ = writeln!(
            out,
            "\nThe cluster state written to the store (Store::put_cluster, at most every 5 s \
             while the cluster changes), {PERSIST_ROUNDS} rewrites\n"
        );
        let _ = writeln!(
            out,
            "| cluster pods | stored JSON MiB | CPU p50 ms | CPU max ms | wall p50 ms | wall max ms |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
        let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
        for p in &self.persisted {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {} | {} | {} | {} |",
                p.pods,
                p.bytes as f64 / (1024.0 * 1024.0),
                ms(p.cpu.p50()),
                ms(p.cpu.quantile(1.0)),
                ms(p.wall.p50()),
                ms(p.wall.quantile(1.0))
            );
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Namespace as ApiNamespace, Pod as ApiPod};
    use k8s_openapi::api::networking::v1::NetworkPolicy as ApiPolicy;

    use super::cost::decode;
    use super::*;

    #[test]
    fn every_stage_of_a_pod_life_decodes_as_a_pod() {
        for s in pod_life().unwrap() {
            let line = event_line(s.kind, &s.object);
            decode::<ApiPod>(&line).unwrap_or_else(|e| panic!("{}: {e:#}", s.what));
        }
        decode::<ApiNamespace>(&event_line(
            "ADDED",
            &serde_json::from_str(NAMESPACE).unwrap(),
        ))
        .unwrap();
        decode::<ApiPolicy>(&event_line("ADDED", &serde_json::from_str(POLICY).unwrap())).unwrap();
    }

    #[test]
    fn a_pod_life_changes_the_daemon_view_at_creation_node_address_end_and_deletion() {
        let report = measure(&Options::smoke()).unwrap();
        let changed: Vec<bool> = report.timed[..8].iter().map(|t| t.changes).collect();
        assert_eq!(
            changed,
            [true, true, false, true, false, false, true, true],
            "{report}"
        );
    }
}
