//! The kernel side: turns compiled rulesets and their deltas into nftables transactions, and
//! reads the table back for checks and reconcile.
//!
//! Knows nftables, knows nothing of Kubernetes. `nft.rs` alone runs a program and
//! `netlink.rs` alone opens a socket. Every change is one kernel transaction:
//! - a change of elements only (a pod attached, detached or relabelled, a peer appearing)
//!   goes over netlink as set/map element messages (`elements`);
//! - a change of structure (a policy added, changed or removed, the first pod of a new
//!   policy group) goes over netlink too, as the sets, chains and rules that change with
//!   their elements (`structure`, `exprs`);
//!
//! so a change costs what it changes, whatever the table's size. Both tables are swapped in
//! whole, one netlink batch too (`table`), only at start, to repair drift or a refused
//! change, and as the fallback when the kernel refuses a structural batch. `render` writes
//! the same tables as `nft -f` text: the reference a root test holds the batches to. The
//! read-back (`exact`) folds the kernel's dumps and the batch that writes a state the same
//! way, so that equal means the kernel holds exactly that state.

pub mod batch;
pub mod conntrack;
pub mod counters;
pub mod elements;
mod encode;
pub mod exact;
mod exprs;
mod fingerprint;
mod guard;
pub mod handover;
pub mod listing;
mod logrules;
pub mod names;
pub mod netlink;
pub mod nflog;
pub mod nft;
pub mod ports;
#[cfg(test)]
mod recording;
pub mod render;
mod sets;
mod shape;
pub mod structure;
mod table;
mod transaction;

use podwall_policy::Ruleset;

pub use conntrack::{Conntrack, Flow, FlowTable};
pub use elements::{ElementOp, Key};
pub use exact::Exact;
pub use fingerprint::{entries_of, Fingerprint};
pub use guard::Guard;
pub use handover::{Digest, Handover, TablesId};
#[cfg(test)]
pub use recording::{Call, RecordingKernel};
pub use structure::Structure;
pub use transaction::{transaction_for, Transaction};

/// Everything podwall keeps in the kernel: the compiled policy table, the guard, and
/// whether the pod chains log what they drop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub ruleset: Ruleset,
    pub guard: Guard,
    pub logging: Option<Logging>,
}

/// The pod chains' log rules: a packet a chain drops is sent to nfnetlink_log `group` (the
/// daemon's drop log reads it), at most `rate` a second per chain, so that a flood costs the
/// kernel and the daemon a bounded amount. The log rule is a rule of its own before the
/// final `counter drop`: over the rate it does not match, and the packet is still dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    pub group: u16,
    pub rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused the whole transaction; nothing changed.
    #[error("nftables transaction rejected ({ops} operations): {detail}")]
    Rejected { ops: usize, detail: String },
    /// `nft` or the netlink socket could not be used at all.
    #[error("cannot use {program}")]
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
    /// Swap our tables for the ones `desired` renders to, in one transaction, never leaving
    /// a moment without rules.
    fn replace(&mut self, desired: &Desired) -> Result<(), DataplaneError>;
    /// Change elements of existing sets and maps, in one transaction.
    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError>;
    /// Add, change and delete sets and chains, with element changes, in one transaction.
    fn apply_structure(&mut self, structure: &Structure) -> Result<(), DataplaneError>;
    /// Read our table back: `None` when it does not exist.
    fn dump(&mut self) -> Result<Option<Fingerprint>, DataplaneError>;
    /// Read both tables back exactly (see `exact`): `None` when the policy table does not
    /// exist.
    fn exact(&mut self) -> Result<Option<Exact>, DataplaneError>;
    /// Which tables the kernel holds (see `handover`): `None` when the policy table does not
    /// exist. Cheap: it lists the tables, not what they hold.
    fn tables_id(&mut self) -> Result<Option<TablesId>, DataplaneError>;
    /// Forget every flow conntrack tracks from or to one of `ips` (see
    /// `conntrack::involving`); how many there were.
    fn forget_flows_of(&mut self, ips: &[std::net::IpAddr]) -> Result<usize, DataplaneError>;
    /// The host-side interface (bridge port) each of `ips` is behind, where known.
    fn host_ports(
        &mut self,
        ips: &std::collections::BTreeSet<std::net::IpAddr>,
    ) -> Result<std::collections::BTreeMap<std::net::IpAddr, String>, DataplaneError>;
}
