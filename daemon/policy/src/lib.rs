//! The NetworkPolicy model, evaluator and compiler of podwall: pure, no I/O.
//!
//! - [`manifests::load`] turns manifest text into a [`Snapshot`] (the daemon's kube
//!   watchers build the same from API objects with the `from_api` conversions of [`model`]).
//! - [`evaluate()`] answers "is this connection allowed, and by which rule" from the policies.
//! - [`compile()`] and [`Compiler`] turn a snapshot into a [`Ruleset`] for one node: plain data
//!   that the dataplane renders to nftables, and that [`interp`] looks packets up in the way
//!   the kernel would.
//!
//! This crate may depend on API types and serialisation only: no filesystem, clock,
//! environment, async runtime or globals.
#![forbid(unsafe_code)]

pub mod compile;
pub mod evaluate;
pub mod interp;
pub mod ipblock;
pub mod manifests;
pub mod model;
pub mod report;
pub mod ruleset;
pub mod selector;
#[cfg(test)]
mod testworld;

pub use compile::{compile, Compiler, Event};
pub use evaluate::{evaluate, Endpoint, EvaluateError, Query, Verdict};
pub use ipblock::{IpBlock, IpRange};
pub use model::{
    Direction, Family, ModelError, Namespace, ObjectKey, Pod, PodKey, Policy, PolicyKey, Problem,
    Protocol, Snapshot,
};
pub use ruleset::{Chain, Ruleset, RulesetDelta, Set};
pub use selector::{Requirement, Selector};
