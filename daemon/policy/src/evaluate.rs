//! The evaluator: is a new connection from A to B on a port and protocol allowed, and why.
//!
//! It reads the policies straight from the [`Snapshot`], with no compilation, so it serves as
//! the reference the compiled ruleset is tested against, and as the engine of
//! `podwalld explain`. It judges the first packet of a connection only: replies to an
//! allowed connection are let through by conntrack (`ct state established,related`), which
//! is the dataplane's business, not this module's.
//!
//! A connection is allowed when the source's egress allows it and the destination's
//! ingress allows it. Each side is judged tier by tier: the Admin tier of
//! ClusterNetworkPolicies first (a rule that Accepts or Denies decides, Pass goes on), then
//! NetworkPolicies (once a pod is isolated, the union of the rules of every isolating policy
//! decides), then the Baseline tier, and a side nothing decided is open.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::ipblock::Family;
use crate::model::{
    Action, Direction, NamespaceScope, Peer, Peers, Pod, PodKey, PolicyKey, PortMatch, PortSpec,
    Protocol, Rule, Snapshot, Tier,
};

mod tiers;
pub use tiers::Decision;

/// One end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A pod by name; its address is picked in the family both ends share (IPv4 first).
    Pod(PodKey),
    /// An address: the pod that owns it if any, otherwise something outside the cluster.
    Ip(IpAddr),
    /// The node itself (kubelet probes and other locally originated traffic): always allowed
    /// as a source; as a destination it is an address no ipBlock names.
    Node,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod(key) => write!(f, "{key}"),
            Endpoint::Ip(ip) => write!(f, "{ip}"),
            Endpoint::Node => f.write_str("node"),
        }
    }
}

/// A question for the evaluator: a new connection from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub from: Endpoint,
    pub to: Endpoint,
    pub protocol: Protocol,
    pub port: u16,
}

/// The answer, with its reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    #[serde(flatten)]
    pub path: Path,
}

/// How the verdict was reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Path {
    /// A pod talking to itself never leaves it: allowed.
    SamePod,
    /// Locally originated traffic from the node: allowed.
    FromNode,
    /// Judged by policy: the source's egress and the destination's ingress.
    Policies { egress: Side, ingress: Side },
}

/// One side of a connection: the source for egress, the destination for ingress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Side {
    /// Not a pod policy applies to (outside the cluster, the node, a hostNetwork pod).
    NotAPod,
    /// A pod that no policy isolates in this direction.
    NotIsolated,
    /// Isolated, and these rules allow the connection.
    Allowed {
        isolated_by: Vec<Isolation>,
        allowed_by: Vec<RuleRef>,
    },
    /// Isolated, and no rule of an isolating policy allows the connection.
    Denied { isolated_by: Vec<Isolation> },
    /// A ClusterNetworkPolicy rule decided: one of the Admin tier (before any
    /// NetworkPolicy), or of the Baseline tier (for a pod no NetworkPolicy isolates).
    Decided(tiers::Decision),
}

impl Side {
    /// Whether this side lets the connection through.
    pub fn is_open(&self) -> bool {
        match self {
            Side::Denied { .. } => false,
            Side::Decided(d) => d.action == Action::Accept,
            _ => true,
        }
    }
}

/// A policy that isolates a pod in a direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Isolation {
    pub policy: PolicyKey,
    /// The policy had errors: it isolates and allows nothing (fail closed).
    pub broken: bool,
}

/// A rule of a policy: `spec.ingress[index]` or `spec.egress[index]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RuleRef {
    pub policy: PolicyKey,
    pub direction: Direction,
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}[{}]",
            self.policy,
            self.direction.field(),
            self.index
        )
    }
}

/// A question the evaluator cannot answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvaluateError {
    #[error("no pod {0}")]
    UnknownPod(PodKey),
    #[error("pod {0} has finished (Succeeded or Failed) and takes no traffic")]
    FinishedPod(PodKey),
}

