//! A policy → its rules in ruleset form, acquiring the sets they match on.

use super::*;

/// A policy's rules in ruleset form and the sets they hold on to.
#[derive(Default)]
pub(super) struct Compiled {
    pub(super) ingress: Vec<Rule>,
    pub(super) egress: Vec<Rule>,
    pub(super) peers: Vec<PeerKey>,
    pub(super) blocks: Vec<IpBlock>,
    pub(super) named: Vec<(String, Protocol)>,
}

impl Compiled {
    pub(super) fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

impl Compiler {
    pub(super) fn compile_policy(&mut self, policy: &Policy) -> Compiled {
        let mut out = Compiled::default();
        for direction in DIRECTIONS {
            if !policy.isolates(direction) {
                continue;
            }
            let mut rules = Vec::new();
            for (index, rule) in policy.rules(direction).iter().enumerate() {
                let peers = self.peer_matches(&rule.peers, &mut out);
                let ports = self.port_matches(&rule.ports, &mut out);
                for (family, peer, ports) in combine(&peers, &ports) {
                    rules.push(Rule {
                        family,
                        peer,
                        ports,
                        policy: policy.key.clone(),
                        index,
                        log: policy.log_allowed,
                        verdict: crate::ruleset::RuleVerdict::Allow,
                    });
                }
            }
            match direction {
                Direction::Ingress => out.ingress = rules,
                Direction::Egress => out.egress = rules,
            }
        }
        out
    }

    pub(super) fn peer_matches(
        &mut self,
        peers: &Peers,
        out: &mut Compiled,
    ) -> Vec<(Option<Family>, PeerMatch)> {
        match peers {
            Peers::Any => vec![(None, PeerMatch::Any)],
            Peers::Only(list) => {
                let mut matches = Vec::new();
                for peer in list {
                    match peer {
                        Peer::Pods { namespaces, pods } => {
                            let key = (namespaces.clone(), pods.clone());
                            let sets = self.acquire_peer(&key);
                            out.peers.push(key);
                            for family in Family::ALL {
                                matches.push((
                                    Some(family),
                                    PeerMatch::InSet(sets[fam_index(family)].clone()),
                                ));
                            }
                        }
                        Peer::Block(block) => {
                            let set = self.acquire_block(block);
                            out.blocks.push(block.clone());
                            matches.push((Some(block.family()), PeerMatch::InSet(set)));
                        }
                    }
                }
                matches
            }
        }
    }

    pub(super) fn port_matches(
        &mut self,
        ports: &[crate::model::PortMatch],
        out: &mut Compiled,
    ) -> Vec<(Option<Family>, PortMatch)> {
        if ports.is_empty() {
            return vec![(None, PortMatch::Any)];
        }
        // Numeric ports of one protocol share a rule; a port-less entry covers the protocol.
        let mut numeric: BTreeMap<Protocol, Option<Vec<(u16, u16)>>> = BTreeMap::new();
        let mut matches = Vec::new();
        for pm in ports {
            match &pm.port {
                PortSpec::Any => {
                    numeric.insert(pm.protocol, None);
                }
                PortSpec::Range { first, last } => {
                    // `None` already means the whole protocol; ranges add nothing to it.
                    let entry = numeric
                        .entry(pm.protocol)
                        .or_insert_with(|| Some(Vec::new()));
                    if let Some(ranges) = entry {
                        ranges.push((*first, *last));
                    }
                }
                PortSpec::Named(name) => {
                    let sets = self.acquire_named(name, pm.protocol);
                    out.named.push((name.clone(), pm.protocol));
                    for family in Family::ALL {
                        matches.push((
                            Some(family),
                            PortMatch::Named {
                                protocol: pm.protocol,
                                set: sets[fam_index(family)].clone(),
                            },
                        ));
                    }
                }
            }
        }
        let mut result: Vec<(Option<Family>, PortMatch)> = numeric
            .into_iter()
            .map(|(protocol, ranges)| match ranges {
                None => (None, PortMatch::Protocol(protocol)),
                Some(mut ranges) => {
                    ranges.sort_unstable();
                    ranges.dedup();
                    (None, PortMatch::Ports { protocol, ranges })
                }
            })
            .collect();
        result.extend(matches);
        result
    }
}

/// Every peer match with every port match of the same family (or of none): the rules one
/// policy rule becomes.
pub(super) fn combine(
    peers: &[(Option<Family>, PeerMatch)],
    ports: &[(Option<Family>, PortMatch)],
) -> Vec<(Option<Family>, PeerMatch, PortMatch)> {
    let mut out = Vec::new();
    for (pf, peer) in peers {
        for (qf, port) in ports {
            let family = match (pf, qf) {
                (Some(a), Some(b)) if a != b => continue,
                (Some(a), _) | (None, Some(a)) => Some(*a),
                (None, None) => None,
            };
            out.push((family, peer.clone(), port.clone()));
        }
    }
    out
}
