//! Both tables exactly as they are: every table, chain, set and rule by what it does (the
//! attributes that say it: types, keys, hooks, flags, expressions, comments, nft's user data)
//! and every set's elements, without what only says when or how an object was made (handles,
//! use counts, counters' values, the numbers the kernel gives anonymous sets, which are
//! compared by their content instead). Folded the same way from the batch that writes a
//! desired state (`Exact::of`) and from the kernel's dumps (`listing::read_exact`), which
//! answer with the same messages: equal means the kernel holds exactly what the daemon
//! writes, element for element and expression for expression.
//!
//! Rules are kept as a hash each, in order, and a set's elements as their number and an
//! order-free sum of their hashes, so that a table of 25,000 elements costs a few hundred
//! bytes here. Pure; nothing here panics on what a dump holds.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;

#[cfg(test)]
use super::batch::Batch;
use super::batch::Sink;
use super::netlink::{
    attribute, attributes, be32, text, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE,
};
use super::{table, Desired};

const NFT_SET_ANONYMOUS: u32 = 0x1;

/// What an attribute holds: bytes, bytes that count only when not zero (a flag the kernel
/// reports whether or not it was given), or attributes of its own.
#[derive(Clone, Copy)]
enum Shape {
    Leaf,
    NonZero,
    Nested(&'static [(u16, Shape)]),
}
use Shape::{Leaf, Nested, NonZero};

const VALUE: &[(u16, Shape)] = &[(1, Leaf)];
const VERDICT: &[(u16, Shape)] = &[(1, Leaf), (2, Leaf)];
/// NFTA_DATA_VALUE or NFTA_DATA_VERDICT (its code and chain).
const DATA: &[(u16, Shape)] = &[(1, Leaf), (2, Nested(VERDICT))];
const TABLE: &[(u16, Shape)] = &[(1, Leaf), (2, Leaf)];
/// Table, name, hook (number, priority), policy, type.
const CHAIN: &[(u16, Shape)] = &[
    (1, Leaf),
    (3, Leaf),
    (4, Nested(&[(1, Leaf), (2, Leaf)])),
    (5, Leaf),
    (7, Leaf),
];
/// Flags (none is not reported), key type and length, data type, size, user data. Not the
/// data length: podwall's only maps hold verdicts, whose length the kernel sets itself.
const SET: &[(u16, Shape)] = &[
    (3, NonZero),
    (4, Leaf),
    (5, Leaf),
    (6, Leaf),
    (9, Nested(&[(1, NonZero)])),
    (13, Leaf),
];
/// Key, data, flags, user data, the end of a range.
const ELEMENT: &[(u16, Shape)] = &[
    (1, Nested(VALUE)),
    (2, Nested(DATA)),
    (3, NonZero),
    (6, Leaf),
    (10, Nested(VALUE)),
];

/// Each expression's attributes (`NFTA_EXPR_DATA`); a counter's are its counts, left out.
/// A lookup's set is resolved apart (`Fold::lookup`).
fn expression_shape(name: &[u8]) -> Option<&'static [(u16, Shape)]> {
    Some(match name {
        b"counter\0" => &[],
        // Rate, unit, burst, type, flags; not the padding a kernel may put before a 64-bit
        // value.
        b"limit\0" => &[(1, Leaf), (2, Leaf), (3, Leaf), (4, Leaf), (5, Leaf)],
        b"immediate\0" => &[(1, Leaf), (2, Nested(DATA))],
        b"cmp\0" => &[(1, Leaf), (2, Leaf), (3, Nested(VALUE))],
        // Source, destination, length, mask, xor, and the operation (0: mask and xor).
        b"bitwise\0" => &[
            (1, Leaf),
            (2, Leaf),
            (3, Leaf),
            (4, Nested(VALUE)),
            (5, Nested(VALUE)),
            (6, NonZero),
        ],
        _ => return None,
    })
}