/// An endpoint as the rules see it: the policed pod (if any) and the address in play.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved<'a> {
    pub pod: Option<&'a Pod>,
    pub ip: Option<IpAddr>,
}

/// Answers a query. Errors only for a pod name that is not in the snapshot or has finished.
pub fn evaluate(snap: &Snapshot, query: &Query) -> Result<Verdict, EvaluateError> {
    let family = family_for(snap, &query.from, &query.to)?;
    let src = resolve(snap, &query.from, family)?;
    let dst = resolve(snap, &query.to, family)?;
    if query.from == Endpoint::Node {
        return Ok(Verdict {
            allowed: true,
            path: Path::FromNode,
        });
    }
    if let (Some(a), Some(b)) = (src.pod, dst.pod) {
        if a.key == b.key {
            return Ok(Verdict {
                allowed: true,
                path: Path::SamePod,
            });
        }
    }
    let egress = side(snap, src, Direction::Egress, src, dst, query);
    let ingress = side(snap, dst, Direction::Ingress, src, dst, query);
    Ok(Verdict {
        allowed: egress.is_open() && ingress.is_open(),
        path: Path::Policies { egress, ingress },
    })
}

/// The family the connection uses: the family of a given address, else the first family
/// both pods have an address in.
fn family_for(
    snap: &Snapshot,
    from: &Endpoint,
    to: &Endpoint,
) -> Result<Option<Family>, EvaluateError> {
    for ep in [from, to] {
        if let Endpoint::Ip(ip) = ep {
            return Ok(Some(Family::of(ip)));
        }
    }
    let families = |ep: &Endpoint| -> Result<Vec<Family>, EvaluateError> {
        match ep {
            Endpoint::Pod(key) => Ok(lookup(snap, key)?.ips.iter().map(Family::of).collect()),
            _ => Ok(Family::ALL.to_vec()),
        }
    };
    let (a, b) = (families(from)?, families(to)?);
    Ok(Family::ALL
        .into_iter()
        .find(|f| a.contains(f) && b.contains(f))
        .or_else(|| a.first().or(b.first()).copied()))
}

fn lookup<'a>(snap: &'a Snapshot, key: &PodKey) -> Result<&'a Pod, EvaluateError> {
    let pod = snap
        .pods
        .get(key)
        .ok_or_else(|| EvaluateError::UnknownPod(key.clone()))?;
    if pod.phase == crate::model::Phase::Finished {
        return Err(EvaluateError::FinishedPod(key.clone()));
    }
    Ok(pod)
}

fn resolve<'a>(
    snap: &'a Snapshot,
    ep: &Endpoint,
    family: Option<Family>,
) -> Result<Resolved<'a>, EvaluateError> {
    Ok(match ep {
        Endpoint::Pod(key) => {
            let pod = lookup(snap, key)?;
            let ip = family.and_then(|f| pod.ip(f));
            Resolved {
                // hostNetwork pods are seen by their address only.
                pod: pod.is_policed().then_some(pod),
                ip,
            }
        }
        Endpoint::Ip(ip) => Resolved {
            pod: snap.pod_by_ip(ip),
            ip: Some(*ip),
        },
        Endpoint::Node => Resolved {
            pod: None,
            ip: None,
        },
    })
}

fn side(
    snap: &Snapshot,
    me: Resolved<'_>,
    direction: Direction,
    src: Resolved<'_>,
    dst: Resolved<'_>,
    query: &Query,
) -> Side {
    let Some(pod) = me.pod else {
        return Side::NotAPod;
    };
    let peer = match direction {
        Direction::Ingress => src,
        Direction::Egress => dst,
    };
    let ask = tiers::Ask {
        pod,
        direction,
        peer,
        dst,
        protocol: query.protocol,
        port: query.port,
    };
    if let Some(decision) = tiers::decide(snap, Tier::Admin, &ask) {
        return Side::Decided(decision);
    }
    match network_policies(snap, &ask) {
        Side::NotIsolated => match tiers::decide(snap, Tier::Baseline, &ask) {
            Some(decision) => Side::Decided(decision),
            None => Side::NotIsolated,
        },
        side => side,
    }
}

