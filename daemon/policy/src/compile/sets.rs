//! The sets rules match on: one pair of address sets per selector peer (with its member
//! pods), one interval set per ipBlock, one `addr . port` set per named port; each counted by
//! the rules that hold it, and pod-held elements counted by holder.

use super::*;

/// A peer's members are not kept: a pod is one exactly while `peer_matches` says so of it in
/// the current snapshot, and every change of the snapshot re-checks the pods it may concern
/// (at 10k pods in scope, a member list would be a megabyte).
pub(super) struct PeerState {
    refs: usize,
    sets: [SetName; 2],
}

impl Compiler {
    /// Re-checks pod `key` (now `self.snap.pods[key]`, or gone) against one peer: `old` is
    /// the pod before the change, a member if `was`.
    pub(super) fn refresh_member(
        &mut self,
        peer: &PeerKey,
        key: &PodKey,
        old: Option<&Pod>,
        was: bool,
    ) {
        let now = self
            .snap
            .pods
            .get(key)
            .filter(|p| peer_matches(&self.snap, peer, p))
            .cloned();
        // Callers take peers from the indexes, which list only peers that exist.
        let Some(state) = self.peers.get(peer) else {
            return;
        };
        let sets = state.sets.clone();
        if was {
            for ip in old.map(|p| p.ips.as_slice()).unwrap_or_default() {
                self.elem_remove(&sets[fam_index(Family::of(ip))], Element::Address(*ip));
            }
        }
        for ip in now.iter().flat_map(|p| &p.ips) {
            self.elem_add(&sets[fam_index(Family::of(ip))], Element::Address(*ip));
        }
    }

    pub(super) fn refresh_named_ports(&mut self, key: &PodKey, old: Option<&Pod>) {
        let new = self.snap.pods.get(key).cloned();
        for (pod, add) in [(old.cloned(), false), (new, true)] {
            let Some(pod) = pod.filter(|p| p.is_policed()) else {
                continue;
            };
            // A name resolves to its first declaration, as in `Pod::named_port`, even if the
            // pod (against validation) declares it twice.
            let mut declared: BTreeMap<(&String, Protocol), u16> = BTreeMap::new();
            for cp in &pod.ports {
                if let Some(name) = &cp.name {
                    declared.entry((name, cp.protocol)).or_insert(cp.port);
                }
            }
            for ((name, protocol), port) in declared {
                if !self.named.contains_key(&(name.clone(), protocol)) {
                    continue;
                }
                for ip in &pod.ips {
                    let set = named_set(name, protocol, Family::of(ip));
                    let elem = Element::AddressPort(*ip, port);
                    if add {
                        self.elem_add(&set, elem);
                    } else {
                        self.elem_remove(&set, elem);
                    }
                }
            }
        }
    }

    pub(super) fn acquire_peer(&mut self, peer: &PeerKey) -> [SetName; 2] {
        if let Some(state) = self.peers.get_mut(peer) {
            state.refs += 1;
            return state.sets.clone();
        }
        let canonical = serde_json::to_string(peer)
            .expect("a peer is enums, strings and sets of strings, which JSON always encodes");
        let sets = Family::ALL.map(|f| names::peer_set(&canonical, f));
        let namespaces: Vec<String> = match (&peer.0, &self.full) {
            (NamespaceScope::Named(ns), _) => vec![ns.clone()],
            (NamespaceScope::Matching(sel), Some(full)) => (full.namespaces.iter())
                .filter(|(_, labels)| sel.matches(labels))
                .map(|(name, _)| name.clone())
                .collect(),
            (NamespaceScope::Matching(sel), None) => (self.snap.namespace_names().into_iter())
                .filter(|ns| sel.matches(&self.snap.namespace_labels(ns)))
                .collect(),
        };
        let candidates: Vec<&Pod> = match (&peer.0, &self.full) {
            // A full compile: the selector is judged once per label set, not once per pod of
            // every namespace in scope (at 100k pods, most of a start-up's CPU), and the
            // scope once per namespace's run of pods in a set.
            (NamespaceScope::Matching(_), Some(full)) => {
                let in_scope: BTreeSet<&str> = namespaces.iter().map(String::as_str).collect();
                (full.label_groups.iter())
                    .filter(|(labels, _)| peer.1.matches(labels))
                    .flat_map(|(_, pods)| pods.chunk_by(|a, b| a.key.namespace == b.key.namespace))
                    .filter(|run| {
                        (run.first()).is_some_and(|p| in_scope.contains(p.key.namespace.as_str()))
                    })
                    .flatten()
                    .collect()
            }
            _ => (namespaces.iter())
                .flat_map(|ns| pods_in(&self.snap, ns))
                .filter(|pod| peer.1.matches(&pod.labels))
                .collect(),
        };
        let mut held: [Vec<IpAddr>; 2] = [Vec::new(), Vec::new()];
        for pod in candidates.into_iter().filter(|pod| pod.is_policed()) {
            for ip in &pod.ips {
                held[fam_index(Family::of(ip))].push(*ip);
            }
        }
        for (family, held) in Family::ALL.into_iter().zip(held) {
            let (elements, extra) = holders(held, Element::Address);
            let set = Set::Addresses {
                family,
                elements: elements.into_iter().collect(),
            };
            self.counted_set_create(sets[fam_index(family)].clone(), set, extra);
        }
        match &peer.0 {
            NamespaceScope::Named(ns) => {
                self.peers_by_namespace
                    .entry(ns.clone())
                    .or_default()
                    .insert(peer.clone());
            }
            NamespaceScope::Matching(_) => {
                self.peers_by_labels.insert(peer.clone());
            }
        }
        self.peers.insert(
            peer.clone(),
            PeerState {
                refs: 1,
                sets: sets.clone(),
            },
        );
        sets
    }