/// The attributes of `bytes` that `shape` names, in a canonical form: sorted by type, each
/// as its type, length and canonical payload. Written in place: a table's elements are tens
/// of thousands of these.
fn canonical<'a>(out: &mut Vec<u8>, bytes: &'a [u8], shape: &[(u16, Shape)]) {
    let known = |(kind, payload): (u16, &'a [u8])| {
        let (_, inner) = shape.iter().find(|(k, _)| *k == kind)?;
        Some((kind, *inner, payload))
    };
    // What podwall and the kernel write is in order already; a sort is the exception.
    if attributes(bytes)
        .filter_map(known)
        .map(|(kind, _, _)| kind)
        .is_sorted()
    {
        for attribute in attributes(bytes).filter_map(known) {
            canonical_attribute(out, attribute);
        }
    } else {
        let mut kept: Vec<(u16, Shape, &[u8])> = attributes(bytes).filter_map(known).collect();
        kept.sort_by_key(|(kind, _, _)| *kind);
        for attribute in kept {
            canonical_attribute(out, attribute);
        }
    }
}

/// One attribute: its type, its canonical payload's length, and that payload.
fn canonical_attribute(out: &mut Vec<u8>, (kind, inner, payload): (u16, Shape, &[u8])) {
    if matches!(inner, NonZero) && payload.iter().all(|b| *b == 0) {
        return;
    }
    let start = out.len();
    out.extend(kind.to_ne_bytes());
    out.extend([0; 4]);
    let header = out.len();
    match inner {
        Leaf | NonZero => out.extend_from_slice(payload),
        Nested(shape) => {
            canonical(out, payload, shape);
            // Nothing kept inside says nothing (the kernel reports an empty size).
            if out.len() == header {
                out.truncate(start);
                return;
            }
        }
    }
    let len = (out.len() - header) as u32;
    out[start + 2..header].copy_from_slice(&len.to_ne_bytes());
}

fn canonical_of(bytes: &[u8], shape: &[(u16, Shape)]) -> Vec<u8> {
    let mut out = Vec::new();
    canonical(&mut out, bytes, shape);
    out
}

/// A named set: how it is declared, and its elements as their number and the sums of their
/// hashes under two keys (an order-free digest of 128 bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct SetSum {
    declaration: Vec<u8>,
    elements: usize,
    sums: [u64; 2],
}

/// Both tables, exactly (see the module's comment). `PartialEq` is the check; the handover
/// digest is its hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Exact {
    /// By family (`NFPROTO_*`).
    tables: BTreeMap<u8, Vec<u8>>,
    chains: BTreeMap<(u8, String), Vec<u8>>,
    /// Each chain's rules, in order, a hash each.
    rules: BTreeMap<(u8, String), Vec<u64>>,
    sets: BTreeMap<(u8, String), SetSum>,
}

impl Exact {
    /// What the kernel holds after the batch that swaps `desired` in.
    pub fn of(desired: &Desired) -> Self {
        let mut fold = Fold::default();
        table::write(&mut fold, desired);
        fold.finish()
    }

    /// What differs from `expected`, in words, for the log: each object missing, extra or
    /// not as expected, a chain's first rule that differs.
    pub fn differences(&self, expected: &Exact) -> Vec<String> {
        let family = |f: &u8| match *f {
            super::netlink::NFPROTO_INET => "inet",
            super::netlink::NFPROTO_BRIDGE => "bridge",
            _ => "other",
        };
        let mut out = Vec::new();
        compare(&self.tables, &expected.tables, &mut out, |f, what| {
            format!("table {} podwall {what}", family(f))
        });
        compare(
            &self.chains,
            &expected.chains,
            &mut out,
            |(f, name), what| format!("chain {name} ({}) {what}", family(f)),
        );
        compare(&self.sets, &expected.sets, &mut out, |(f, name), what| {
            format!("set {name} ({}) {what}", family(f))
        });
        for (key @ (_, chain), rules) in &expected.rules {
            let actual = self.rules.get(key).map(Vec::as_slice).unwrap_or_default();
            if let Some(n) =
                (0..rules.len().max(actual.len())).find(|n| actual.get(*n) != rules.get(*n))
            {
                out.push(format!(
                    "chain {chain}: rule {n} differs ({} rules, expected {})",
                    actual.len(),
                    rules.len()
                ));
            }
        }
        out
    }
}

