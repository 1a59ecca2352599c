//! Fuzzing of the policy model's inputs: manifest text through `manifests::load` (YAML, JSON,
//! the API objects' conversions) and on into the compiler (`explain`'s matrix of the same
//! manifests is fuzzed in the daemon's `tests/fuzz.rs`); and, with
//! proptest, NetworkPolicy objects whose fields take values a manifest rarely holds (ports
//! and end ports across the whole i32 range, CIDRs at every prefix length, odd selector
//! operators), through `Policy::from_api` and the compiler. Every case only has to return
//! without a panic; the mutation driver and the environment variables that run it longer are
//! in `fuzz/driver.rs`, the corpus in `fuzz/corpus/manifests/`.

#[path = "../../../fuzz/driver.rs"]
mod driver;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podwall_policy::{
    compile, evaluate, manifests, Endpoint, PodKey, Policy, Protocol, Query, Snapshot,
};
use proptest::prelude::*;

/// Pods the fuzzed manifests are loaded next to, so that their policies select something.
const WORLD: &str = include_str!("../../../fuzz/corpus/manifests/world.yaml");
const NODE: &str = "node-1";

#[test]
fn manifests_load_never_panics() {
    let world = world();
    driver::run("manifests", 1_500, |bytes| {
        // The daemon and `explain` read manifests as UTF-8 text.
        let text = String::from_utf8_lossy(bytes);
        // ClusterNetworkPolicies too, for the tiers of the evaluator.
        let options = manifests::Options {
            cluster_policies: true,
        };
        let loaded = manifests::load_with(options, [("fuzz.yaml", &*text)]);
        let _ = loaded.has_fatal_errors();
        let _: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        let mut snapshot = world.clone();
        snapshot.merge(loaded.snapshot);
        let _ = compile(&snapshot, NODE);
        for (from, to) in [("nsa/a1", "nsa/a2"), ("nsb/b1", "nsa/a1")] {
            let query = Query {
                from: Endpoint::Pod(PodKey::parse(from).expect("a pod key")),
                to: Endpoint::Pod(PodKey::parse(to).expect("a pod key")),
                protocol: Protocol::Tcp,
                port: 80,
            };
            let _ = evaluate(&snapshot, &query);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_network_policy_converts_or_fails_closed(np in network_policy()) {
        let (policy, errors) = Policy::from_api(&np);
        prop_assert_eq!(policy.broken, !errors.is_empty());
        if policy.broken {
            prop_assert!(policy.ingress.is_empty() && policy.egress.is_empty());
        }
        let mut snapshot = world();
        snapshot.upsert_policy(policy);
        let _ = compile(&snapshot, NODE);
    }
}

/// The world's pods and namespaces, parsed once: YAML in a debug build costs more than all
/// the rest of a case.
fn world() -> Snapshot {
    let loaded = manifests::load([("world.yaml", WORLD)]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.snapshot
}

fn network_policy() -> impl Strategy<Value = net::NetworkPolicy> {
    (
        prop::option::of(prop_oneof![Just("nsa"), Just("nsb"), Just("")]),
        prop::option::of(selector()),
        prop::option::of(prop::collection::vec(rule(), 0..3)),
        prop::option::of(prop::collection::vec(rule(), 0..3)),
        prop::option::of(prop::collection::vec(
            prop_oneof![Just("Ingress"), Just("Egress"), Just("ingress"), Just("")],
            0..3,
        )),
    )
        .prop_map(
            |(namespace, pod_selector, ingress, egress, types)| net::NetworkPolicy {
                metadata: ObjectMeta {
                    name: Some("fuzz".into()),
                    namespace: namespace.map(str::to_string),
                    ..ObjectMeta::default()
                },
                spec: Some(net::NetworkPolicySpec {
                    pod_selector,
                    policy_types: types.map(|t| t.into_iter().map(str::to_string).collect()),
                    ingress: ingress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(from, ports)| net::NetworkPolicyIngressRule { from, ports })
                            .collect()
                    }),
                    egress: egress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(to, ports)| net::NetworkPolicyEgressRule { to, ports })
                            .collect()
                    }),
                }),
            },
        )
}

type ApiRule = (
    Option<Vec<net::NetworkPolicyPeer>>,
    Option<Vec<net::NetworkPolicyPort>>,
);

fn rule() -> impl Strategy<Value = ApiRule> {
    (
        prop::option::of(prop::collection::vec(peer(), 0..3)),
        prop::option::of(prop::collection::vec(port(), 0..3)),
    )
}

fn peer() -> impl Strategy<Value = net::NetworkPolicyPeer> {
    (
        prop::option::of(ip_block()),
        prop::option::of(selector()),
        prop::option::of(selector()),
    )
        .prop_map(
            |(ip_block, namespace_selector, pod_selector)| net::NetworkPolicyPeer {
                ip_block,
                namespace_selector,
                pod_selector,
            },
        )
}

