//! Connections a change revoked: conntrack accepts the packets of a flow it knows before any
//! policy chain sees them, so a connection opened while a policy allowed it would outlive the
//! policy that denies it. After each change the tracked flows are judged again by the rules
//! the kernel now holds, and those no longer allowed are deleted; their next packet is a new
//! connection, and dropped.

use std::sync::Arc;

use podwall_policy::interp::{allowed_here, Packet};
use podwall_policy::{Protocol, Ruleset};
use tokio::sync::Notify;

use super::Core;
use crate::dataplane::Flow;

/// Whether `rules` still allow `flow`: judged as its first packet, from the client to the
/// server it reached (the backend, after a Service's DNAT). A flow whose protocol carries no
/// port policy could name is not judged.
pub fn still_allowed(rules: &Ruleset, flow: &Flow) -> bool {
    let protocol = match flow.protocol {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        132 => Protocol::Sctp,
        _ => return true,
    };
    let packet = Packet {
        src: flow.src,
        dst: flow.server,
        protocol,
        port: flow.server_port,
    };
    allowed_here(rules, &packet)
}

impl Core {
    /// Woken after every change the kernel took: the flows it may have revoked are due.
    pub fn revocations(&self) -> Arc<Notify> {
        self.revocations.clone()
    }

    /// Of `flows`, those the rules in the kernel no longer allow. Only this needs the core's
    /// lock; the sweep lists and deletes flows outside it (`sync::revoke_flows`).
    pub fn revoked(&self, flows: Vec<Flow>) -> Vec<Flow> {
        flows
            .into_iter()
            .filter(|flow| !still_allowed(&self.applied.ruleset, flow))
            .collect()
    }
}
