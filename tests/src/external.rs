//! A host outside the cluster: its own network namespace, joined to one node by a veth
//! pair, at a documentation address (RFC 5737: 192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24).
//!
//! The node routes to it (`<addr>/32 dev <veth>`), and it routes everything back through the
//! node, using the pods' gateway (the bridge address) as its next hop. Pods reach it through
//! their default route via the node, so pod↔external traffic is routed by the node and meets
//! its `forward` hook, as traffic to and from outside the cluster does on a real node. The
//! address exists only inside these two namespaces: nothing leaves them.

use std::net::IpAddr;

use crate::cmd::Output;
use crate::netns::{next_id, TestNetns};
use crate::node::Node;

/// An external host attached to a node.
#[derive(Debug)]
pub struct ExternalHost {
    pub netns: TestNetns,
    addr: IpAddr,
}

impl ExternalHost {
    /// A host at `addr` (IPv4), reachable from `node` and from its pods. Panics when the
    /// links or routes cannot be set up.
    pub fn attach(node: &Node, addr: &str) -> Self {
        let addr: IpAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("external address {addr}: {e}"));
        assert!(addr.is_ipv4(), "external hosts are IPv4: {addr}");
        let netns = TestNetns::new("ext");
        let host = ExternalHost { netns, addr };
        // Interface names live in the node's namespace only, so a per-process counter keeps
        // them unique; the host's end is moved into its namespace at creation.
        let veth = format!("pwx{}", next_id() % 100_000);
        let gw = node.gateway4().to_string();
        let in_node = |words: &[&str]| {
            node.netns
                .exec(words)
                .and_then(Output::ok)
                .unwrap_or_else(|e| panic!("setting up external host {addr}: {e:#}"));
        };
        in_node(&[
            "ip",
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.netns.name(),
        ]);
        in_node(&["ip", "link", "set", &veth, "up"]);
        in_node(&["ip", "route", "add", &format!("{addr}/32"), "dev", &veth]);
        let in_host = |words: &[&str]| {
            host.netns
                .exec(words)
                .and_then(Output::ok)
                .unwrap_or_else(|e| panic!("setting up external host {addr}: {e:#}"));
        };
        in_host(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
        in_host(&["ip", "link", "set", "eth0", "up"]);
        in_host(&["ip", "route", "add", &format!("{gw}/32"), "dev", "eth0"]);
        in_host(&["ip", "route", "add", "default", "via", &gw, "dev", "eth0"]);
        host
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }
}