/// Objects of `actual` missing from, extra to or unlike those of `expected`, named by `name`.
fn compare<K: Ord, V: PartialEq>(
    actual: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
    out: &mut Vec<String>,
    name: impl Fn(&K, &str) -> String,
) {
    for (key, value) in expected {
        match actual.get(key) {
            None => out.push(name(key, "missing")),
            Some(found) if found != value => out.push(name(key, "not as written")),
            Some(_) => {}
        }
    }
    for key in actual.keys().filter(|key| !expected.contains_key(key)) {
        out.push(name(key, "extra"));
    }
}

/// An anonymous set: by its table's family, its name and, in a batch, its id (a batch names
/// them all `__set%d`; the kernel numbers them).
type Anonymous = (u8, Vec<u8>, Option<Vec<u8>>);

/// The key of an anonymous set: the batch's placeholder name with its id, or the kernel's
/// own name (whatever ids a dump may carry).
fn anonymous(family: u8, name: Vec<u8>, id: Option<Vec<u8>>) -> Anonymous {
    let placeholder = name.as_slice() == b"__set%d\0";
    (family, name, id.filter(|_| placeholder))
}

/// Folds NFT_MSG_NEW* messages (and a batch's DELTABLE), a batch's or a dump's, into an
/// [`Exact`]. A dump must give a set's elements before the rules that read it.
#[derive(Default)]
pub struct Fold {
    exact: Exact,
    /// Each anonymous set's declaration and elements, canonical.
    anonymous: HashMap<Anonymous, (Vec<u8>, Vec<Vec<u8>>)>,
}

/// The messages a batch would send, folded as they are written.
impl Sink for Fold {
    fn push(&mut self, kind: u16, _flags: u16, family: u8, attrs: Vec<u8>, _what: String) {
        self.message(kind, family, &attrs);
    }
}

impl Fold {
    #[cfg(test)]
    fn batch(&mut self, batch: &Batch) {
        for (kind, family, attrs) in batch.messages() {
            self.message(kind, family, attrs);
        }
    }

    /// One message of `kind` (`NFT_MSG_*`) for the `family` table, its attributes after the
    /// nfgenmsg header.
    pub fn message(&mut self, kind: u16, family: u8, attrs: &[u8]) {
        let name = |kind| attribute(attrs, kind).map(<[u8]>::to_vec);
        let text = |kind| attribute(attrs, kind).and_then(text).map(str::to_string);
        match kind {
            NFT_MSG_NEWTABLE => {
                self.exact.tables.insert(family, canonical_of(attrs, TABLE));
            }
            NFT_MSG_DELTABLE => self.forget(family),
            NFT_MSG_NEWCHAIN => {
                let Some(chain) = text(3) else { return };
                self.exact.rules.entry((family, chain.clone())).or_default();
                self.exact
                    .chains
                    .insert((family, chain), canonical_of(attrs, CHAIN));
            }
            NFT_MSG_NEWRULE => {
                let Some(chain) = text(2) else { return };
                let rule = self.rule(family, attrs);
                self.exact
                    .rules
                    .entry((family, chain))
                    .or_default()
                    .push(rule);
            }
            NFT_MSG_NEWSET => {
                let (Some(set), flags) = (name(2), attribute(attrs, 3).and_then(be32)) else {
                    return;
                };
                let declaration = canonical_of(attrs, SET);
                if flags.unwrap_or(0) & NFT_SET_ANONYMOUS != 0 {
                    let key = anonymous(family, set, name(10));
                    self.anonymous.insert(key, (declaration, Vec::new()));
                } else if let Some(set) = text(2) {
                    let sum = SetSum {
                        declaration,
                        ..SetSum::default()
                    };
                    self.exact.sets.insert((family, set), sum);
                }
            }
            NFT_MSG_NEWSETELEM => self.elements(family, attrs),
            _ => {}
        }
    }

