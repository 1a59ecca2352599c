//! The objects and the pod's life: the versions a watch of all pods delivers for one
//! Deployment pod, each as the API server writes it, and the smaller forms the design in
//! docs/scale.md would send instead.

use anyhow::{Context, Result};
use podwall_tests::apiserver::ApiServer;
use podwall_tests::manifests::PodManifest;
use serde_json::{json, Value};

use super::POD;

/// One watch event of the pod's life.
#[derive(Debug, Clone)]
pub struct Stage {
    pub what: &'static str,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// The events a watch of all pods delivers for one Deployment pod, created to deleted.
/// Derived from [`POD`] (stage 5) by the changes each writer makes.
pub fn pod_life() -> Result<Vec<Stage>> {
    let ready: Value = serde_json::from_str(POD).context("bench/objects/pod.json")?;
    let mut rv: u64 = 48_213_373;
    let mut next_rv = || {
        rv += 1;
        json!(rv.to_string())
    };

    // 1. The ReplicaSet controller creates it: spec after admission, no node, no status yet
    //    but the phase and QoS class the API server defaults; only its own managedFields.
    let mut created = ready.clone();
    created["metadata"]["resourceVersion"] = next_rv();
    take_managed(&mut created, "kubelet");
    remove(&mut created["spec"], "nodeName");
    created["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});

    // 2. kube-scheduler binds it (pods/binding): the node, and the PodScheduled condition.
    let mut scheduled = created.clone();
    scheduled["metadata"]["resourceVersion"] = next_rv();
    scheduled["spec"]["nodeName"] = ready["spec"]["nodeName"].clone();
    scheduled["status"]["conditions"] = json!([condition(
        "PodScheduled",
        "True",
        "2025-03-11T09:14:27Z",
        None
    )]);

    // 3. kubelet's first status: host addresses, start time, containers being created.
    let mut pending = scheduled.clone();
    pending["metadata"]["resourceVersion"] = next_rv();
    let mut kubelet = managed(&ready, "kubelet");
    kubelet["time"] = json!("2025-03-11T09:14:28Z");
    remove(&mut kubelet["fieldsV1"]["f:status"], "f:podIP");
    remove(&mut kubelet["fieldsV1"]["f:status"], "f:podIPs");
    push_managed(&mut pending, kubelet.clone());
    let not_ready = Some("ContainersNotReady");
    let status = &mut pending["status"];
    status["conditions"] = json!([
        condition(
            "PodReadyToStartContainers",
            "False",
            "2025-03-11T09:14:28Z",
            None
        ),
        condition("Initialized", "True", "2025-03-11T09:14:28Z", None),
        condition("Ready", "False", "2025-03-11T09:14:28Z", not_ready),
        condition(
            "ContainersReady",
            "False",
            "2025-03-11T09:14:28Z",
            not_ready
        ),
        condition("PodScheduled", "True", "2025-03-11T09:14:27Z", None),
    ]);
    status["hostIP"] = ready["status"]["hostIP"].clone();
    status["hostIPs"] = ready["status"]["hostIPs"].clone();
    status["startTime"] = ready["status"]["startTime"].clone();
    status["containerStatuses"] = json!([{
        "name": "checkout",
        "state": {"waiting": {"reason": "ContainerCreating"}},
        "lastState": {},
        "ready": false,
        "restartCount": 0,
        "image": "registry.example/shop/checkout:1.14.2",
        "imageID": "",
        "started": false
    }]);

    // 4. The sandbox has its address and the container runs; the readiness probe has not
    //    passed yet.
    let mut running = ready.clone();
    running["metadata"]["resourceVersion"] = next_rv();
    let status = &mut running["status"];
    status["conditions"][2] = condition("Ready", "False", "2025-03-11T09:14:28Z", not_ready);
    status["conditions"][3] = condition(
        "ContainersReady",
        "False",
        "2025-03-11T09:14:28Z",
        not_ready,
    );
    status["containerStatuses"][0]["ready"] = json!(false);

    // 5. The readiness probe passes: the object in bench/objects/pod.json.
    let mut serving = ready.clone();
    serving["metadata"]["resourceVersion"] = next_rv();

    // 6. The ReplicaSet controller deletes it (scale-down, rollout): graceful deletion.
    let mut terminating = serving.clone();
    terminating["metadata"]["resourceVersion"] = next_rv();
    terminating["metadata"]["deletionTimestamp"] = json!("2025-03-12T16:02:44Z");
    terminating["metadata"]["deletionGracePeriodSeconds"] = json!(30);

    // 7. kubelet reports the container stopped and the pod terminal.
    let mut stopped = terminating.clone();
    stopped["metadata"]["resourceVersion"] = next_rv();
    let status = &mut stopped["status"];
    status["phase"] = json!("Succeeded");
    let at = "2025-03-12T16:02:45Z";
    status["conditions"][0] = condition("PodReadyToStartContainers", "False", at, None);
    status["conditions"][2] = condition("Ready", "False", at, Some("PodCompleted"));
    status["conditions"][3] = condition("ContainersReady", "False", at, Some("PodCompleted"));
    let container = &mut status["containerStatuses"][0];
    container["ready"] = json!(false);
    container["started"] = json!(false);
    container["state"] = json!({"terminated": {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": "2025-03-11T09:14:31Z",
        "finishedAt": at,
        "containerID": ready["status"]["containerStatuses"][0]["containerID"].clone()
    }});

    // 8. kubelet's final delete (grace period 0): the last state, once more.
    let mut deleted = stopped.clone();
    deleted["metadata"]["resourceVersion"] = next_rv();

    Ok(vec![
        stage("created by the ReplicaSet controller", "ADDED", created),
        stage("bound to a node by the scheduler", "MODIFIED", scheduled),
        stage("kubelet: pending, containers creating", "MODIFIED", pending),
        stage("kubelet: address assigned, running", "MODIFIED", running),
        stage("kubelet: ready", "MODIFIED", serving),
        stage("deletion requested (grace 30 s)", "MODIFIED", terminating),
        stage("kubelet: stopped, phase Succeeded", "MODIFIED", stopped),
        stage("deleted", "DELETED", deleted),
    ])
}

fn stage(what: &'static str, kind: &'static str, object: Value) -> Stage {
    Stage { what, kind, object }
}

fn condition(kind: &str, status: &str, at: &str, reason: Option<&str>) -> Value {
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": at});
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    c
}

fn remove(object: &mut Value, key: &str) {
    if let Some(map) = object.as_object_mut() {
        map.shift_remove(key);
    }
}

fn managed(object: &Value, manager: &str) -> Value {
    object["metadata"]["managedFields"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["manager"] == manager))
        .cloned()
        .unwrap_or(Value::Null)
}

fn take_managed(object: &mut Value, manager: &str) {
    if let Some(list) = object["metadata"]["managedFields"].as_array_mut() {
        list.retain(|e| e["manager"] != manager);
    }
}

fn push_managed(object: &mut Value, entry: Value) {
    if let Some(list) = object["metadata"]["managedFields"].as_array_mut() {
        list.push(entry);
    }
}

/// One watch event as the API server writes it: a line of compact JSON.
pub fn event_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("a serde_json::Value always serialises");
    line.push(b'\n');
    line
}

