//! Our own Pod, Namespace and NetworkPolicy types, converted once from the k8s-openapi
//! objects at the edge, with every Kubernetes default applied and every field validated.
//!
//! Nothing past this module sees an API object or a raw string from a manifest. A policy
//! that fails validation is not dropped: [`Policy::from_api`] returns a fail-closed
//! stand-in (it isolates what the policy would isolate and allows nothing) together with
//! the errors, so that a typo never opens a hole.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::error::{Errors, ModelError, Problem};
use crate::ipblock::{Family, IpBlock};
use crate::selector::{Labels, Selector};

/// The label the API server puts on every namespace (since Kubernetes 1.21), so that
/// `namespaceSelector` can pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespace a manifest without `metadata.namespace` lands in, as with `kubectl apply`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

/// Identity of a pod.
pub type PodKey = ObjectKey;
/// Identity of a NetworkPolicy.
pub type PolicyKey = ObjectKey;

impl ObjectKey {
    /// A key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `namespace/name`; both parts must be non-empty.
    pub fn parse(text: &str) -> Option<Self> {
        let (ns, name) = text.split_once('/')?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(ObjectKey::new(ns, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Layer-4 protocols a NetworkPolicy can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// All protocols, in a fixed order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The API spelling: `TCP`, `UDP`, `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = Problem;

    /// Exactly as the API server accepts them: upper case only.
    fn from_str(s: &str) -> Result<Self, Problem> {
        match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(Problem::UnknownProtocol(other.to_string())),
        }
    }
}

/// A port a container declares; named ones are what named policy ports resolve to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// The lifecycle phase of a pod, as far as policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Pending, Running, Unknown or unset: the pod may send and receive.
    Active,
    /// Succeeded or Failed: the pod is ignored and its IPs may already belong to another pod.
    Finished,
}

/// A pod as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub key: PodKey,
    pub labels: Labels,
    /// `spec.nodeName`; only pods of the compiling node get dispatch entries.
    pub node: Option<String>,
    /// `status.podIPs` (or `status.podIP`), at most one per family in practice.
    pub ips: Vec<IpAddr>,
    /// The `containerPorts` of the pod's containers.
    pub ports: Vec<ContainerPort>,
    /// hostNetwork pods share the node's addresses: never targets, never matched by selectors.
    pub host_network: bool,
    pub phase: Phase,
}

impl Pod {
    /// A running, pod-network pod with the given IPs and labels; the rest empty.
    pub fn new(key: PodKey, labels: Labels, ips: Vec<IpAddr>) -> Self {
        Pod {
            key,
            labels,
            node: None,
            ips,
            ports: Vec::new(),
            host_network: false,
            phase: Phase::Active,
        }
    }

    /// Whether policy applies to this pod at all: as a target and as a selector peer.
    pub fn is_policed(&self) -> bool {
        !self.host_network && self.phase == Phase::Active
    }

    /// The number a named port resolves to on this pod for `protocol`, if any container
    /// declares it.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }

    /// The pod's first address of `family`.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }
}

/// A namespace and its labels (always including [`NAMESPACE_NAME_LABEL`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    /// A namespace with `labels` plus the name label the API server adds.
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Namespace { name, labels }
    }
}

/// Which pods a peer's selectors cover.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NamespaceScope {
    /// No namespaceSelector: the policy's own namespace.
    Named(String),
    /// A namespaceSelector (empty = every namespace).
    Matching(Selector),
}

/// One entry of `from` / `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// podSelector and/or namespaceSelector: pods matching `pods` in namespaces in `namespaces`.
    Pods {
        namespaces: NamespaceScope,
        pods: Selector,
    },
    /// ipBlock: addresses in the cidr and outside every except, pod IPs included.
    Block(IpBlock),
}

/// The peers of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peers {
    /// `from`/`to` missing or empty: every source or destination, inside or outside the cluster.
    Any,
    /// At least one peer; the rule matches if any of them does.
    Only(Vec<Peer>),
}

