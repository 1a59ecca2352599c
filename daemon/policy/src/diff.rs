//! The one way podwall compares two keyed states (a relist with the cache, two snapshots, two
//! rulesets): each key added, changed or removed, in key order.

use std::collections::BTreeMap;

/// How `new` differs from `old` at one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diff<'a, K, V> {
    Added(&'a K, &'a V),
    Changed { key: &'a K, old: &'a V, new: &'a V },
    Removed(&'a K, &'a V),
}

impl<'a, K, V> Diff<'a, K, V> {
    pub fn key(&self) -> &'a K {
        match self {
            Diff::Added(key, _) | Diff::Removed(key, _) | Diff::Changed { key, .. } => key,
        }
    }

    /// The value `new` has, or `None` where the key was removed.
    pub fn new_value(&self) -> Option<&'a V> {
        match self {
            Diff::Added(_, new) | Diff::Changed { new, .. } => Some(new),
            Diff::Removed(..) => None,
        }
    }
}

/// What changes `old` into `new`: added and changed keys first, then removed ones.
pub fn diff<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = Diff<'a, K, V>> + 'a {
    let upserted = new.iter().filter_map(|(key, value)| match old.get(key) {
        None => Some(Diff::Added(key, value)),
        Some(before) if before != value => Some(Diff::Changed {
            key,
            old: before,
            new: value,
        }),
        Some(_) => None,
    });
    let removed = old
        .iter()
        .filter(|(key, _)| !new.contains_key(*key))
        .map(|(key, value)| Diff::Removed(key, value));
    upserted.chain(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_added_changed_and_removed_key_once() {
        let old = BTreeMap::from([(1, "a"), (2, "b"), (3, "c")]);
        let new = BTreeMap::from([(2, "b"), (3, "C"), (4, "d")]);
        let found: Vec<_> = diff(&old, &new).collect();
        assert_eq!(
            found,
            [
                Diff::Changed {
                    key: &3,
                    old: &"c",
                    new: &"C"
                },
                Diff::Added(&4, &"d"),
                Diff::Removed(&1, &"a"),
            ]
        );
        assert_eq!(diff(&new, &new).count(), 0);
    }
}
