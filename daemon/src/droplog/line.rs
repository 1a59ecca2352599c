//! The drop log's lines: one JSON object a line, a contract (README "Drop log"). Pure.

use std::net::IpAddr;

use podwall_policy::{Direction, PodKey, PolicyKey, PolicyTier};
use serde::Serialize;

use super::packet::{protocol_name, Flow};

/// `external` stands for an address no pod holds.
pub const EXTERNAL: &str = "external";

/// A packet a chain judged: denied at the end of a chain (by `policies`, the chain's
/// isolating policies, none of which allowed it), denied by a ClusterNetworkPolicy's Deny
/// rule, or allowed by a logged policy's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub allowed: bool,
    pub direction: Direction,
    /// The tier of the chain whose rule or end decided.
    pub tier: PolicyTier,
    pub policies: Vec<PolicyKey>,
    /// The `name` of the ClusterNetworkPolicy rule that decided, when it has one.
    pub rule: Option<String>,
    pub flow: Flow,
    pub src_pod: Option<PodKey>,
    pub dst_pod: Option<PodKey>,
}

impl Judged {
    /// The pod whose chain judged the packet: the destination's ingress or the source's
    /// egress. Its lines share one rate.
    pub fn judged_pod(&self) -> String {
        let (pod, ip) = match self.direction {
            Direction::Ingress => (&self.dst_pod, self.flow.dst),
            Direction::Egress => (&self.src_pod, self.flow.src),
        };
        pod.as_ref()
            .map_or_else(|| ip.to_string(), ToString::to_string)
    }
}

#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub time: &'a str,
    pub node: &'a str,
    /// `deny` or `allow`.
    pub verdict: &'static str,
    /// `ingress` or `egress`: the side whose chain judged it.
    pub direction: &'static str,
    pub protocol: String,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// `Admin`, `NetworkPolicy` or `Baseline`: the tier that decided.
    pub tier: &'static str,
    /// Each policy the verdict comes from: `namespace/name`, a ClusterNetworkPolicy by its
    /// name.
    pub policies: Vec<String>,
    /// The `name` of the ClusterNetworkPolicy rule that decided, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `namespace/name`, or `external`.
    pub pod: String,
}

/// Lines of `pod` held back in the second before `time`.
#[derive(Debug, Serialize)]
pub struct Suppressed<'a> {
    pub time: &'a str,
    pub node: &'a str,
    pub pod: &'a str,
    pub suppressed: u64,
}

pub fn line<'a>(judged: &Judged, time: &'a str, node: &'a str) -> Line<'a> {
    let endpoint = |addr, port, pod: &Option<PodKey>| Endpoint {
        addr,
        port,
        pod: pod
            .as_ref()
            .map_or_else(|| EXTERNAL.to_string(), ToString::to_string),
    };
    let flow = &judged.flow;
    Line {
        time,
        node,
        verdict: if judged.allowed { "allow" } else { "deny" },
        direction: match judged.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        },
        protocol: protocol_name(flow.protocol),
        src: endpoint(flow.src, flow.ports.map(|p| p.0), &judged.src_pod),
        dst: endpoint(flow.dst, flow.ports.map(|p| p.1), &judged.dst_pod),
        tier: judged.tier.as_str(),
        policies: (judged.policies.iter())
            .map(|policy| match judged.tier.cluster() {
                // Cluster-scoped: the key's namespace is empty.
                Some(_) => policy.name.to_string(),
                None => policy.to_string(),
            })
            .collect(),
        rule: judged.rule.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_segment_names_both_ends_and_the_isolating_policies() {
        let judged = Judged {
            allowed: false,
            direction: Direction::Ingress,
            tier: PolicyTier::NetworkPolicy,
            policies: vec![
                PolicyKey::new("shop", "db"),
                PolicyKey::new("shop", "deny-all"),
            ],
            rule: None,
            flow: Flow {
                protocol: 6,
                src: "192.0.2.9".parse().unwrap(),
                dst: "10.1.0.7".parse().unwrap(),
                ports: Some((40960, 5432)),
            },
            src_pod: None,
            dst_pod: Some(PodKey::new("shop", "db-0")),
        };
        assert_eq!(judged.judged_pod(), "shop/db-0");
        let text = serde_json::to_string(&line(&judged, "T", "n1")).unwrap();
        assert_eq!(
            text,
            r#"{"time":"T","node":"n1","verdict":"deny","direction":"ingress","protocol":"tcp","src":{"addr":"192.0.2.9","port":40960,"pod":"external"},"dst":{"addr":"10.1.0.7","port":5432,"pod":"shop/db-0"},"tier":"NetworkPolicy","policies":["shop/db","shop/deny-all"]}"#
        );
        let egress_of_unknown = Judged {
            direction: Direction::Egress,
            flow: Flow {
                ports: None,
                protocol: 1,
                ..judged.flow
            },
            ..judged
        };
        assert_eq!(egress_of_unknown.judged_pod(), "192.0.2.9");
        let text = serde_json::to_string(&line(&egress_of_unknown, "T", "n1")).unwrap();
        assert!(
            text.contains(r#""protocol":"icmp","src":{"addr":"192.0.2.9","pod":"external"}"#),
            "{text}"
        );
    }

    #[test]
    fn a_cluster_policys_deny_names_its_tier_the_policy_by_its_name_and_the_rule() {
        let judged = Judged {
            allowed: false,
            direction: Direction::Ingress,
            tier: PolicyTier::Admin,
            policies: vec![PolicyKey::new("", "guard")],
            rule: Some("no-other".into()),
            flow: Flow {
                protocol: 6,
                src: "10.1.0.9".parse().unwrap(),
                dst: "10.1.0.7".parse().unwrap(),
                ports: Some((40960, 7000)),
            },
            src_pod: Some(PodKey::new("app", "other")),
            dst_pod: Some(PodKey::new("app", "web")),
        };
        let text = serde_json::to_string(&line(&judged, "T", "n1")).unwrap();
        assert!(
            text.ends_with(r#""tier":"Admin","policies":["guard"],"rule":"no-other"}"#),
            "{text}"
        );
        let unnamed = Judged {
            tier: PolicyTier::Baseline,
            rule: None,
            ..judged
        };
        let text = serde_json::to_string(&line(&unnamed, "T", "n1")).unwrap();
        assert!(
            text.ends_with(r#""tier":"Baseline","policies":["guard"]}"#),
            "{text}"
        );
    }
}
