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
    /// Records whether set `name` existed before the event, the first time the event touches
    /// it, and returns that.
    fn note_set(&mut self, name: &SetName) -> bool {
        let existed = self.rs.sets.contains_key(name);
        *self
            .journal
            .sets_before
            .entry(name.clone())
            .or_insert(existed)
    }

    pub(super) fn set_create(&mut self, name: SetName, set: Set) {
        let existed = self.rs.sets.contains_key(&name);
        if self.note_set(&name) && !existed {
            self.journal.sets_replaced.insert(name.clone());
        }
        self.rs.sets.insert(name, set);
    }

    /// Creates a set whose elements `elem_add` and `elem_remove` count by holder; `held`
    /// counts the holders of each of `set`'s elements.
    /// A new set whose elements have `extra` holders beyond their first.
    pub(super) fn counted_set_create(
        &mut self,
        name: SetName,
        set: Set,
        extra: BTreeMap<Element, usize>,
    ) {
        self.set_create(name.clone(), set);
        self.extra_holders.insert(name, extra);
    }

    pub(super) fn set_delete(&mut self, name: &SetName) {
        self.note_set(name);
        self.rs.sets.remove(name);
        self.extra_holders.remove(name);
    }

    /// One more holder of `elem`; the first puts it in the set.
    pub(super) fn elem_add(&mut self, set: &SetName, elem: Element) {
        let (Some(extra), Some(s)) = (self.extra_holders.get_mut(set), self.rs.sets.get_mut(set))
        else {
            return;
        };
        if s.insert(elem) {
            self.record_element(set, elem, true);
        } else {
            *extra.entry(elem).or_insert(0) += 1;
        }
    }

    /// One holder of `elem` fewer; the last takes it out of the set.
    pub(super) fn elem_remove(&mut self, set: &SetName, elem: Element) {
        let (Some(extra), Some(s)) = (self.extra_holders.get_mut(set), self.rs.sets.get_mut(set))
        else {
            return;
        };
        match extra.get_mut(&elem) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                extra.remove(&elem);
            }
            None => {
                if s.remove(&elem) {
                    self.record_element(set, elem, false);
                }
            }
        }
    }

    /// Records that `elem` entered (`added`) or left `set`; one that comes back within the
    /// same event cancels out.
    fn record_element(&mut self, set: &SetName, elem: Element, added: bool) {
        let Journal {
            added: entered,
            removed: left,
            ..
        } = &mut self.journal;
        let (undone, done) = if added {
            (left, entered)
        } else {
            (entered, left)
        };
        if !undone.entry(set.clone()).or_default().remove(&elem) {
            done.entry(set.clone()).or_default().insert(elem);
        }
    }

    /// Puts `chain` under `name`, or removes it (`None`), recording what was there first.
    pub(super) fn chain_set(&mut self, name: &ChainName, chain: Option<Chain>) {
        let old = match chain {
            Some(chain) => self.rs.chains.insert(name.clone(), chain),
            None => self.rs.chains.remove(name),
        };
        self.journal
            .chains_before
            .entry(name.clone())
            .or_insert(old);
    }

    /// Points `ip`'s `direction` dispatch entry at `chain`, or removes it (`None`), recording
    /// what was there first.
    pub(super) fn map_set(&mut self, direction: Direction, ip: IpAddr, chain: Option<ChainName>) {
        let map = self.rs.map_mut(direction);
        let old = match chain {
            Some(chain) => map.insert(ip, chain),
            None => map.remove(&ip),
        };
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
