//! Synthetic policies for benchmarks: the same five shapes wherever a large world is built
//! (the compile benchmark, the dataplane benchmark), so their figures describe one world.
//! Pure: policy model values only.

use std::collections::BTreeSet;

use podwall_policy::model::{NamespaceScope, Peer, Peers, PolicyFields, PortMatch, PortSpec, Rule};
use podwall_policy::{IpBlock, Policy, PolicyKey, Protocol, Requirement, Selector};

/// The five policy shapes of the compile benchmark: same-namespace pods on a port, every pod
/// of labelled namespaces on a named port, an ipBlock with an except, egress to a tier
/// anywhere on two ports, any source on a UDP range. Policy `j` of namespace `ns{ns}`
/// selects pods labelled `app{j % apps}`.
pub fn policy(ns: usize, j: usize, apps: usize) -> Policy {
    let namespace = format!("ns{ns}");
    let app = |k: usize| Selector::from_labels([("app", format!("app{k}").as_str())]);
    let tcp = |p: u16| PortMatch {
        protocol: Protocol::Tcp,
        port: PortSpec::Range { first: p, last: p },
    };
    let only = |peer: Peer| Peers::Only(vec![peer]);
    let (ingress, egress) = match j % 5 {
        0 => (
            vec![Rule {
                peers: only(Peer::Pods {
                    namespaces: NamespaceScope::Named(namespace.clone()),
                    pods: app((j + 1) % 20),
                }),
                ports: vec![tcp(80)],
            }],
            vec![],
        ),
        1 => (
            vec![Rule {
                peers: only(Peer::Pods {
                    namespaces: NamespaceScope::Matching(Selector::from_labels([(
                        "team",
                        format!("team{}", ns % 10).as_str(),
                    )])),
                    pods: Selector::everything(),
                }),
                ports: vec![PortMatch {
                    protocol: Protocol::Tcp,
                    port: PortSpec::Named("http".into()),
                }],
            }],
            vec![],
        ),
        2 => (
            vec![Rule {
                peers: only(Peer::Block(IpBlock::new(
                    format!("10.{}.0.0/16", ns % 4).parse().expect("valid cidr"),
                    vec![format!("10.{}.{}.0/24", ns % 4, j % 256)
                        .parse()
                        .expect("valid cidr")],
                ))),
                ports: vec![],
            }],
            vec![],
        ),
        3 => (
            vec![],
            vec![Rule {
                peers: only(Peer::Pods {
                    namespaces: NamespaceScope::Matching(Selector::everything()),
                    pods: Selector::new([Requirement::In {
                        key: "tier".into(),
                        values: BTreeSet::from(["t1".to_string()]),
                    }]),
                }),
                ports: vec![tcp(5432), tcp(6379)],
            }],
        ),
        _ => (
            vec![Rule {
                peers: Peers::Any,
                ports: vec![PortMatch {
                    protocol: Protocol::Udp,
                    port: PortSpec::Range {
                        first: 5000,
                        last: 5100,
                    },
                }],
            }],
            vec![],
        ),
    };
    Policy::from(PolicyFields {
        key: PolicyKey::new(namespace, format!("policy{j}")),
        pod_selector: app(j % apps),
        isolates_ingress: !ingress.is_empty(),
        isolates_egress: !egress.is_empty(),
        ingress,
        egress,
        broken: false,
        log_allowed: false,
    })
}
