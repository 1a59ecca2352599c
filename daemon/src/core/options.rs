//! What a core is told at start rather than learns.

use crate::dataplane::Logging;

/// How a core treats what it cannot know for itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Quarantine a local pod the source has not described (see `Pod::quarantined`).
    pub quarantine_unknown: bool,
    /// The runtime's libcni cache, to rebuild attachment records the store cannot read.
    pub cni_cache: Option<std::path::PathBuf>,
    /// Whether the pod chains log what they drop (the drop log is bound).
    pub logging: Option<Logging>,
}