/// What a policy port entry matches, within its protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortSpec {
    /// No `port`: every port of the protocol.
    Any,
    /// `port` alone (first == last) or `port`..=`endPort`.
    Range { first: u16, last: u16 },
    /// A named port, resolved on the destination pod from its containerPorts.
    Named(String),
}

/// One entry of `ports`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub port: PortSpec,
}

/// One ingress or egress rule: traffic matches when a peer and a port entry both do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub peers: Peers,
    /// Empty: every port of every protocol.
    pub ports: Vec<PortMatch>,
}

/// Direction of traffic relative to the pod a policy selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The spec field of this direction's rules.
    pub fn field(self) -> &'static str {
        match self {
            Direction::Ingress => "spec.ingress",
            Direction::Egress => "spec.egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// A NetworkPolicy after defaulting and validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub key: PolicyKey,
    /// Pods of `key.namespace` the policy applies to (empty = all of them).
    pub pod_selector: Selector,
    /// The effective policyTypes contain Ingress.
    pub isolates_ingress: bool,
    /// The effective policyTypes contain Egress.
    pub isolates_egress: bool,
    /// Ingress rules; kept only when `isolates_ingress`, since Kubernetes ignores them otherwise.
    pub ingress: Vec<Rule>,
    /// Egress rules; kept only when `isolates_egress`.
    pub egress: Vec<Rule>,
    /// The manifest had errors: this is the fail-closed stand-in, with no rules.
    pub broken: bool,
}

impl Policy {
    /// Whether the policy isolates its pods for `direction`.
    pub fn isolates(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolates_ingress,
            Direction::Egress => self.isolates_egress,
        }
    }

    /// The rules for `direction`.
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The stand-in for a policy whose spec could not be read at all: it isolates every pod
    /// of its namespace in both directions and allows nothing.
    pub fn fail_closed(key: PolicyKey) -> Self {
        Policy {
            key,
            pod_selector: Selector::everything(),
            isolates_ingress: true,
            isolates_egress: true,
            ingress: Vec::new(),
            egress: Vec::new(),
            broken: true,
        }
    }

    /// Converts an API object. With errors, the policy returned is the fail-closed stand-in:
    /// it selects what the spec's podSelector selects (every pod of the namespace if the
    /// selector itself is broken), isolates the directions the policyTypes give (both if
    /// they are broken) and has no rules.
    pub fn from_api(np: &net::NetworkPolicy) -> (Policy, Vec<ModelError>) {
        let key = ObjectKey::new(
            np.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            np.metadata.name.clone().unwrap_or_default(),
        );
        let mut errs = Errors::new("networkpolicy", key.to_string());
        if key.name.is_empty() {
            errs.push("metadata.name", Problem::Missing);
        }
        let default_spec = net::NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&default_spec);

        let pod_selector = match &spec.pod_selector {
            None => Some(Selector::everything()),
            Some(s) => Selector::from_api(s, "spec.podSelector", &mut errs),
        };

        // policyTypes defaulting as the API server does it: an empty or missing list means
        // Ingress, plus Egress when there is at least one egress rule (`egress: []` adds nothing).
        let (mut ingress_type, mut egress_type) = (false, false);
        let mut types_ok = true;
        match spec.policy_types.as_deref() {
            None | Some([]) => {
                ingress_type = true;
                egress_type = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
            Some(types) => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ingress_type = true,
                        "Egress" => egress_type = true,
                        other => {
                            types_ok = false;
                            errs.push(
                                format!("spec.policyTypes[{i}]"),
                                Problem::UnknownPolicyType(other.to_string()),
                            );
                        }
                    }
                }
            }
        }

        // Rules of both directions are validated even when their type is not in effect, as
        // the API server would reject them too.
        let ingress: Vec<Rule> = spec
            .ingress
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, r)| {
                let field = format!("spec.ingress[{i}]");
                convert_rule(
                    r.from.as_deref(),
                    r.ports.as_deref(),
                    &key.namespace,
                    &field,
                    "from",
                    &mut errs,
                )
            })
            .collect();
        let egress: Vec<Rule> = spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, r)| {
                let field = format!("spec.egress[{i}]");
                convert_rule(
                    r.to.as_deref(),
                    r.ports.as_deref(),
                    &key.namespace,
                    &field,
                    "to",
                    &mut errs,
                )
            })
            .collect();

        if let (true, Some(pod_selector)) = (errs.is_empty(), &pod_selector) {
            let policy = Policy {
                key,
                pod_selector: pod_selector.clone(),
                isolates_ingress: ingress_type,
                isolates_egress: egress_type,
                ingress: if ingress_type { ingress } else { Vec::new() },
                egress: if egress_type { egress } else { Vec::new() },
                broken: false,
            };
            return (policy, Vec::new());
        }
        let policy = Policy {
            pod_selector: pod_selector.unwrap_or_else(Selector::everything),
            isolates_ingress: ingress_type || !types_ok,
            isolates_egress: egress_type || !types_ok,
            ingress: Vec::new(),
            egress: Vec::new(),
            broken: true,
            key,
        };
        (policy, errs.into_vec())
    }
}

