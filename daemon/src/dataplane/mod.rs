//! The kernel side: podwall's nftables table as plain data (`Table`), the pure difference
//! between two tables (`plan` → `Batch`), and the narrow `Kernel` trait that commits a batch
//! as one transaction and reads the table back.
//!
//! Knows nftables, knows nothing of Kubernetes. `nft.rs` alone runs a program and
//! `netlink.rs` alone opens a socket.

pub mod compiled;
pub mod names;
pub mod netlink;
pub mod nft;
pub mod render;

use std::collections::BTreeMap;
use std::net::IpAddr;

/// One of the four dispatch maps: which way traffic flows relative to the pod, and the
/// address family of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapName {
    Ingress4,
    Egress4,
    Ingress6,
    Egress6,
}

impl MapName {
    pub const ALL: [MapName; 4] = [
        MapName::Ingress4,
        MapName::Egress4,
        MapName::Ingress6,
        MapName::Egress6,
    ];

    pub fn ingress(addr: &IpAddr) -> Self {
        if addr.is_ipv4() {
            MapName::Ingress4
        } else {
            MapName::Ingress6
        }
    }

    pub fn egress(addr: &IpAddr) -> Self {
        if addr.is_ipv4() {
            MapName::Egress4
        } else {
            MapName::Egress6
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MapName::Ingress4 => "ingress4",
            MapName::Egress4 => "egress4",
            MapName::Ingress6 => "ingress6",
            MapName::Egress6 => "egress6",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    pub fn is_ipv4(self) -> bool {
        matches!(self, MapName::Ingress4 | MapName::Egress4)
    }
}

/// A statement in one of our chains. Typed, so that plans compare values, not text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Replies and related flows of connections that were allowed when they started.
    AcceptEstablished,
    /// Dispatch on the source (egress maps) or destination (ingress maps) address.
    Dispatch(MapName),
    /// End of a pod's egress chain with nothing against it: go on to the peer's ingress.
    Return,
    Accept,
    /// A rule read back from the kernel that podwall would not have written (drift).
    Unrecognized(String),
}

/// Where a base chain hooks in; regular chains have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Forward,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// The whole `inet podwall` table as we want it (or as we applied it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub chains: BTreeMap<String, Chain>,
    /// Every dispatch map exists in every table; elements map an address to the chain to jump to.
    pub maps: BTreeMap<MapName, BTreeMap<IpAddr, String>>,
}

impl Table {
    /// The skeleton every table has: the maps and the forward base chain dispatching on them.
    pub fn base() -> Self {
        let mut rules = vec![Rule::AcceptEstablished];
        rules.extend(
            [
                MapName::Egress4,
                MapName::Egress6,
                MapName::Ingress4,
                MapName::Ingress6,
            ]
            .map(Rule::Dispatch),
        );
        let mut table = Table::default();
        table.chains.insert(
            names::FORWARD_CHAIN.to_string(),
            Chain {
                hook: Some(Hook::Forward),
                rules,
            },
        );
        for map in MapName::ALL {
            table.maps.insert(map, BTreeMap::new());
        }
        table
    }

    pub fn element(&self, map: MapName, addr: &IpAddr) -> Option<&str> {
        self.maps
            .get(&map)
            .and_then(|m| m.get(addr))
            .map(String::as_str)
    }
}

/// One change to the table. A `Batch` of them is committed as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the table, its maps and its base chains (a no-op for what exists).
    EnsureSkeleton(Box<Table>),
    /// Create a chain, or replace the rules of an existing one.
    SetChain {
        name: String,
        chain: Chain,
    },
    DeleteChain {
        name: String,
    },
    AddElement {
        map: MapName,
        addr: IpAddr,
        chain: String,
    },
    DeleteElement {
        map: MapName,
        addr: IpAddr,
    },
}

