//! A ClusterNetworkPolicy API object into a [`ClusterPolicy`]. There is no k8s-openapi type
//! for it (it is a CRD): [`ClusterNetworkPolicyApi`] mirrors its schema, read from the
//! network-policy-api repository (v1beta1; v1alpha2 has the same fields).
//!
//! Fields podwall does not know are kept (`other`), so that a peer or protocol of a newer
//! version is seen for what it is and fails closed as the API asks, rather than being read as
//! an empty selector that matches everything.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;
use serde_json::Value;

use super::cluster::{
    Action, ClusterPeer, ClusterPolicy, ClusterPolicyFields, ClusterRule, PodsSelector, Tier,
};
use super::{PortMatch, PortSpec, Protocol};
use crate::error::{Errors, ModelError, Problem};
use crate::ipblock::{parse_cidr, IpBlock};
use crate::selector::Selector;

/// The API group, and the versions podwall reads.
pub const GROUP: &str = "policy.networking.k8s.io";
pub const VERSIONS: [&str; 2] = ["v1beta1", "v1alpha2"];

/// A ClusterNetworkPolicy as the API serves it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClusterNetworkPolicyApi {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SpecApi,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SpecApi {
    pub tier: Option<String>,
    pub priority: Option<i64>,
    pub subject: Option<SubjectApi>,
    #[serde(default)]
    pub ingress: Vec<RuleApi>,
    #[serde(default)]
    pub egress: Vec<RuleApi>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SubjectApi {
    pub namespaces: Option<LabelSelector>,
    pub pods: Option<NamespacedPodApi>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPodApi {
    pub namespace_selector: Option<LabelSelector>,
    pub pod_selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuleApi {
    #[serde(default)]
    pub name: String,
    pub action: Option<String>,
    /// `from` (ingress) or `to` (egress).
    #[serde(alias = "to")]
    pub from: Option<Vec<PeerApi>>,
    pub protocols: Option<Vec<ProtocolApi>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PeerApi {
    pub namespaces: Option<LabelSelector>,
    pub pods: Option<NamespacedPodApi>,
    pub networks: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolApi {
    pub tcp: Option<ProtocolPortApi>,
    pub udp: Option<ProtocolPortApi>,
    pub sctp: Option<ProtocolPortApi>,
    pub destination_named_port: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPortApi {
    pub destination_port: Option<PortApi>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PortApi {
    pub number: Option<i64>,
    pub range: Option<RangeApi>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RangeApi {
    pub start: i64,
    pub end: i64,
}

impl ClusterPolicy {
    /// Converts an API object, with the errors found. Errors in a rule make that rule fail
    /// closed; errors in tier, priority or subject make the policy the broken stand-in.
    pub fn from_api(api: &ClusterNetworkPolicyApi) -> (ClusterPolicy, Vec<ModelError>) {
        let name = api.metadata.name.clone().unwrap_or_default();
        let mut errs = Errors::new("clusternetworkpolicy", name.clone());
        if name.is_empty() {
            errs.push("metadata.name", Problem::Missing);
        }
        let spec = &api.spec;
        let tier = match spec.tier.as_deref() {
            Some("Admin") => Some(Tier::Admin),
            Some("Baseline") => Some(Tier::Baseline),
            Some(other) => {
                errs.push(
                    "spec.tier",
                    Problem::Malformed(format!(
                        "unknown tier {other:?}, expected Admin or Baseline"
                    )),
                );
                None
            }
            None => {
                errs.push("spec.tier", Problem::Missing);
                None
            }
        };
        let priority = match spec.priority {
            Some(p) if (0..=1000).contains(&p) => u16::try_from(p).ok(),
            Some(p) => {
                errs.push(
                    "spec.priority",
                    Problem::Malformed(format!("{p} is outside 0-1000")),
                );
                None
            }
            None => {
                errs.push("spec.priority", Problem::Missing);
                None
            }
        };
        let subject = subject(spec.subject.as_ref(), &mut errs);
        let broken = tier.is_none() || priority.is_none() || subject.is_none();
        let [ingress, egress] = [
            ("spec.ingress", "from", &spec.ingress),
            ("spec.egress", "to", &spec.egress),
        ]
        .map(|(list, peers, rules)| {
            (rules.iter().enumerate())
                .map(|(i, r)| {
                    rule(
                        r,
                        &format!("{list}[{i}]"),
                        peers,
                        list == "spec.egress",
                        broken,
                        &mut errs,
                    )
                })
                .collect::<Vec<_>>()
        });
        let policy = ClusterPolicy::from(ClusterPolicyFields {
            name,
            tier: tier.unwrap_or(Tier::Admin),
            priority: priority.unwrap_or(0),
            subject: subject.unwrap_or_else(everything),
            ingress,
            egress,
            broken,
        });
        (policy, errs.into_vec())
    }
}

impl ClusterPolicy {
    /// The stand-in for an object whose spec does not even have the API's shape (a field of
    /// the wrong type): the Admin tier, every pod, no rule, so everything is denied (fail
    /// closed), with the error that says why.
    pub fn from_malformed(name: &str, problem: String) -> (ClusterPolicy, Vec<ModelError>) {
        let (mut policy, _) = ClusterPolicy::from_api(&ClusterNetworkPolicyApi::default());
        policy.name = name.to_string();
        let error = ModelError {
            kind: "clusternetworkpolicy",
            object: name.to_string(),
            field: "spec".into(),
            problem: Problem::Malformed(problem),
        };
        (policy, vec![error])
    }
}

fn everything() -> PodsSelector {
    PodsSelector {
        namespaces: Selector::everything(),
        pods: Selector::everything(),
    }
}

fn subject(api: Option<&SubjectApi>, errs: &mut Errors) -> Option<PodsSelector> {
    let Some(api) = api else {
        errs.push("spec.subject", Problem::Missing);
        return None;
    };
    match (&api.namespaces, &api.pods, api.other.keys().next()) {
        (Some(ns), None, None) => Some(PodsSelector {
            namespaces: Selector::from_api(ns, "spec.subject.namespaces", errs)?,
            pods: Selector::everything(),
        }),
        (None, Some(pods), None) => pods_selector(pods, "spec.subject.pods", errs),
        (_, _, Some(other)) => {
            errs.push(
                "spec.subject",
                Problem::Malformed(format!("unknown field {other:?}")),
            );
            None
        }
        _ => {
            errs.push(
                "spec.subject",
                Problem::Malformed("exactly one of namespaces and pods".into()),
            );
            None
        }
    }
}

fn pods_selector(api: &NamespacedPodApi, field: &str, errs: &mut Errors) -> Option<PodsSelector> {
    let namespaces = match &api.namespace_selector {
        Some(s) => Selector::from_api(s, &format!("{field}.namespaceSelector"), errs),
        None => Some(Selector::everything()),
    };
    let pods = match &api.pod_selector {
        Some(s) => Selector::from_api(s, &format!("{field}.podSelector"), errs),
        None => {
            errs.push(format!("{field}.podSelector"), Problem::Missing);
            None
        }
    };
    Some(PodsSelector {
        namespaces: namespaces?,
        pods: pods?,
    })
}

/// One rule. `egress` says which peers the direction has (`networks` is egress only);
/// `broken_policy` makes an Accept rule match nothing, since where it applies is unknown.
fn rule(
    api: &RuleApi,
    field: &str,
    peers_field: &str,
    egress: bool,
    broken_policy: bool,
    errs: &mut Errors,
) -> ClusterRule {
    let before = errs.len();
    let action = match api.action.as_deref() {
        Some("Accept") => Action::Accept,
        Some("Deny") => Action::Deny,
        Some("Pass") => Action::Pass,
        other => {
            let problem = match other {
                Some(a) => Problem::Malformed(format!(
                    "unknown action {a:?}, expected Accept, Deny or Pass"
                )),
                None => Problem::Missing,
            };
            errs.push(format!("{field}.action"), problem);
            // Fail closed: deny.
            Action::Deny
        }
    };
    let mut fails_closed: Option<String> = None;
    let mut peers = Vec::new();
    match api.from.as_deref() {
        None | Some([]) => errs.push(format!("{field}.{peers_field}"), Problem::Missing),
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                let pf = format!("{field}.{peers_field}[{i}]");
                match peer(p, &pf, egress, errs) {
                    Ok(Some(peer)) => peers.push(peer),
                    Ok(None) => {}
                    Err(why) => {
                        fails_closed.get_or_insert(format!("{pf}: {why}"));
                    }
                }
            }
        }
    }
    let mut ports = Vec::new();
    for (i, p) in api.protocols.iter().flatten().enumerate() {
        let pf = format!("{field}.protocols[{i}]");
        if let Err(why) = protocol(p, &pf, &mut ports, errs) {
            fails_closed.get_or_insert(format!("{pf}: {why}"));
        }
    }
    if errs.len() > before {
        fails_closed.get_or_insert(format!("{field}: invalid (see the errors)"));
    }
    if broken_policy && action == Action::Accept {
        fails_closed.get_or_insert("the policy is broken".to_string());
    }
    ClusterRule {
        name: api.name.clone(),
        action,
        peers,
        ports,
        fails_closed,
    }
}

/// A peer; `Err` for one podwall cannot match (a field it does not know or support), which
/// makes the rule fail closed.
fn peer(
    api: &PeerApi,
    field: &str,
    egress: bool,
    errs: &mut Errors,
) -> Result<Option<ClusterPeer>, String> {
    if let Some(other) = api.other.keys().next() {
        return Err(format!("peer field {other:?} is not supported"));
    }
    match (&api.namespaces, &api.pods, &api.networks) {
        (Some(ns), None, None) => Ok(Selector::from_api(ns, &format!("{field}.namespaces"), errs)
            .map(|namespaces| {
                ClusterPeer::Pods(PodsSelector {
                    namespaces,
                    pods: Selector::everything(),
                })
            })),
        (None, Some(pods), None) => {
            Ok(pods_selector(pods, &format!("{field}.pods"), errs).map(ClusterPeer::Pods))
        }
        (None, None, Some(networks)) if egress => {
            let mut blocks = Vec::new();
            for (i, cidr) in networks.iter().enumerate() {
                match parse_cidr(cidr) {
                    Some(net) => blocks.push(IpBlock::new(net, Vec::new())),
                    _ => errs.push(
                        format!("{field}.networks[{i}]"),
                        Problem::InvalidCidr(cidr.clone()),
                    ),
                }
            }
            Ok(Some(ClusterPeer::Networks(blocks)))
        }
        (None, None, Some(_)) => Err("networks is an egress peer".to_string()),
        (None, None, None) => Err("a peer with no field podwall knows".to_string()),
        _ => {
            errs.push(
                field.to_string(),
                Problem::Malformed("exactly one peer field".into()),
            );
            Ok(None)
        }
    }
}

/// A `protocols` entry into port matches; `Err` for an entry podwall cannot match.
fn protocol(
    api: &ProtocolApi,
    field: &str,
    out: &mut Vec<PortMatch>,
    errs: &mut Errors,
) -> Result<(), String> {
    if let Some(other) = api.other.keys().next() {
        return Err(format!("protocol field {other:?} is not supported"));
    }
    let given = [
        (Protocol::Tcp, &api.tcp, "tcp"),
        (Protocol::Udp, &api.udp, "udp"),
        (Protocol::Sctp, &api.sctp, "sctp"),
    ];
    let mut set = 0;
    for (protocol, ports, name) in given {
        let Some(ports) = ports else { continue };
        set += 1;
        let port = match &ports.destination_port {
            None => PortSpec::Any,
            Some(PortApi {
                number: Some(n),
                range: None,
            }) => match u16::try_from(*n) {
                Ok(n) if n > 0 => PortSpec::Range { first: n, last: n },
                _ => {
                    errs.push(
                        format!("{field}.{name}.destinationPort.number"),
                        Problem::PortOutOfRange(i32::try_from(*n).unwrap_or(i32::MAX)),
                    );
                    return Ok(());
                }
            },
            Some(PortApi {
                number: None,
                range: Some(r),
            }) => match (u16::try_from(r.start), u16::try_from(r.end)) {
                (Ok(first), Ok(last)) if first > 0 && first < last => {
                    PortSpec::Range { first, last }
                }
                _ => {
                    errs.push(
                        format!("{field}.{name}.destinationPort.range"),
                        Problem::Malformed(format!(
                            "{}-{}: start must be 1-65535 and below end",
                            r.start, r.end
                        )),
                    );
                    return Ok(());
                }
            },
            Some(_) => {
                errs.push(
                    format!("{field}.{name}.destinationPort"),
                    Problem::Malformed("exactly one of number and range".into()),
                );
                return Ok(());
            }
        };
        out.push(PortMatch { protocol, port });
    }
    if let Some(name) = &api.destination_named_port {
        set += 1;
        // A named port names a containerPort of any protocol.
        out.extend(Protocol::ALL.map(|protocol| PortMatch {
            protocol,
            port: PortSpec::Named(name.clone()),
        }));
    }
    match set {
        0 => Err("a protocol with no field podwall knows".to_string()),
        1 => Ok(()),
        _ => {
            errs.push(
                field.to_string(),
                Problem::Malformed("exactly one of tcp, udp, sctp and destinationNamedPort".into()),
            );
            Ok(())
        }
    }
}