impl TryFrom<&net::NetworkPolicy> for Policy {
    type Error = Vec<ModelError>;

    /// Strict conversion: any error rejects the policy (see [`Policy::from_api`] for the
    /// fail-closed one enforcement uses).
    fn try_from(np: &net::NetworkPolicy) -> Result<Self, Self::Error> {
        match Policy::from_api(np) {
            (policy, errors) if errors.is_empty() => Ok(policy),
            (_, errors) => Err(errors),
        }
    }
}

fn convert_rule(
    peers: Option<&[net::NetworkPolicyPeer]>,
    ports: Option<&[net::NetworkPolicyPort]>,
    namespace: &str,
    field: &str,
    peers_field: &str,
    errs: &mut Errors,
) -> Option<Rule> {
    let before = errs.len();
    let peers = match peers {
        None | Some([]) => Peers::Any,
        Some(list) => Peers::Only(
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    convert_peer(p, namespace, &format!("{field}.{peers_field}[{i}]"), errs)
                })
                .collect(),
        ),
    };
    let ports = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, p)| convert_port(p, &format!("{field}.ports[{i}]"), errs))
        .collect();
    (errs.len() == before).then_some(Rule { peers, ports })
}

fn convert_peer(
    peer: &net::NetworkPolicyPeer,
    namespace: &str,
    field: &str,
    errs: &mut Errors,
) -> Option<Peer> {
    match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            errs.push(field, Problem::IpBlockWithSelector);
            None
        }
        (Some(block), None, None) => {
            IpBlock::from_api(block, &format!("{field}.ipBlock"), errs).map(Peer::Block)
        }
        (None, None, None) => {
            errs.push(field, Problem::EmptyPeer);
            None
        }
        (None, pods, namespaces) => {
            let pods = match pods {
                None => Some(Selector::everything()),
                Some(s) => Selector::from_api(s, &format!("{field}.podSelector"), errs),
            };
            let namespaces = match namespaces {
                None => Some(NamespaceScope::Named(namespace.to_string())),
                Some(s) => Selector::from_api(s, &format!("{field}.namespaceSelector"), errs)
                    .map(NamespaceScope::Matching),
            };
            Some(Peer::Pods {
                namespaces: namespaces?,
                pods: pods?,
            })
        }
    }
}