/// Operations in an order the kernel accepts: chains before the elements that jump to them,
/// elements before the chains they point at are deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// The smallest batch that turns `applied` into `desired`. `applied: None` means the kernel
/// has no table of ours (first start, or someone deleted it).
pub fn plan(applied: Option<&Table>, desired: &Table) -> Batch {
    let mut ops = Vec::new();
    let skeleton;
    let applied = match applied {
        Some(table) => table,
        None => {
            skeleton = skeleton_of(desired);
            ops.push(Op::EnsureSkeleton(Box::new(skeleton.clone())));
            &skeleton
        }
    };
    // Element deletions and changes come first, so no element ever points at a missing chain.
    for (map, elements) in &applied.maps {
        for (addr, chain) in elements {
            if desired.element(*map, addr) != Some(chain.as_str()) {
                ops.push(Op::DeleteElement {
                    map: *map,
                    addr: *addr,
                });
            }
        }
    }
    for (name, chain) in &desired.chains {
        if applied.chains.get(name) != Some(chain) {
            ops.push(Op::SetChain {
                name: name.clone(),
                chain: chain.clone(),
            });
        }
    }
    for (map, elements) in &desired.maps {
        for (addr, chain) in elements {
            if applied.element(*map, addr) != Some(chain.as_str()) {
                ops.push(Op::AddElement {
                    map: *map,
                    addr: *addr,
                    chain: chain.clone(),
                });
            }
        }
    }
    for name in applied.chains.keys() {
        if !desired.chains.contains_key(name) {
            ops.push(Op::DeleteChain { name: name.clone() });
        }
    }
    Batch { ops }
}

