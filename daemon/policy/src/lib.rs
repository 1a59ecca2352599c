//! The NetworkPolicy model, evaluator and compiler of podwall: pure, no I/O.
//!
//! - [`manifests::load`] turns manifest text into a [`Snapshot`] (the daemon's kube
//!   watchers build the same from API objects with the `from_api` conversions of [`model`]).
//! - [`evaluate()`] answers "is this connection allowed, and by which rule" from the policies.
//! - [`compile()`] and [`Compiler`] turn a snapshot into a [`Ruleset`] for one node: plain data
//!   that the dataplane renders to nftables.
//!
//! Test support, for this crate's tests and those of other crates, is behind the `testing`
//! feature: `interp` looks packets up in rulesets the way the kernel would, and `testworld`
//! builds the world of the upstream e2e suite.
//!
//! This crate may depend on API types and serialisation only: no filesystem, clock,
//! environment, async runtime or globals.
#![forbid(unsafe_code)]

pub mod compile;
pub mod diff;
pub mod error;
pub mod evaluate;
pub mod interp;
pub mod ipblock;
pub mod manifests;
pub mod model;
pub mod ruleset;
pub mod selector;
#[cfg(any(test, feature = "testing"))]
pub mod testworld;

pub use compile::{compile, Compiler, Event};
pub use error::{ModelError, Problem};
pub use evaluate::{evaluate, Endpoint, EvaluateError, Query, Verdict};
pub use ipblock::{Family, IpBlock, IpRange};
pub use model::{
    Direction, Namespace, ObjectKey, Pod, PodKey, Policy, PolicyKey, PolicyTier, Protocol, Snapshot,
};
pub use ruleset::{Chain, End, RuleVerdict, Ruleset, RulesetDelta, Set};
pub use selector::{Requirement, Selector};