    fn forget(&mut self, family: u8) {
        self.exact.tables.remove(&family);
        self.exact.chains.retain(|(f, _), _| *f != family);
        self.exact.rules.retain(|(f, _), _| *f != family);
        self.exact.sets.retain(|(f, _), _| *f != family);
        self.anonymous.retain(|(f, _, _), _| *f != family);
    }

    fn elements(&mut self, family: u8, attrs: &[u8]) {
        let (Some(set), Some(list)) = (attribute(attrs, 2), attribute(attrs, 3)) else {
            return;
        };
        let elements = attributes(list).map(|(_, element)| element);
        let id = attribute(attrs, 4).map(<[u8]>::to_vec);
        if let Some((_, held)) = self.anonymous.get_mut(&anonymous(family, set.to_vec(), id)) {
            held.extend(elements.map(|element| canonical_of(element, ELEMENT)));
            return;
        }
        let Some(name) = text(set) else { return };
        let Some(sum) = self.exact.sets.get_mut(&(family, name.to_string())) else {
            return;
        };
        // One buffer for all: a named set may hold tens of thousands.
        let mut canonical_element = Vec::new();
        for element in elements {
            canonical_element.clear();
            canonical(&mut canonical_element, element, ELEMENT);
            sum.elements += 1;
            for (key, total) in sum.sums.iter_mut().enumerate() {
                *total = total.wrapping_add(hash(key as u64, &canonical_element));
            }
        }
    }

    /// A rule's hash: its comment and each expression, in order.
    fn rule(&self, family: u8, attrs: &[u8]) -> u64 {
        let mut out = Vec::new();
        canonical(&mut out, attrs, &[(7, Leaf)]); // NFTA_RULE_USERDATA
        let expressions = attribute(attrs, 4).unwrap_or_default();
        for (_, expression) in attributes(expressions) {
            let name = attribute(expression, 1).unwrap_or_default();
            let data = attribute(expression, 2).unwrap_or_default();
            out.extend(name);
            out.push(0xff);
            match expression_shape(name) {
                Some(shape) => canonical(&mut out, data, shape),
                None if name == b"lookup\0" => self.lookup(&mut out, family, data),
                // Every attribute the kernel reports of these is one podwall gives.
                None => canonical(&mut out, data, ALL),
            }
            out.push(0xfe);
        }
        hash(0, &out)
    }

    /// A lookup: its registers and flags, and its set, by name or, for an anonymous one,
    /// by what it holds.
    fn lookup(&self, out: &mut Vec<u8>, family: u8, data: &[u8]) {
        canonical(out, data, &[(2, Leaf), (3, Leaf), (5, NonZero)]);
        let set = attribute(data, 1).unwrap_or_default().to_vec();
        let id = attribute(data, 4).map(<[u8]>::to_vec);
        match self.anonymous.get(&anonymous(family, set.clone(), id)) {
            Some((declaration, elements)) => {
                let mut elements = elements.clone();
                elements.sort();
                out.extend(declaration);
                elements.iter().for_each(|e| out.extend(e));
            }
            None => out.extend(set),
        }
    }

    pub fn finish(self) -> Exact {
        self.exact
    }
}

/// Every attribute type the other expressions of podwall's (meta, ct, payload, fib, log)
/// can have, each as bytes.
const ALL: &[(u16, Shape)] = &[
    (1, Leaf),
    (2, Leaf),
    (3, Leaf),
    (4, Leaf),
    (5, Leaf),
    (6, Leaf),
    (7, Leaf),
    (8, Leaf),
];