/// The NetworkPolicy tier: the union of the rules of every policy that isolates the pod.
fn network_policies(snap: &Snapshot, ask: &tiers::Ask<'_>) -> Side {
    let tiers::Ask {
        pod,
        direction,
        peer,
        dst,
        protocol,
        port,
    } = *ask;
    let mut isolated_by = Vec::new();
    let mut allowed_by = Vec::new();
    for policy in snap.policies.values() {
        if policy.key.namespace != pod.key.namespace
            || !policy.isolates(direction)
            || !policy.pod_selector.matches(&pod.labels)
        {
            continue;
        }
        isolated_by.push(Isolation {
            policy: policy.key.clone(),
            broken: policy.broken,
        });
        for (index, rule) in policy.rules(direction).iter().enumerate() {
            if rule_matches(snap, rule, peer, dst, protocol, port) {
                allowed_by.push(RuleRef {
                    policy: policy.key.clone(),
                    direction,
                    index,
                });
            }
        }
    }
    match (isolated_by.is_empty(), allowed_by.is_empty()) {
        (true, _) => Side::NotIsolated,
        (false, false) => Side::Allowed {
            isolated_by,
            allowed_by,
        },
        (false, true) => Side::Denied { isolated_by },
    }
}

/// Whether `rule` matches a connection with `peer` on the other side; named ports resolve
/// on `dst`, the destination of the connection, whichever direction the rule is for.
pub(crate) fn rule_matches(
    snap: &Snapshot,
    rule: &Rule,
    peer: Resolved<'_>,
    dst: Resolved<'_>,
    protocol: Protocol,
    port: u16,
) -> bool {
    let peer_ok = match &rule.peers {
        Peers::Any => true,
        Peers::Only(peers) => peers.iter().any(|p| peer_matches(snap, p, peer)),
    };
    peer_ok
        && (rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|p| port_matches(snap, p, dst, protocol, port)))
}

/// The pods an endpoint's address stands for: one, normally. With stale data (a reused
/// address whose old pod's delete is late) several, and a selector or a named port matches
/// the address when it matches any of them, as the kernel's address sets do.
pub(crate) fn holders<'a>(snap: &'a Snapshot, end: Resolved<'a>) -> Vec<&'a Pod> {
    match end.ip {
        Some(ip) => snap
            .pods
            .values()
            .filter(|p| p.is_policed() && p.ips.contains(&ip))
            .collect(),
        None => end.pod.into_iter().collect(),
    }
}

pub(crate) fn peer_matches(snap: &Snapshot, peer: &Peer, other: Resolved<'_>) -> bool {
    match peer {
        Peer::Pods { namespaces, pods } => holders(snap, other).into_iter().any(|p| {
            let ns_ok = match namespaces {
                NamespaceScope::Named(ns) => p.key.namespace == *ns,
                NamespaceScope::Matching(sel) => {
                    sel.matches(&snap.namespace_labels(&p.key.namespace))
                }
            };
            ns_ok && pods.matches(&p.labels)
        }),
        Peer::Block(block) => other.ip.is_some_and(|ip| block.contains(&ip)),
    }
}

pub(crate) fn port_matches(
    snap: &Snapshot,
    pm: &PortMatch,
    dst: Resolved<'_>,
    protocol: Protocol,
    port: u16,
) -> bool {
    pm.protocol == protocol
        && match &pm.port {
            PortSpec::Any => true,
            PortSpec::Range { first, last } => (*first..=*last).contains(&port),
            PortSpec::Named(name) => holders(snap, dst)
                .into_iter()
                .any(|p| p.named_port(name, protocol) == Some(port)),
        }
}

#[cfg(test)]
mod tests;