fn port() -> impl Strategy<Value = net::NetworkPolicyPort> {
    let number = prop_oneof![
        Just(0),
        Just(1),
        Just(65_535),
        Just(65_536),
        Just(-1),
        Just(i32::MIN),
        Just(i32::MAX),
        any::<i32>(),
        1..=65_535,
    ];
    let name = prop_oneof![
        Just("http".to_string()),
        Just("redis".to_string()),
        Just("dns".to_string()),
        "[a-z0-9-]{0,17}",
        ".{0,8}",
    ];
    (
        prop::option::of(prop_oneof![
            Just("TCP"),
            Just("UDP"),
            Just("SCTP"),
            Just("tcp"),
            Just("ICMP"),
            Just(""),
        ]),
        prop::option::of(prop_oneof![
            number.clone().prop_map(IntOrString::Int),
            name.prop_map(IntOrString::String),
        ]),
        prop::option::of(number),
    )
        .prop_map(|(protocol, port, end_port)| net::NetworkPolicyPort {
            protocol: protocol.map(str::to_string),
            port,
            end_port,
        })
}

/// A CIDR at any prefix length of either family, host bits and all, with excepts that are
/// mostly inside it; or a string that is no CIDR at all.
fn ip_block() -> impl Strategy<Value = net::IPBlock> {
    let cidr = || {
        prop_oneof![
            4 => (any::<u32>(), 0u8..=33).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv4Addr::from(a))),
            4 => (any::<u128>(), 0u8..=129).prop_map(|(a, len)| format!("{}/{len}", std::net::Ipv6Addr::from(a))),
            1 => prop_oneof![
                Just("0.0.0.0/0".to_string()),
                Just("::/0".to_string()),
                Just("255.255.255.255/32".to_string()),
                Just("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128".to_string()),
                Just("::ffff:10.0.0.0/104".to_string()),
                Just("10.0.0.1".to_string()),
                ".{0,12}",
            ],
        ]
    };
    (
        cidr(),
        prop::option::of(prop::collection::vec(cidr(), 0..3)),
    )
        .prop_flat_map(|(cidr, others)| {
            // Excepts carved out of the cidr itself, so the valid paths are taken too.
            let inside = subnets(&cidr);
            (Just(cidr), Just(others), inside)
        })
        .prop_map(|(cidr, others, inside)| net::IPBlock {
            except: others.map(|o| o.into_iter().chain(inside).collect()),
            cidr,
        })
}

/// Up to three subnets of `cidr` (any prefix from its own to the family's longest), as text.
fn subnets(cidr: &str) -> BoxedStrategy<Vec<String>> {
    let Some((addr, len)) = cidr.split_once('/') else {
        return Just(Vec::new()).boxed();
    };
    let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u32>()) else {
        return Just(Vec::new()).boxed();
    };
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    if len > bits {
        return Just(Vec::new()).boxed();
    }
    let base = match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let one = (len..=bits, any::<u128>()).prop_map(move |(sub, noise)| {
        // Keep the cidr's prefix bits, take the rest from noise.
        let host = if len == 0 {
            u128::MAX
        } else {
            (1u128 << (bits - len)) - 1
        };
        let host = if bits == 32 {
            host & u128::from(u32::MAX)
        } else {
            host
        };
        let value = (base & !host) | (noise & host);
        let addr: IpAddr = if bits == 32 {
            std::net::Ipv4Addr::from(value as u32).into()
        } else {
            std::net::Ipv6Addr::from(value).into()
        };
        format!("{addr}/{sub}")
    });
    prop::collection::vec(one, 0..3).boxed()
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    let key = prop_oneof![
        Just("app"),
        Just("tier"),
        Just("kubernetes.io/metadata.name"),
        Just("")
    ];
    let value = prop_oneof![Just("a"), Just("nsb"), Just("nsa"), Just("web"), Just("")];
    let requirement = (
        key.clone(),
        prop_oneof![
            Just("In"),
            Just("NotIn"),
            Just("Exists"),
            Just("DoesNotExist"),
            Just("in"),
            Just("Has"),
        ],
        prop::option::of(prop::collection::vec(value.clone(), 0..3)),
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: values.map(|v| v.into_iter().map(str::to_string).collect()),
        });
    (
        prop::option::of(prop::collection::btree_map(key, value, 0..3)),
        prop::option::of(prop::collection::vec(requirement, 0..3)),
    )
        .prop_map(|(labels, match_expressions)| LabelSelector {
            match_labels: labels.map(|l: BTreeMap<&str, &str>| {
                l.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions,
        })
}
