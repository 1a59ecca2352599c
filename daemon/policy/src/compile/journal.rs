//! Every mutation of the ruleset goes through here and is recorded, so that an event's delta
//! is built from what it touched, never by comparing whole rulesets.

use super::*;

/// Records what an event changed, to build its delta without comparing whole rulesets.
#[derive(Default)]
pub(super) struct Journal {
    /// Sets touched, and whether each existed before the event.
    sets_before: BTreeMap<SetName, bool>,
    /// Sets deleted and created again within the event: replaced whole.
    sets_replaced: BTreeSet<SetName>,
    added: BTreeMap<SetName, BTreeSet<Element>>,
    removed: BTreeMap<SetName, BTreeSet<Element>>,
    chains_before: BTreeMap<ChainName, Option<Chain>>,
    maps_before: [BTreeMap<IpAddr, Option<ChainName>>; 2],
}

impl Compiler {
    pub(super) fn set_create(&mut self, name: SetName, set: Set) {
        let existed = self.rs.sets.contains_key(&name);
        let before = *self
            .journal
            .sets_before
            .entry(name.clone())
            .or_insert(existed);
        if before && !existed {
            self.journal.sets_replaced.insert(name.clone());
        }
        self.rs.sets.insert(name, set);
    }

    /// Creates a set whose elements `elem_add` and `elem_remove` count by holder; `held`
    /// counts the holders of each of `set`'s elements.
    pub(super) fn counted_set_create(
        &mut self,
        name: SetName,
        set: Set,
        held: BTreeMap<Element, usize>,
    ) {
        self.set_create(name.clone(), set);
        self.holders.insert(name, held);
    }

    pub(super) fn set_delete(&mut self, name: &SetName) {
        let existed = self.rs.sets.contains_key(name);
        self.journal
            .sets_before
            .entry(name.clone())
            .or_insert(existed);
        self.rs.sets.remove(name);
        self.holders.remove(name);
    }

    /// One more holder of `elem`; the first puts it in the set.
    pub(super) fn elem_add(&mut self, set: &SetName, elem: Element) {
        let Some(held) = self.holders.get_mut(set) else {
            return;
        };
        let count = held.entry(elem).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        let Some(s) = self.rs.sets.get_mut(set) else {
            return;
        };
        if s.insert(elem) {
            let removed = self.journal.removed.entry(set.clone()).or_default();
            if !removed.remove(&elem) {
                self.journal
                    .added
                    .entry(set.clone())
                    .or_default()
                    .insert(elem);
            }
        }
    }

    /// One holder of `elem` fewer; the last takes it out of the set.
    pub(super) fn elem_remove(&mut self, set: &SetName, elem: Element) {
        let Some(held) = self.holders.get_mut(set) else {
            return;
        };
        match held.get_mut(&elem) {
            None => return,
            Some(count) if *count > 1 => {
                *count -= 1;
                return;
            }
            Some(_) => {
                held.remove(&elem);
            }
        }
        let Some(s) = self.rs.sets.get_mut(set) else {
            return;
        };
        if s.remove(&elem) {
            let added = self.journal.added.entry(set.clone()).or_default();
            if !added.remove(&elem) {
                self.journal
                    .removed
                    .entry(set.clone())
                    .or_default()
                    .insert(elem);
            }
        }
    }

    pub(super) fn chain_put(&mut self, name: ChainName, chain: Chain) {
        let old = self.rs.chains.get(&name).cloned();
        self.journal
            .chains_before
            .entry(name.clone())
            .or_insert(old);
        self.rs.chains.insert(name, chain);
    }

    pub(super) fn chain_delete(&mut self, name: &ChainName) {
        let old = self.rs.chains.remove(name);
        self.journal
            .chains_before
            .entry(name.clone())
            .or_insert(old);
    }

    pub(super) fn map_put(&mut self, direction: Direction, ip: IpAddr, chain: ChainName) {
        let old = self.rs.map(direction).get(&ip).cloned();
        self.journal.maps_before[dir_index(direction)]
            .entry(ip)
            .or_insert(old);
        self.rs.map_mut(direction).insert(ip, chain);
    }

    pub(super) fn map_delete(&mut self, direction: Direction, ip: IpAddr) {
        let old = self.rs.map_mut(direction).remove(&ip);
        self.journal.maps_before[dir_index(direction)]
            .entry(ip)
            .or_insert(old);
    }

    pub(super) fn take_delta(&mut self) -> RulesetDelta {
        let journal = std::mem::take(&mut self.journal);
        let mut delta = RulesetDelta::default();
        let mut touched: BTreeSet<&SetName> = journal.sets_before.keys().collect();
        touched.extend(journal.added.keys());
        touched.extend(journal.removed.keys());
        for name in touched {
            let before = journal.sets_before.get(name).copied().unwrap_or(true);
            let now = self.rs.sets.get(name);
            match (before, now) {
                (false, Some(set)) => {
                    delta.sets_added.insert(name.clone(), set.clone());
                }
                (true, None) => {
                    delta.sets_removed.insert(name.clone());
                }
                (true, Some(set)) if journal.sets_replaced.contains(name) => {
                    delta.sets_removed.insert(name.clone());
                    delta.sets_added.insert(name.clone(), set.clone());
                }
                (true, Some(_)) => {
                    if let Some(e) = journal.added.get(name).filter(|e| !e.is_empty()) {
                        delta.elements_added.insert(name.clone(), e.clone());
                    }
                    if let Some(e) = journal.removed.get(name).filter(|e| !e.is_empty()) {
                        delta.elements_removed.insert(name.clone(), e.clone());
                    }
                }
                (false, None) => {}
            }
        }
        for (name, before) in journal.chains_before {
            match (before, self.rs.chains.get(&name)) {
                (before, Some(now)) if before.as_ref() != Some(now) => {
                    delta.chains_set.insert(name, now.clone());
                }
                (Some(_), None) => {
                    delta.chains_removed.insert(name);
                }
                _ => {}
            }
        }
        for direction in DIRECTIONS {
            let changes = match direction {
                Direction::Ingress => &mut delta.ingress,
                Direction::Egress => &mut delta.egress,
            };
            for (ip, before) in &journal.maps_before[dir_index(direction)] {
                let now = self.rs.map(direction).get(ip);
                if before.as_ref() != now {
                    changes.insert(*ip, now.cloned());
                }
            }
        }
        delta
    }
}
