//! podwalld, the podwall node daemon, as a library so that its parts can be tested alone.
//!
//! The policy model and compiler live in the `podwall-policy` crate, which has no I/O; this
//! crate holds the dataplane (`dataplane`), the daemon's state (`core`) and the adapters: the
//! plugin socket (`server`), the sled store (`store`), the probes and `/metrics` (`http`).
#![forbid(unsafe_code)]

/// The commit this build is from (see build.rs), or `unknown`.
pub const COMMIT: &str = env!("PODWALL_COMMIT");

pub mod accept;
pub mod config;
pub mod core;
pub mod dataplane;
pub mod droplog;
pub mod explain;
pub mod health;
pub mod http;
pub mod metrics;
pub mod recover;
pub mod server;
pub mod sources;
pub mod store;
pub mod sync;
pub mod sysctl;