/// SipHash of `bytes` under key `key`.
fn hash(key: u64, bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write_u64(key);
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::render::tests::world_desired;
    use podwall_policy::ruleset::Element;
    use podwall_policy::Set;

    #[test]
    fn the_same_state_is_equal_and_one_element_for_another_is_named() {
        let desired = world_desired();
        let exact = Exact::of(&desired);
        assert_eq!(exact, Exact::of(&desired.clone()));
        let mut swapped = desired.clone();
        let (name, set) = (swapped.ruleset.sets.iter_mut())
            .find(|(_, set)| matches!(set, Set::Addresses { elements, .. } if !elements.is_empty()))
            .expect("an address set with elements");
        let Set::Addresses { elements, .. } = set else {
            unreachable!("matched above")
        };
        let first = elements.iter().next().expect("an element");
        elements.remove(&first);
        assert!(set.insert(Element::Address("10.99.99.99".parse().unwrap())));
        let name = name.clone();
        assert_eq!(
            Exact::of(&swapped).differences(&exact),
            [format!("set {name} (inet) not as written")]
        );
    }

    #[test]
    fn a_rule_unlike_the_one_written_and_a_chain_missing_are_named() {
        let desired = world_desired();
        let exact = Exact::of(&desired);
        let mut changed = desired.clone();
        let (chain, rules) = (changed.ruleset.chains.iter_mut())
            .find(|(_, c)| !c.rules.is_empty())
            .map(|(name, c)| (name.clone(), &mut c.rules))
            .expect("a chain with rules");
        rules[0].index += 1; // its comment
        let differences = Exact::of(&changed).differences(&exact);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(differences[0].starts_with(&format!("chain {chain}: rule 2 differs")));
        let mut gone = desired.clone();
        gone.ruleset.chains.remove(&chain);
        let differences = Exact::of(&gone).differences(&exact);
        assert!(differences.contains(&format!("chain {chain} (inet) missing")));
    }

    #[test]
    fn attributes_in_any_order_fold_alike_and_an_empty_nest_says_nothing() {
        use crate::dataplane::netlink::{push_attr, push_nested};
        let key = |out: &mut Vec<u8>| {
            push_nested(out, 1, |value| push_attr(value, 1, &[10, 0, 0, 2]));
        };
        let (mut in_order, mut reversed) = (Vec::new(), Vec::new());
        key(&mut in_order);
        push_attr(&mut in_order, 3, &1u32.to_be_bytes()); // flags
        push_attr(&mut reversed, 3, &1u32.to_be_bytes());
        key(&mut reversed);
        assert_eq!(
            canonical_of(&in_order, ELEMENT),
            canonical_of(&reversed, ELEMENT)
        );
        // Flags of zero and a key with nothing kept inside are as if not given.
        let mut bare = Vec::new();
        key(&mut bare);
        let mut padded = bare.clone();
        push_attr(&mut padded, 3, &0u32.to_be_bytes());
        push_nested(&mut padded, 10, |end| push_attr(end, 9, &[1]));
        assert_eq!(canonical_of(&padded, ELEMENT), canonical_of(&bare, ELEMENT));
        assert_ne!(
            canonical_of(&in_order, ELEMENT),
            canonical_of(&bare, ELEMENT)
        );
    }

    #[test]
    fn a_batch_folded_twice_is_swapped_in_not_added() {
        let batch = table::batch(&world_desired());
        let mut fold = Fold::default();
        fold.batch(&batch);
        fold.batch(&batch);
        assert_eq!(fold.finish(), Exact::of(&world_desired()));
    }

    #[test]
    fn messages_cut_anywhere_are_folded_without_panicking() {
        let batch = table::batch(&world_desired());
        let mut fold = Fold::default();
        for (kind, family, attrs) in batch.messages() {
            for cut in (0..attrs.len()).step_by(7) {
                fold.message(kind, family, &attrs[..cut]);
            }
        }
        let _ = fold.finish();
    }
}