    pub(super) fn acquire_block(&mut self, block: &IpBlock) -> SetName {
        let name = block_set(block);
        let refs = self.blocks.entry(block.clone()).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            self.set_create(
                name.clone(),
                Set::Intervals {
                    family: block.family(),
                    ranges: block.ranges(),
                },
            );
        }
        name
    }

    pub(super) fn acquire_named(&mut self, name: &str, protocol: Protocol) -> [SetName; 2] {
        let key = (name.to_string(), protocol);
        let sets = Family::ALL.map(|f| named_set(name, protocol, f));
        let refs = self.named.entry(key).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            let mut held: [Vec<(IpAddr, u16)>; 2] = [Vec::new(), Vec::new()];
            for pod in self.snap.pods.values().filter(|p| p.is_policed()) {
                if let Some(port) = pod.named_port(name, protocol) {
                    for ip in &pod.ips {
                        held[fam_index(Family::of(ip))].push((*ip, port));
                    }
                }
            }
            for (family, held) in Family::ALL.into_iter().zip(held) {
                let (elements, extra) = holders(held, |(ip, port)| Element::AddressPort(ip, port));
                let set = Set::AddressPorts {
                    family,
                    protocol,
                    elements: elements.into_iter().collect(),
                };
                self.counted_set_create(sets[fam_index(family)].clone(), set, extra);
            }
        }
        sets
    }

    pub(super) fn release(&mut self, old: Compiled) {
        for peer in old.peers {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue; // held peers exist; nothing to release otherwise
            };
            state.refs = state.refs.saturating_sub(1);
            if state.refs > 0 {
                continue;
            }
            if let Some(state) = self.peers.remove(&peer) {
                for set in &state.sets {
                    self.set_delete(set);
                }
                match &peer.0 {
                    NamespaceScope::Named(ns) => {
                        if let Some(list) = self.peers_by_namespace.get_mut(ns) {
                            list.remove(&peer);
                            if list.is_empty() {
                                self.peers_by_namespace.remove(ns);
                            }
                        }
                    }
                    NamespaceScope::Matching(_) => {
                        self.peers_by_labels.remove(&peer);
                    }
                }
            }
        }
        for block in old.blocks {
            let Some(refs) = self.blocks.get_mut(&block) else {
                continue;
            };
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.blocks.remove(&block);
                self.set_delete(&block_set(&block));
            }
        }
        for (name, protocol) in old.named {
            let key = (name, protocol);
            let Some(refs) = self.named.get_mut(&key) else {
                continue;
            };
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.named.remove(&key);
                for family in Family::ALL {
                    self.set_delete(&named_set(&key.0, protocol, family));
                }
            }
        }
    }
}

pub(super) fn fam_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

pub(super) fn block_set(block: &IpBlock) -> SetName {
    let canonical = serde_json::to_string(block).expect("blocks serialise");
    names::block_set(&canonical, block.family())
}

pub(super) fn named_set(name: &str, protocol: Protocol, family: Family) -> SetName {
    names::named_port_set(&format!("{name}/{protocol}"), family)
}

/// The distinct members of `held` (one entry per holder), sorted, and the holders each has
/// beyond its first, as elements: sorted once rather than counted in a map member by member.
pub(super) fn holders<T: Ord + Copy>(
    mut held: Vec<T>,
    element: impl Fn(T) -> Element,
) -> (Vec<T>, BTreeMap<Element, usize>) {
    held.sort_unstable();
    let mut extra = BTreeMap::new();
    for pair in held.windows(2) {
        if let [a, b] = pair {
            if a == b {
                *extra.entry(element(*b)).or_insert(0) += 1;
            }
        }
    }
    held.dedup();
    (held, extra)
}
