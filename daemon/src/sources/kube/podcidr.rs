//! The default conflist's pod range, per node. One ConfigMap serves every node, so the
//! conflist install-cni writes on a node without a CNI config of its own leaves the
//! host-local `ranges` empty (the bridge refuses an ADD until they are there); the daemon
//! fills them from its Node's `spec.podCIDRs` at start, so that each node hands out
//! addresses from its own range. Until then `/readyz` names it (source `cni`). A node's
//! existing config (the primary path: podwall chained into it) is never touched.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::health::Health;

/// How often a fill that could not be done is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Whether `conflist` is podwall's default waiting for its ranges: a `bridge` whose
/// host-local IPAM has `ranges: []`, and `podwall` chained after it.
pub fn waits(conflist: &Value) -> bool {
    let plugins = conflist["plugins"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let podwall = plugins.iter().any(|p| p["type"] == "podwall");
    podwall && plugins.iter().any(|p| empty_ranges(p).is_some())
}

fn empty_ranges(plugin: &Value) -> Option<()> {
    let ipam = &plugin["ipam"];
    let waiting = plugin["type"] == "bridge"
        && ipam["type"] == "host-local"
        && ipam["ranges"].as_array().is_some_and(Vec::is_empty);
    waiting.then_some(())
}

/// `conflist` with the waiting ranges filled: one range set per CIDR (an IPv4 and an IPv6
/// one on a dual-stack node). `None` when it does not wait.
pub fn filled(conflist: &Value, cidrs: &[String]) -> Option<Value> {
    if !waits(conflist) {
        return None;
    }
    let mut out = conflist.clone();
    let ranges: Vec<Value> = cidrs.iter().map(|c| json!([{ "subnet": c }])).collect();
    for plugin in out["plugins"].as_array_mut()?.iter_mut() {
        if empty_ranges(plugin).is_some() {
            plugin["ipam"]["ranges"] = Value::Array(ranges.clone());
        }
    }
    Some(out)
}

/// The node's pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`), each checked to be a CIDR;
/// an error names the first that is not.
pub fn pod_cidrs(node: &Node) -> Result<Vec<String>, String> {
    let spec = node.spec.as_ref();
    let cidrs: Vec<String> = match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(list) if !list.is_empty() => list,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    };
    for cidr in &cidrs {
        let valid = cidr.split_once('/').is_some_and(|(ip, len)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            len.parse::<u8>().is_ok_and(|len| len <= max)
        });
        if !valid {
            return Err(format!("spec.podCIDRs holds {cidr:?}, which is not a CIDR"));
        }
    }
    Ok(cidrs)
}

/// The conflists of `dir` that wait for their ranges.
fn waiting(dir: &Path) -> Vec<(PathBuf, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
        .filter_map(|p| {
            let text = std::fs::read(&p).ok()?;
            let conflist: Value = serde_json::from_slice(&text).ok()?;
            waits(&conflist).then_some((p, conflist))
        })
        .collect()
}

/// Fill the waiting conflists of `dir` from node `node`. `Ok` when none waits (any more).
async fn fill(client: &kube::Client, node: &str, dir: &Path) -> Result<(), String> {
    let files = waiting(dir);
    if files.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = (files.iter())
        .filter_map(|(p, _)| p.file_name()?.to_str().map(str::to_string))
        .collect();
    let why = |what: String| {
        format!(
            "{} waits for this node's pod range: {what}",
            names.join(", ")
        )
    };
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let object = nodes
        .get(node)
        .await
        .map_err(|e| why(format!("cannot read Node {node}: {e}")))?;
    let cidrs = pod_cidrs(&object).map_err(|e| why(format!("Node {node}: {e}")))?;
    if cidrs.is_empty() {
        return Err(why(format!(
            "Node {node} has no spec.podCIDR (the controller manager allocates them with --allocate-node-cidrs); give the node a CNI config of its own, or a pod range"
        )));
    }
    for (path, conflist) in files {
        let Some(full) = filled(&conflist, &cidrs) else {
            continue;
        };
        write(&path, &full).map_err(|e| why(format!("cannot write {}: {e}", path.display())))?;
        info!(file = %path.display(), ranges = ?cidrs, "filled the default CNI config's pod range from the node's spec.podCIDRs");
    }
    Ok(())
}

/// Replace `path` whole: a temp file beside it (an extension the runtime ignores), renamed.
fn write(path: &Path, conflist: &Value) -> std::io::Result<()> {
    let temp = path.with_extension("podwall-tmp");
    let mut text = serde_json::to_vec_pretty(conflist)?;
    text.push(b'\n');
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

/// Fill the waiting conflists of `dir`, trying again every few seconds until it is done;
/// `/readyz` names what stops it meanwhile.
pub async fn keep_filling(
    client: kube::Client,
    node: String,
    dir: PathBuf,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    loop {
        let result = fill(&client, &node, &dir).await;
        let done = result.is_ok();
        health.set_source("cni", result);
        if done {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_conflist() -> Value {
        json!({"cniVersion": "1.0.0", "name": "kubernetes", "plugins": [
            {"type": "bridge", "bridge": "kube-bridge", "isDefaultGateway": true,
             "ipam": {"type": "host-local", "ranges": []}},
            {"type": "podwall"}]})
    }

    #[test]
    fn the_waiting_default_gets_one_range_set_per_cidr_and_nothing_else_changes() {
        let cidrs = ["10.244.3.0/24".to_string(), "fd00:3::/64".to_string()];
        let full = filled(&default_conflist(), &cidrs).unwrap();
        assert_eq!(
            full["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00:3::/64"}]])
        );
        let mut rest = full.clone();
        rest["plugins"][0]["ipam"]["ranges"] = json!([]);
        assert_eq!(rest, default_conflist());
        // Filled once, it waits no more.
        assert!(!waits(&full));
        assert_eq!(filled(&full, &cidrs), None);
    }

    #[test]
    fn only_podwall_s_waiting_default_is_touched() {
        let mut own = default_conflist();
        own["plugins"][0]["ipam"] = json!({"type": "host-local", "subnet": "10.9.0.0/24"});
        assert!(!waits(&own), "a node's own range");
        let mut unchained = default_conflist();
        unchained["plugins"].as_array_mut().unwrap().pop();
        assert!(!waits(&unchained), "not podwall's");
        assert!(!waits(&json!("not a conflist")));
    }

    #[test]
    fn a_node_s_cidrs_come_from_pod_cidrs_or_pod_cidr_and_must_be_cidrs() {
        let node = |spec: Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": spec})).unwrap()
        };
        let both =
            node(json!({"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24", "fd00::/64"]}));
        assert_eq!(pod_cidrs(&both).unwrap(), ["10.1.0.0/24", "fd00::/64"]);
        let old = node(json!({"podCIDR": "10.1.0.0/24"}));
        assert_eq!(pod_cidrs(&old).unwrap(), ["10.1.0.0/24"]);
        assert!(pod_cidrs(&node(json!({}))).unwrap().is_empty());
        for bad in ["10.1.0.0", "10.1.0.0/33", "fd00::/129", "x/8"] {
            let err = pod_cidrs(&node(json!({"podCIDRs": [bad]}))).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