/// Bytes of the compact JSON of `value`.
pub(super) fn size(value: &Value) -> usize {
    serde_json::to_vec(value)
        .expect("a serde_json::Value always serialises")
        .len()
}

/// What the daemon keeps of a pod, as compact JSON: the fields a per-node proxy would
/// have to pass on (name, namespace, labels, node, hostNetwork, named ports, phase, IPs).
pub fn pod_essentials(pod: &Value) -> Value {
    let ports: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .collect();
    let mut slim = json!({
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "labels": pod["metadata"]["labels"],
        },
        "spec": {"nodeName": pod["spec"]["nodeName"], "containers": [{"ports": ports}]},
        "status": {"phase": pod["status"]["phase"], "podIPs": pod["status"]["podIPs"]},
    });
    for part in ["spec", "status"] {
        if let Some(map) = slim[part].as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
    }
    slim
}

/// An object with only its metadata, as a `PartialObjectMetadata` watch would send it.
pub(super) fn metadata_only(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

pub(super) fn without_managed_fields(object: &Value) -> Value {
    let mut o = object.clone();
    remove(&mut o["metadata"], "managedFields");
    o
}

/// The pod the benchmarks' worlds put on other nodes, as the test API server stores and
/// serves it (`bench/src/peers/world.rs`, remote pod 0).
pub fn test_api_pod() -> Result<Value> {
    let api = ApiServer::start();
    let yaml = PodManifest::new("rem0", "r0")
        .labels(&[("app", "a0")])
        .remote(
            "pwt-remote-0",
            &["10.64.0.1".parse().expect("a literal address")],
        )
        .yaml();
    let stored = api
        .create_yaml(&yaml)
        .map_err(|e| anyhow::anyhow!("the test API server refused the pod: {e:?}"))?;
    api.stop();
    stored
        .into_iter()
        .next()
        .context("the test API server returned no object")
}
