//! podwalld, the podwall node daemon, as a library so that its parts can be tested alone.
//!
//! Layers point inward: `policy` (pure) knows nothing of `dataplane`, the adapters or tokio.
#![forbid(unsafe_code)]

pub mod explain;
pub mod model;
pub mod policy;
