//! Pod and Namespace API objects into a [`Pod`] and a [`Namespace`]: addresses, declared
//! ports and phase of a pod, labels of a namespace.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;

use super::policy_api::port_number;
use super::{ContainerPort, Name, Namespace, ObjectKey, Phase, Pod, PodFields, Protocol};
use crate::error::{Errors, ModelError, Problem};

impl Pod {
    /// Converts an API object. Unusable parts (a bad IP, an out-of-range containerPort) are
    /// left out and reported; the pod itself is kept.
    pub fn from_api(pod: &core::Pod) -> (Pod, Vec<ModelError>) {
        let (key, mut errs) = ObjectKey::of_api(&pod.metadata, "pod");
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();

        let mut ips = Vec::new();
        let mut add_ip = |text: &str, field: String, errs: &mut Errors| match text.parse::<IpAddr>()
        {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => errs.push(field, Problem::InvalidIp(text.to_string())),
        };
        if let Some(status) = status {
            if let Some(ip) = &status.pod_ip {
                add_ip(ip, "status.podIP".to_string(), &mut errs);
            }
            for (i, ip) in status.pod_ips.iter().flatten().enumerate() {
                add_ip(&ip.ip, format!("status.podIPs[{i}].ip"), &mut errs);
            }
        }

        let mut ports = Vec::new();
        for (c, container) in spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            for (i, p) in container.ports.iter().flatten().enumerate() {
                let field = format!("spec.containers[{c}].ports[{i}]");
                let protocol = match p.protocol.as_deref() {
                    None => Protocol::Tcp,
                    Some(text) => match text.parse() {
                        Ok(p) => p,
                        Err(problem) => {
                            errs.push(format!("{field}.protocol"), problem);
                            continue;
                        }
                    },
                };
                let Some(port) = port_number(
                    p.container_port,
                    &format!("{field}.containerPort"),
                    &mut errs,
                ) else {
                    continue;
                };
                ports.push(ContainerPort {
                    name: p.name.clone(),
                    port,
                    protocol,
                });
            }
        }

        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Succeeded" | "Failed") => Phase::Finished,
            _ => Phase::Active,
        };
        ips.shrink_to_fit();
        let pod = Pod::from(PodFields {
            labels: pod.metadata.labels.clone().unwrap_or_default().into(),
            node: spec.and_then(|s| s.node_name.as_deref()).map(Name::from),
            ips,
            ports,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase,
            key,
            quarantined: false,
        });
        (pod, errs.into_vec())
    }
}

impl Namespace {
    /// Converts an API object.
    pub fn from_api(ns: &core::Namespace) -> Result<Namespace, ModelError> {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(ModelError {
                kind: "namespace",
                object: String::new(),
                field: "metadata.name".to_string(),
                problem: Problem::Missing,
            });
        }
        Ok(Namespace::new(
            name,
            ns.metadata.labels.clone().unwrap_or_default().into(),
        ))
    }
}