fn convert_port(
    port: &net::NetworkPolicyPort,
    field: &str,
    errs: &mut Errors,
) -> Option<PortMatch> {
    let protocol = match port.protocol.as_deref() {
        None => Some(Protocol::Tcp),
        Some(p) => match p.parse() {
            Ok(p) => Some(p),
            Err(problem) => {
                errs.push(format!("{field}.protocol"), problem);
                None
            }
        },
    };
    let spec = match (&port.port, port.end_port) {
        (None, None) => Some(PortSpec::Any),
        (None, Some(_)) => {
            errs.push(format!("{field}.endPort"), Problem::EndPortWithoutPort);
            None
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                errs.push(
                    format!("{field}.endPort"),
                    Problem::EndPortWithNamedPort(name.clone()),
                );
                None
            } else if !is_port_name(name) {
                errs.push(
                    format!("{field}.port"),
                    Problem::InvalidPortName(name.clone()),
                );
                None
            } else {
                Some(PortSpec::Named(name.clone()))
            }
        }
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(*n, &format!("{field}.port"), errs);
            let last = match end {
                None => first,
                Some(e) => port_number(e, &format!("{field}.endPort"), errs),
            };
            match (first, last) {
                (Some(first), Some(last)) if last < first => {
                    errs.push(
                        format!("{field}.endPort"),
                        Problem::EndPortBelowPort {
                            port: first,
                            end_port: last,
                        },
                    );
                    None
                }
                (Some(first), Some(last)) => Some(PortSpec::Range { first, last }),
                _ => None,
            }
        }
    };
    Some(PortMatch {
        protocol: protocol?,
        port: spec?,
    })
}

fn port_number(n: i32, field: &str, errs: &mut Errors) -> Option<u16> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Some(p),
        _ => {
            errs.push(field, Problem::PortOutOfRange(n));
            None
        }
    }
}

/// IANA service name rules, as the API server checks named ports: 1 to 15 lower-case
/// letters, digits and inner single hyphens, with at least one letter.
pub(crate) fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

impl Pod {
    /// Converts an API object. Unusable parts (a bad IP, an out-of-range containerPort) are
    /// left out and reported; the pod itself is kept.
    pub fn from_api(pod: &core::Pod) -> (Pod, Vec<ModelError>) {
        let key = ObjectKey::new(
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let mut errs = Errors::new("pod", key.to_string());
        if key.name.is_empty() {
            errs.push("metadata.name", Problem::Missing);
        }
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
        let pod = Pod {
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            ips,
            ports,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase,
            key,
        };
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
            ns.metadata.labels.clone().unwrap_or_default(),
        ))
    }
}

/// Everything the evaluator and the compiler need, already validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<PodKey, Pod>,
    pub policies: BTreeMap<PolicyKey, Policy>,
}

impl Snapshot {
    /// An address that node `node` assigned (to a pod of that node) belongs to that pod: the
    /// claim of a pod of another node on it is stale (its delete is late) and is dropped, so
    /// that the node judges the address by its own pod alone, as its dispatch maps do.
    pub fn drop_stale_claims_on(&mut self, node: &str) {
        let local: BTreeSet<IpAddr> = self
            .pods
            .values()
            .filter(|p| p.node.as_deref() == Some(node) && p.is_policed())
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        if local.is_empty() {
            return;
        }
        for pod in self.pods.values_mut() {
            if pod.node.as_deref() != Some(node) {
                pod.ips.retain(|ip| !local.contains(ip));
            }
        }
    }

