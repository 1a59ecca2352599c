//! A Pod as the watch decodes it: only what enforcement reads (the key, labels, node, host
//! network, phase, addresses and container ports, and the resourceVersion the watch resumes
//! from). Everything else a Pod carries (managedFields, annotations, volumes, the
//! containers' images and environments, the status' conditions) is skipped by the decoder
//! instead of being built and dropped: a list page of a large cluster is megabytes of it.
//!
//! The result is a `k8s_openapi` Pod with those fields filled, so `Pod::from_api` converts
//! it as it converts any other.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Pod as ApiPod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

/// A Pod decoded with only the fields enforcement reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlimPod(pub ApiPod);

impl k8s_openapi::Resource for SlimPod {
    const API_VERSION: &'static str = <ApiPod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <ApiPod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <ApiPod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <ApiPod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <ApiPod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <ApiPod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for SlimPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

// The wire shapes of the fields kept; serde skips every other field of the object. `null`
// is read as absent, as the API server may send it for an empty list.

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: Option<WireMeta>,
    #[serde(default)]
    spec: Option<WireSpec>,
    #[serde(default)]
    status: Option<WireStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    node_name: Option<String>,
    host_network: Option<bool>,
    containers: Option<Vec<WireContainer>>,
}

#[derive(Deserialize)]
struct WireContainer {
    name: Option<String>,
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIP>>,
}

impl<'de> Deserialize<'de> for SlimPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let metadata = wire
            .metadata
            .map_or_else(ObjectMeta::default, |m| ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                resource_version: m.resource_version,
                labels: m.labels,
                ..ObjectMeta::default()
            });
        let spec = wire.spec.map(|s| PodSpec {
            node_name: s.node_name,
            host_network: s.host_network,
            containers: (s.containers.into_iter().flatten())
                .map(|c| Container {
                    name: c.name.unwrap_or_default(),
                    ports: c.ports,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
        let status = wire.status.map(|s| PodStatus {
            phase: s.phase,
            pod_ip: s.pod_ip,
            pod_ips: s.pod_ips,
            ..PodStatus::default()
        });
        Ok(SlimPod(ApiPod {
            metadata,
            spec,
            status,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podwall_policy::model::{ContainerPort as PolicyPort, Phase};
    use podwall_policy::{Pod, Protocol};

    /// A Pod as a real API server sends it, with the fields enforcement does not read.
    const FULL: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": "web-7d4b9c-x2x9q", "namespace": "shop", "uid": "0f6c-11",
        "resourceVersion": "48213", "generateName": "web-7d4b9c-",
        "creationTimestamp": "2026-01-02T03:04:05Z",
        "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-02T03:00:00Z"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "uid": "aa", "controller": true}],
        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
          "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
          "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {}}}}}]
      },
      "spec": {
        "nodeName": "n2", "restartPolicy": "Always", "serviceAccountName": "default",
        "volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
        "containers": [
          {"name": "web", "image": "nginx:1.27", "env": [{"name": "A", "value": "b"}],
           "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090}],
           "resources": {"limits": {"cpu": "500m"}}, "volumeMounts": [{"name": "token", "mountPath": "/var/run"}]},
          {"name": "dns", "image": "coredns", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]}
        ],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]
      },
      "status": {
        "phase": "Running", "hostIP": "192.168.1.2", "podIP": "10.244.1.5",
        "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:09Z"}],
        "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "nginx:1.27", "imageID": "x", "state": {"running": {"startedAt": "2026-01-02T03:04:08Z"}}}],
        "startTime": "2026-01-02T03:04:05Z", "qosClass": "Burstable"
      }
    }"#;

    #[test]
    fn a_full_pod_decodes_to_what_enforcement_reads() {
        let slim: SlimPod = serde_json::from_str(FULL).unwrap();
        let meta = &slim.0.metadata;
        assert_eq!(meta.resource_version.as_deref(), Some("48213"));
        assert!(meta.managed_fields.is_none() && meta.annotations.is_none());
        let (pod, errors) = Pod::from_api(&slim.0);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(pod.key.to_string(), "shop/web-7d4b9c-x2x9q");
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(pod.labels.len(), 2);
        assert_eq!(pod.node.as_deref(), Some("n2"));
        assert_eq!(
            pod.ips,
            [
                "10.244.1.5".parse::<std::net::IpAddr>().unwrap(),
                "fd00:10:244:1::5".parse().unwrap()
            ]
        );
        assert_eq!(pod.phase, Phase::Active);
        assert!(!pod.host_network);
        let port = |name: Option<&str>, port, protocol| PolicyPort {
            name: name.map(str::to_string),
            port,
            protocol,
        };
        assert_eq!(
            pod.ports,
            [
                port(Some("http"), 8080, Protocol::Tcp),
                port(None, 9090, Protocol::Tcp),
                port(Some("dns"), 53, Protocol::Udp),
            ]
        );
        assert_eq!(pod.named_port("http", Protocol::Tcp), Some(8080));
    }

    #[test]
    fn the_slim_pod_converts_as_the_full_one_does() {
        let full: ApiPod = serde_json::from_str(FULL).unwrap();
        let slim: SlimPod = serde_json::from_str(FULL).unwrap();
        assert_eq!(Pod::from_api(&slim.0).0, Pod::from_api(&full).0);
    }

    #[test]
    fn absent_and_null_fields_decode_as_empty() {
        for text in [
            r#"{"metadata": {"name": "a"}}"#,
            r#"{"metadata": {"name": "a", "labels": null}, "spec": {"containers": null}, "status": null}"#,
            r#"{"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "ports": null}]}}"#,
        ] {
            let slim: SlimPod = serde_json::from_str(text).unwrap();
            let (pod, _) = Pod::from_api(&slim.0);
            assert_eq!(pod.key.to_string(), "default/a", "{text}");
            assert!(pod.labels.is_empty() && pod.ips.is_empty() && pod.ports.is_empty());
        }
    }

    #[test]
    fn a_hostnetwork_or_finished_pod_keeps_what_says_so() {
        let slim: SlimPod = serde_json::from_str(
            r#"{"metadata": {"name": "a", "namespace": "x"}, "spec": {"hostNetwork": true, "containers": []},
                "status": {"phase": "Succeeded"}}"#,
        )
        .unwrap();
        let (pod, _) = Pod::from_api(&slim.0);
        assert!(pod.host_network);
        assert_eq!(pod.phase, Phase::Finished);
    }

    #[test]
    fn a_field_of_the_wrong_type_is_an_error_not_a_panic() {
        for text in [
            r#"{"metadata": {"name": 7}}"#,
            r#"{"metadata": {"labels": {"a": 1}}}"#,
            r#"{"spec": {"containers": [{"ports": [{"containerPort": "x"}]}]}}"#,
            r#""pod""#,
        ] {
            assert!(serde_json::from_str::<SlimPod>(text).is_err(), "{text}");
        }
    }
}
