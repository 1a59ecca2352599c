//! What one daemon leaves the next: at a clean stop, which tables the kernel holds and a
//! digest of what they hold; at start, whether they are still those tables. When they are
//! and the start compiles to the same digest, the table is kept as it is instead of being
//! swapped in again, so a restart does not rewrite the table (the cost of a restart that
//! grows most with the cluster). The digest is of the exact fold (`exact`) of what the
//! batch that swaps a state in writes, which the start's read-back needs anyway.
//!
//! "The same tables" is decided by identity, not content: the boot, the network namespace,
//! and the handles the kernel gave both tables. The kernel numbers tables per namespace and
//! never reuses a number within a boot, so a table deleted and created again (a cleanup, a
//! flushed ruleset, another daemon) is a different table. An edit inside the tables by hand
//! is not seen here; the read-back that follows every kept start finds it.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::Exact;

/// Which tables the kernel holds: the same boot, namespace and handles mean the same tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablesId {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot: String,
    /// The inode of the network namespace the tables are in.
    pub netns: u64,
    /// The kernel's handle of each of podwall's tables, by family.
    pub handles: Vec<(String, u64)>,
}

/// The kernel as a clean stop left it: these tables, holding what `digest` was taken of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub tables: TablesId,
    pub digest: Digest,
}

/// A digest of the tables a desired state puts in the kernel, taken of their exact fold:
/// of the bytes this build writes, so that a daemon that writes the same ruleset as other
/// rules, sets or attributes (another version) never keeps a table an older one wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub hash: u64,
}

impl Digest {
    pub fn of(exact: &Exact) -> Self {
        // SipHash with fixed keys: the same fold gives the same digest in every process of
        // one build; another build may differ, which only costs the swap.
        let mut hasher = std::hash::DefaultHasher::new();
        exact.hash(&mut hasher);
        Self {
            hash: hasher.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::render::tests::world_desired;
    use crate::dataplane::Desired;

    #[test]
    fn a_digest_follows_the_folded_table() {
        let desired = world_desired();
        let digest = |desired: &Desired| Digest::of(&Exact::of(desired));
        assert_eq!(digest(&desired), digest(&desired.clone()));
        // One address more in one set, one guarded port fewer: each is another digest.
        let mut more = desired.clone();
        let set = more.ruleset.sets.values_mut().find(|s| {
            matches!(
                s,
                podwall_policy::Set::Addresses {
                    family: podwall_policy::ipblock::Family::V4,
                    ..
                }
            )
        });
        assert!(set
            .expect("an address set")
            .insert(podwall_policy::ruleset::Element::Address(
                "10.9.9.9".parse().unwrap()
            )));
        assert_ne!(digest(&more), digest(&desired));
        let mut unguarded = desired.clone();
        unguarded.guard.sources.clear();
        assert_ne!(digest(&unguarded), digest(&desired));
        assert_ne!(digest(&Desired::default()), digest(&desired));
    }
}