    /// Labels of namespace `name`; a namespace without an object still has its name label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Namespace::new(name, Labels::new()).labels,
        }
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, ns: Namespace) {
        self.namespaces.insert(ns.name.clone(), ns);
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&mut self, pod: Pod) {
        self.pods.insert(pod.key.clone(), pod);
    }

    /// Adds or replaces a policy.
    pub fn upsert_policy(&mut self, policy: Policy) {
        self.policies.insert(policy.key.clone(), policy);
    }

    /// The policed pod that owns `ip`, if any (the first by key if stale data gives two).
    pub fn pod_by_ip(&self, ip: &IpAddr) -> Option<&Pod> {
        self.pods
            .values()
            .find(|p| p.is_policed() && p.ips.contains(ip))
    }

    /// Namespaces that have pods or objects, sorted.
    pub fn namespace_names(&self) -> BTreeSet<String> {
        self.namespaces
            .keys()
            .cloned()
            .chain(self.pods.keys().map(|k| k.namespace.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(spec: serde_json::Value) -> net::NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn bad_fields_are_reported_with_object_and_field() {
        use serde_json::json;
        let cases = [
            (
                json!({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "endPort 80 is below port 90",
            ),
            (
                json!({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "endPort cannot be used with named port \"http\"",
            ),
            (
                json!({"egress": [{"ports": [{"endPort": 80}]}]}),
                "spec.egress[0].ports[0].endPort",
                "endPort needs a numeric port",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
                "spec.ingress[0].ports[0].protocol",
                "unknown protocol \"ICMP\", expected TCP, UDP or SCTP",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 80, "protocol": "tcp"}]}]}),
                "spec.ingress[0].ports[0].protocol",
                "unknown protocol \"tcp\", expected TCP, UDP or SCTP",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 0}]}]}),
                "spec.ingress[0].ports[0].port",
                "port 0 is outside 1-65535",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 80, "endPort": 70000}]}]}),
                "spec.ingress[0].ports[0].endPort",
                "port 70000 is outside 1-65535",
            ),
            (
                json!({"ingress": [{"ports": [{"port": "HTTP"}]}]}),
                "spec.ingress[0].ports[0].port",
                "invalid port name \"HTTP\"",
            ),
            (
                json!({"ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
                "spec.ingress[0].from[0]",
                "a peer needs podSelector, namespaceSelector or ipBlock",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}]}]}),
                "spec.ingress[0].from[0]",
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            ),
            (
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "11.0.0.0/16"]}}]}]}),
                "spec.egress[0].to[0].ipBlock.except[1]",
                "11.0.0.0/16 is not inside cidr 10.0.0.0/8",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "300.0.0.0/8"}}]}]}),
                "spec.ingress[0].from[0].ipBlock.cidr",
                "invalid cidr \"300.0.0.0/8\"",
            ),
            (
                json!({"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}}]}]}),
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator",
                "unknown operator \"Has\", expected In, NotIn, Exists or DoesNotExist",
            ),
            (
                json!({"policyTypes": ["Ingress", "Sideways"]}),
                "spec.policyTypes[1]",
                "unknown policy type \"Sideways\", expected Ingress or Egress",
            ),
        ];
        for (spec, field, message) in cases {
            let (policy, errors) = Policy::from_api(&np(spec.clone()));
            assert!(policy.broken, "{spec}");
            assert!(
                policy.ingress.is_empty() && policy.egress.is_empty(),
                "{spec}"
            );
            let first = errors
                .first()
                .unwrap_or_else(|| panic!("no error for {spec}"));
            assert_eq!(first.field, field, "{spec}");
            assert_eq!(
                first.to_string(),
                format!("networkpolicy x/p: {field}: {message}"),
                "{spec}"
            );
        }
    }

    #[test]
    fn broken_policy_isolates_the_directions_its_types_give() {
        let (p, _) = Policy::from_api(&np(serde_json::json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "ICMP"}]}],
        })));
        assert!(p.broken && p.isolates_egress && !p.isolates_ingress);
        assert_eq!(p.pod_selector, Selector::from_labels([("app", "db")]));
        let (p, _) = Policy::from_api(&np(serde_json::json!({"policyTypes": ["Sideways"]})));
        assert!(
            p.isolates_egress && p.isolates_ingress,
            "unknown types isolate both ways"
        );
    }

    #[test]
    fn valid_policy_converts_strictly() {
        let policy = Policy::try_from(&np(serde_json::json!({
            "podSelector": {},
            "ingress": [{"ports": [{"port": 80, "endPort": 90, "protocol": "UDP"}, {"port": "http"}]}],
        })))
        .unwrap();
        assert_eq!(
            policy.ingress[0].ports,
            vec![
                PortMatch {
                    protocol: Protocol::Udp,
                    port: PortSpec::Range {
                        first: 80,
                        last: 90
                    }
                },
                PortMatch {
                    protocol: Protocol::Tcp,
                    port: PortSpec::Named("http".into())
                },
            ]
        );
        assert_eq!(policy.ingress[0].peers, Peers::Any);
        assert!(!policy.broken && policy.isolates_ingress && !policy.isolates_egress);
    }
}