/// The maps and base chains of a table, without pod chains or elements.
fn skeleton_of(table: &Table) -> Table {
    Table {
        chains: table
            .chains
            .iter()
            .filter(|(_, c)| c.hook.is_some())
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect(),
        maps: table.maps.keys().map(|m| (*m, BTreeMap::new())).collect(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused the whole transaction; nothing changed.
    #[error("nftables transaction rejected ({ops} operations): {detail}")]
    Rejected { ops: usize, detail: String },
    /// `nft` could not be run at all.
    #[error("cannot run {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel's answer could not be understood.
    #[error("cannot read the podwall table back: {0}")]
    Dump(String),
}

/// The kernel, as far as podwall needs it. Production uses `nft::NftKernel`; tests use
/// `RecordingKernel`.
pub trait Kernel: Send {
    /// Commit the batch as one transaction: all of it or nothing.
    fn apply(&mut self, batch: &Batch) -> Result<(), DataplaneError>;
    /// Read our table back: `None` when it does not exist.
    fn dump_table(&mut self) -> Result<Option<Table>, DataplaneError>;
    /// Replace the whole table in one transaction (start-up, repair), never leaving a moment
    /// without rules.
    fn replace(&mut self, desired: &Table) -> Result<(), DataplaneError>;
}

/// A kernel that keeps every batch and the resulting table in memory.
#[derive(Debug, Default)]
pub struct RecordingKernel {
    pub batches: Vec<Batch>,
    pub table: Option<Table>,
    /// When set, the next `apply` fails with this detail and changes nothing.
    pub fail_next: Option<String>,
}

impl Kernel for RecordingKernel {
    fn apply(&mut self, batch: &Batch) -> Result<(), DataplaneError> {
        if let Some(detail) = self.fail_next.take() {
            return Err(DataplaneError::Rejected {
                ops: batch.len(),
                detail,
            });
        }
        let mut table = self.table.clone().unwrap_or_default();
        for op in &batch.ops {
            match op {
                Op::EnsureSkeleton(skeleton) => {
                    for (name, chain) in &skeleton.chains {
                        table
                            .chains
                            .entry(name.clone())
                            .or_insert_with(|| chain.clone());
                    }
                    for map in skeleton.maps.keys() {
                        table.maps.entry(*map).or_default();
                    }
                }
                Op::SetChain { name, chain } => {
                    table.chains.insert(name.clone(), chain.clone());
                }
                Op::DeleteChain { name } => {
                    table.chains.remove(name);
                }
                Op::AddElement { map, addr, chain } => {
                    table
                        .maps
                        .entry(*map)
                        .or_default()
                        .insert(*addr, chain.clone());
                }
                Op::DeleteElement { map, addr } => {
                    table.maps.entry(*map).or_default().remove(addr);
                }
            }
        }
        self.table = Some(table);
        self.batches.push(batch.clone());
        Ok(())
    }

    fn dump_table(&mut self) -> Result<Option<Table>, DataplaneError> {
        Ok(self.table.clone())
    }

    fn replace(&mut self, desired: &Table) -> Result<(), DataplaneError> {
        self.table = Some(desired.clone());
        self.batches.push(plan(None, desired));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_pod(mut table: Table, addr: &str, chain: &str) -> Table {
        let addr: IpAddr = addr.parse().unwrap();
        table.chains.insert(
            format!("{chain}-in"),
            Chain {
                hook: None,
                rules: vec![Rule::Accept],
            },
        );
        table.chains.insert(
            format!("{chain}-out"),
            Chain {
                hook: None,
                rules: vec![Rule::Return],
            },
        );
        table
            .maps
            .get_mut(&MapName::ingress(&addr))
            .unwrap()
            .insert(addr, format!("{chain}-in"));
        table
            .maps
            .get_mut(&MapName::egress(&addr))
            .unwrap()
            .insert(addr, format!("{chain}-out"));
        table
    }

    #[test]
    fn identical_tables_need_no_change() {
        let t = with_pod(Table::base(), "10.0.0.2", "pod-a");
        assert!(plan(Some(&t), &t).is_empty());
    }

    #[test]
    fn adding_a_pod_adds_its_chains_before_the_elements_that_jump_to_them() {
        let before = Table::base();
        let after = with_pod(before.clone(), "10.0.0.2", "pod-a");
        let ops = plan(Some(&before), &after).ops;
        assert_eq!(ops.len(), 4, "{ops:?}");
        let first_element = ops
            .iter()
            .position(|o| matches!(o, Op::AddElement { .. }))
            .unwrap();
        assert!(ops[..first_element]
            .iter()
            .all(|o| matches!(o, Op::SetChain { .. })));
    }

    #[test]
    fn removing_a_pod_deletes_elements_before_chains() {
        let before = with_pod(
            with_pod(Table::base(), "10.0.0.2", "pod-a"),
            "10.0.0.3",
            "pod-b",
        );
        let after = with_pod(Table::base(), "10.0.0.3", "pod-b");
        let ops = plan(Some(&before), &after).ops;
        assert_eq!(
            ops,
            vec![
                Op::DeleteElement {
                    map: MapName::Ingress4,
                    addr: "10.0.0.2".parse().unwrap()
                },
                Op::DeleteElement {
                    map: MapName::Egress4,
                    addr: "10.0.0.2".parse().unwrap()
                },
                Op::DeleteChain {
                    name: "pod-a-in".into()
                },
                Op::DeleteChain {
                    name: "pod-a-out".into()
                },
            ]
        );
    }

    #[test]
    fn a_missing_table_is_planned_from_scratch() {
        let desired = with_pod(Table::base(), "fd00::2", "pod-a");
        let batch = plan(None, &desired);
        assert!(matches!(batch.ops[0], Op::EnsureSkeleton(_)));
        let mut kernel = RecordingKernel::default();
        kernel.apply(&batch).unwrap();
        assert_eq!(kernel.table.as_ref(), Some(&desired));
    }

    #[test]
    fn a_flushed_chain_is_refilled() {
        let desired = with_pod(Table::base(), "10.0.0.2", "pod-a");
        let mut drifted = desired.clone();
        drifted.chains.get_mut("pod-a-in").unwrap().rules.clear();
        assert_eq!(
            plan(Some(&drifted), &desired).ops,
            vec![Op::SetChain {
                name: "pod-a-in".into(),
                chain: desired.chains["pod-a-in"].clone()
            }]
        );
    }

    #[test]
    fn a_rejected_batch_changes_nothing() {
        let mut kernel = RecordingKernel {
            fail_next: Some("boom".into()),
            ..Default::default()
        };
        let desired = Table::base();
        assert!(kernel.apply(&plan(None, &desired)).is_err());
        assert_eq!(kernel.table, None);
        assert!(kernel.batches.is_empty());
    }
}
