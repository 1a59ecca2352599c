//! A NetworkPolicy as the evaluator and the compiler read it: which pods it selects, which
//! directions it isolates, and its rules of peers and ports, with every default applied.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{PolicyKey, Shared};
use crate::error::Problem;
use crate::ipblock::IpBlock;
use crate::selector::Selector;

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

/// A NetworkPolicy after defaulting and validation, shared by the copies of the cluster.
pub type Policy = Shared<PolicyFields>;

/// What a [`Policy`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFields {
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
    /// Annotated `podwall.io/log: allow`: what its rules allow is logged too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_allowed: bool,
}

/// The annotation that turns on allow logging for a policy, and its value.
pub const LOG_ANNOTATION: (&str, &str) = ("podwall.io/log", "allow");

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
        Policy::from(PolicyFields {
            key,
            pod_selector: Selector::everything(),
            isolates_ingress: true,
            isolates_egress: true,
            ingress: Vec::new(),
            egress: Vec::new(),
            broken: true,
            log_allowed: false,
        })
    }
}
