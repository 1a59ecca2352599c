//! A compiled [`Ruleset`] → the `nft -f` script that swaps both tables in one transaction.
//! The daemon writes the same tables over netlink (`table`); this text is the readable
//! reference: a root test requires the two to list alike, and the benchmarks time the
//! script as the path before. Pure, with golden tests; loading the output into a real kernel
//! is a root test (`tests/tests/integration/render.rs`).
//!
//! Shape (docs/design.md): every chain the compiler made is reached by `jump` from a dispatch
//! map; a rule that allows renders as `counter return`, so that traffic that passes a pod's
//! egress chain still meets the peer's ingress chain, and falling off the end of a chain
//! drops (`counter drop`; the counts are read back for `/metrics`).

use std::fmt::Write;
use std::net::IpAddr;

use podwall_policy::ruleset::Rule as PolicyRule;
use podwall_policy::{Direction, End, Family, Ruleset, Set};

use super::names::{
    hairpin_set, map_name, FAMILY, FORWARD_CHAIN, GUARD_CHAIN, GUARD_FAMILY, GUARD_PORTS,
    GUARD_SOURCES4, GUARD_SOURCES6, GUARD_TARGETS6, MAPS, OPEN_CHAIN, OUTPUT_CHAIN,
    QUARANTINE_CHAIN, TABLE,
};
use super::shape::{protocol, shape, Field, Ports};
use super::{Desired, Guard, Logging};

use super::logrules::verdict_text;
pub use super::logrules::{log_text, rule_hash, rule_log_prefix, rule_prefix, LogPrefix};

/// The base chains' dispatch, in order: a packet meets its source's egress chain before its
/// destination's ingress chain.
fn dispatch() -> impl Iterator<Item = (Family, &'static str, &'static str)> {
    [(Direction::Egress, "saddr"), (Direction::Ingress, "daddr")]
        .into_iter()
        .flat_map(|(direction, field)| {
            Family::ALL.map(|family| (family, field, map_name(direction, family)))
        })
}

/// How each base chain's rules read back from the kernel (see `Fingerprint`): four accepts
/// (established flows, hairpin in each family, the chain's exception), then the dispatch.
pub fn base_chain_fingerprint() -> Vec<String> {
    let accepts = ["accept"; 4].map(String::from);
    accepts
        .into_iter()
        .chain(dispatch().map(|(_, _, map)| format!("vmap @{map}")))
        .collect()
}

/// The script that replaces both tables with `desired`, as one transaction.
pub fn render(desired: &Desired) -> String {
    let mut out = String::new();
    render_guard(&mut out, &desired.guard);
    render_ruleset(&mut out, &desired.ruleset, desired.logging);
    out
}

/// The `bridge podwall` table: frames from a guarded pod's veth must carry one of its own
/// source addresses, in IP and in ARP (ARP probes, from 0.0.0.0, stay allowed). IPv6
/// link-local and unspecified sources are kept to what neighbour discovery, duplicate address
/// detection and multicast listener reports need, and a neighbour advertisement may claim
/// only the pod's own addresses (or a link-local one). No pod may advertise a router or send
/// redirects: that is the node's job.
fn render_guard(out: &mut impl Write, guard: &Guard) {
    let fam = GUARD_FAMILY;
    let _ = writeln!(
        out,
        "add table {fam} {TABLE}\ndelete table {fam} {TABLE}\ntable {fam} {TABLE} {{"
    );
    let ports: Vec<String> = guard
        .sources
        .keys()
        .map(|p| format!("\"{}\"", ifname(p)))
        .collect();
    let pairs = |v4: bool, text: fn(&IpAddr) -> String| -> Vec<String> {
        guard
            .sources
            .iter()
            .flat_map(|(p, ips)| {
                ips.iter()
                    .filter(move |ip| ip.is_ipv4() == v4)
                    .map(move |ip| format!("\"{}\" . {}", ifname(p), text(ip)))
            })
            .collect()
    };
    for (name, kind, elements) in [
        (GUARD_PORTS, "type ifname", ports),
        (
            GUARD_SOURCES4,
            "type ifname . ipv4_addr",
            pairs(true, IpAddr::to_string),
        ),
        (
            GUARD_SOURCES6,
            "type ifname . ipv6_addr",
            pairs(false, IpAddr::to_string),
        ),
        (
            GUARD_TARGETS6,
            "typeof iifname . @th,64,128",
            pairs(false, raw_address),
        ),
    ] {
        write_set(out, ("set", name), kind, "", &elements);
    }
    let _ = writeln!(
        out,
        "\tchain {GUARD_CHAIN} {{\n\t\ttype filter hook prerouting priority filter; policy accept;"
    );
    // One lookup decides whether a frame is a guarded pod's at all; the checks after it
    // each start with a cheap protocol match (every frame pays this chain, not only new
    // flows).
    let _ = writeln!(out, "\t\tiifname != @{GUARD_PORTS} accept");
    for rule in GUARD_RULES {
        let _ = writeln!(out, "\t\t{rule} drop");
    }
    let _ = writeln!(out, "\t}}\n}}");
}

/// What the guard drops from a guarded port (each rule ends in `drop`).
const GUARD_RULES: [&str; 7] = [
    "ether type ip iifname . ip saddr != @sources4",
    "ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @sources4",
    "ether type ip6 ip6 saddr != { ::, fe80::/10 } iifname . ip6 saddr != @sources6",
    "icmpv6 type { nd-router-advert, nd-redirect }",
    // 58 is ICMPv6: by number, since nft resolves that protocol's name through
    // /etc/protocols, which a minimal root (the image) does not have.
    "ip6 saddr { ::, fe80::/10 } meta l4proto != 58",
    "ip6 saddr { ::, fe80::/10 } icmpv6 type != { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld-listener-done, mld2-listener-report }",
    "icmpv6 type nd-neighbor-advert @th,64,16 & 0xffc0 != 0xfe80 iifname . @th,64,128 != @targets6",
];

/// An address as the integer nft reads a raw header field as.
pub fn raw_address(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("0x{:08x}", u32::from(*v4)),
        IpAddr::V6(v6) => format!("0x{:032x}", u128::from(*v6)),
    }
}

/// Interface names come from the CNI result; keep them to what Linux allows in one.
fn ifname(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
        .take(15)
        .collect()
}

/// How the guard chain's rules read back from the kernel: the port check, then the drops.
pub fn guard_fingerprint() -> Vec<String> {
    std::iter::once("accept")
        .chain(GUARD_RULES.map(|_| "drop"))
        .map(String::from)
        .collect()
}

/// The script that replaces the `inet podwall` table with `ruleset`, its chains logging
/// their drops when `logging` says so.
fn render_ruleset(out: &mut impl Write, ruleset: &Ruleset, logging: Option<Logging>) {
    // Creating then deleting makes the delete valid whether or not the table exists; the
    // whole script is one transaction, so no packet ever sees the table missing.
    let _ = writeln!(
        out,
        "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{"
    );
    for (name, set) in &ruleset.sets {
        render_set(out, name, set);
    }
    for family in Family::ALL {
        let pairs: Vec<String> = (ruleset.ingress.keys())
            .filter(|ip| Family::of(ip) == family)
            .map(|ip| format!("{ip} . {ip}"))
            .collect();
        let key = addr_type(family);
        write_set(
            out,
            ("set", hairpin_set(family)),
            &format!("type {key} . {key}"),
            "",
            &pairs,
        );
    }
    for (direction, family) in MAPS {
        let map = map_name(direction, family);
        let key = addr_type(family);
        let entries: Vec<String> = ruleset
            .map(direction)
            .iter()
            .filter(|(ip, _)| Family::of(ip) == family)
            .map(|(ip, chain)| format!("{ip} : jump {chain}"))
            .collect();
        write_set(
            out,
            ("map", map),
            &format!("type {key} : verdict"),
            "",
            &entries,
        );
    }
    // Pods talking through the bridge or routed by the node.
    base_chain(
        out,
        (FORWARD_CHAIN, "forward"),
        // Neighbour discovery between pods; router advertisements and redirects are the
        // node's (the guard drops them from pods).
        "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept",
    );
    // A packet with a pod's source sent by the node's own stack: kube-proxy's IPVS (DNAT at
    // LOCAL_IN, out through LOCAL_OUT with the client's address) or any proxy that keeps the
    // source. The node's own traffic (kubelet's probes, from its addresses) is not a pod's.
    base_chain(out, (OUTPUT_CHAIN, "output"), "fib saddr type local accept");
    let _ = writeln!(out, "\tchain {OPEN_CHAIN} {{\n\t\t{MIDSTREAM_DROP}\n\t}}");
    let _ = writeln!(out, "\tchain {QUARANTINE_CHAIN} {{\n\t\tdrop\n\t}}");
    for (name, chain) in &ruleset.chains {
        // A pod's chain sees only packets that start a flow (the forward chain accepted the
        // established ones); an invalid one has no flow to belong to.
        let _ = writeln!(
            out,
            "\tchain {name} {{\n\t\tct state invalid drop\n\t\t{MIDSTREAM_DROP}"
        );
        for rule in &chain.rules {
            let matched = rule_match(chain.direction, rule, ruleset);
            if let Some(prefix) = rule_log_prefix(name, rule, logging) {
                if let Some(logging) = logging {
                    let _ = writeln!(out, "\t\t{matched} {}", log_text(logging, &prefix));
                }
            }
            let comment = rule_comment(rule);
            let verdict = verdict_text(&rule.verdict);
            let _ = writeln!(out, "\t\t{matched} counter {verdict} comment \"{comment}\"");
        }
        match &chain.end {
            End::Drop => {
                if let Some(logging) = logging {
                    let _ = writeln!(out, "\t\t{}", log_text(logging, name));
                }
                let _ = writeln!(out, "\t\tcounter drop\n\t}}");
            }
            End::Return => {
                let _ = writeln!(out, "\t\tcounter return\n\t}}");
            }
            End::Goto(next) => {
                let _ = writeln!(out, "\t\tcounter goto {next}\n\t}}");
            }
        }
    }
    let _ = writeln!(out, "}}");
}

/// A base chain on `hook` (`chain` is its name and hook): established flows pass, a pod
/// reaching itself (hairpin) passes, then `exception`, then the dispatch to the pods' chains.
fn base_chain(out: &mut impl Write, (name, hook): (&str, &str), exception: &str) {
    let _ = writeln!(
        out,
        "\tchain {name} {{\n\t\ttype filter hook {hook} priority filter; policy accept;\n\
         \t\tct state established,related accept"
    );
    for family in Family::ALL {
        let ip = ip_keyword(family);
        let set = hairpin_set(family);
        let _ = writeln!(out, "\t\t{ip} saddr . {ip} daddr @{set} accept");
    }
    let _ = writeln!(out, "\t\t{exception}");
    for (family, field, map) in dispatch() {
        let _ = writeln!(out, "\t\t{} {field} vmap @{map}", ip_keyword(family));
    }
    let _ = writeln!(out, "\t}}");
}

/// A local pod's TCP packet that conntrack has not seen start (not a SYN) is the middle of a
/// connection whose entry was deleted because a change revoked it: dropped, in every chain
/// a pod is dispatched to, so that the other end cannot pick the connection up again in the
/// reverse direction (conntrack's loose pickup would make it a new flow that way).
pub const MIDSTREAM_DROP: &str = "ct state new tcp flags & (fin | syn | rst | ack) != syn drop";

fn addr_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

fn ip_keyword(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn render_set(out: &mut impl Write, name: &str, set: &Set) {
    let (kind, flags, elements): (String, &str, Vec<String>) = match set {
        Set::Addresses { family, elements } => (
            addr_type(*family).into(),
            "",
            elements.iter().map(|ip| ip.to_string()).collect(),
        ),
        Set::Intervals { family, ranges } => (
            addr_type(*family).into(),
            "\t\tflags interval\n",
            ranges
                .iter()
                .map(|r| {
                    if r.first == r.last {
                        r.first.to_string()
                    } else {
                        format!("{}-{}", r.first, r.last)
                    }
                })
                .collect(),
        ),
        Set::AddressPorts {
            family, elements, ..
        } => (
            format!("{} . inet_service", addr_type(*family)),
            "",
            elements
                .iter()
                .map(|(ip, port)| format!("{ip} . {port}"))
                .collect(),
        ),
    };
    write_set(
        out,
        ("set", name),
        &format!("type {kind}"),
        flags,
        &elements,
    );
}

/// One `set` or `map` (`object` is the keyword and the name) with its type (`type …` or
/// `typeof …`), flags and elements.
fn write_set(
    out: &mut impl Write,
    object: (&str, &str),
    kind: &str,
    flags: &str,
    elements: &[String],
) {
    let (keyword, name) = object;
    let _ = write!(out, "\t{keyword} {name} {{\n\t\t{kind}\n{flags}");
    if let Some((first, rest)) = elements.split_first() {
        let _ = write!(out, "\t\telements = {{ {first}");
        for element in rest {
            let _ = write!(out, ", {element}");
        }
        let _ = writeln!(out, " }}");
    }
    let _ = writeln!(out, "\t}}");
}

/// What one allow rule matches. The peer is the source of ingress traffic and the
/// destination of egress traffic; a named port is always resolved on the destination.
fn rule_match(direction: Direction, rule: &PolicyRule, ruleset: &Ruleset) -> String {
    let shape = shape(direction, rule, |set| {
        ruleset.sets.get(set).map(Set::family)
    });
    let mut parts = Vec::new();
    if let Some(family) = shape.family {
        parts.push(format!(
            "meta nfproto {}",
            if family == Family::V4 { "ipv4" } else { "ipv6" }
        ));
    }
    let ip = shape.family.map(ip_keyword).unwrap_or("ip");
    if let Some((field, set)) = &shape.peer {
        let field = match field {
            Field::Saddr => "saddr",
            Field::Daddr => "daddr",
        };
        parts.push(format!("{ip} {field} @{set}"));
    }
    match &shape.ports {
        Ports::Any => {}
        Ports::Protocol(p) => parts.push(format!("meta l4proto {}", protocol(*p).0)),
        Ports::Numbers {
            protocol: p,
            ranges,
        } => {
            let ports: Vec<String> = ranges
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            parts.push(format!(
                "meta l4proto {} th dport {{ {} }}",
                protocol(*p).0,
                ports.join(", ")
            ));
        }
        Ports::Named { protocol: p, set } => {
            parts.push(format!(
                "meta l4proto {} {ip} daddr . th dport @{set}",
                protocol(*p).0
            ));
        }
    }
    parts.join(" ")
}

/// nft refuses a comment longer than this many bytes, and with it the whole transaction.
pub const MAX_COMMENT: usize = 128;

/// The comment that ties a kernel rule to its policy rule: `ns/name#index`. Object names are
/// DNS labels, but manifests mode reads them unchecked: keep to characters that cannot end
/// the quoted string. A name may be 253 characters, so a comment that would pass nft's limit
/// keeps its head and index and replaces the rest with a hash of the whole: still readable,
/// still unique, and never a reason for the kernel to refuse a policy.
pub fn rule_comment(rule: &PolicyRule) -> String {
    let full: String = format!("{}/{}", rule.policy.namespace, rule.policy.name)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-./_".contains(*c))
        .collect();
    let index = format!("#{}", rule.index);
    if full.len() + index.len() <= MAX_COMMENT {
        return full + &index;
    }
    let hash = format!(
        "~{:016x}",
        podwall_policy::ruleset::names::stable_hash(full.as_bytes())
    );
    // Only ASCII is left, so any byte offset is a character boundary.
    let head = &full[..MAX_COMMENT - hash.len() - index.len()];
    format!("{head}{hash}{index}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use podwall_policy::manifests::load;
    use podwall_policy::ruleset::{PeerMatch, PortMatch};

    const WORLD: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: web}}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec:
  nodeName: n1
  containers: [{name: c, image: i, ports: [{containerPort: 5432, name: pg}]}]
status: {phase: Running, podIPs: [{ip: 10.1.0.7}, {ip: 'fd00::7'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: front, namespace: shop, labels: {app: front}}
spec: {nodeName: n2, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.1.0.5}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: shop}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIPs: [{ip: 10.1.0.8}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop, annotations: {podwall.io/log: allow}}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: front}}}]
    ports: [{port: pg}]
  - from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}]
    ports: [{port: 80, endPort: 90, protocol: UDP}]
";

    /// The world compiled for n1, whose pods db (10.1.0.7, fd00::7) and an unlabelled pod
    /// (10.1.0.8) are attached, db's veth guarded.
    pub(crate) fn world_desired() -> Desired {
        let loaded = load([("world.yaml", WORLD)]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let db: [std::net::IpAddr; 2] = ["10.1.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        let mut guard = Guard::default();
        guard
            .sources
            .insert("veth1234".into(), db.into_iter().collect());
        Desired {
            ruleset: podwall_policy::compile(&loaded.snapshot, "n1"),
            guard,
            logging: Some(Logging {
                group: 1027,
                rate: 1000,
            }),
        }
    }

    #[test]
    fn compiled_world_renders_to_the_golden_script() {
        assert_eq!(
            render(&world_desired()),
            include_str!("testdata/compiled_world.nft")
        );
    }

    #[test]
    fn interface_names_are_kept_to_what_linux_allows() {
        assert_eq!(ifname("veth\" ; drop ; \"x"), "vethdropx");
        assert_eq!(ifname("a-very-long-interface-name"), "a-very-long-int");
    }

    #[test]
    fn comments_cannot_break_out_of_their_quotes() {
        let mut ruleset = Ruleset::default();
        let rule = PolicyRule {
            family: None,
            peer: PeerMatch::Any,
            ports: PortMatch::Any,
            policy: podwall_policy::ObjectKey {
                namespace: "x".into(),
                name: "a\" ; drop ; \"".into(),
            },
            index: 0,
            log: false,
            verdict: Default::default(),
        };
        ruleset.chains.insert(
            "c".into(),
            podwall_policy::Chain {
                direction: Direction::Ingress,
                policies: vec![],
                rules: vec![rule],
                end: Default::default(),
                tier: Default::default(),
            },
        );
        let mut text = String::new();
        render_ruleset(&mut text, &ruleset, None);
        assert!(text.contains("return comment \"x/adrop#0\""), "{text}");
    }

    fn rule_of(namespace: &str, name: &str, index: usize) -> PolicyRule {
        PolicyRule {
            family: None,
            peer: PeerMatch::Any,
            ports: PortMatch::Any,
            policy: podwall_policy::ObjectKey {
                namespace: namespace.into(),
                name: name.into(),
            },
            index,
            log: false,
            verdict: Default::default(),
        }
    }

    #[test]
    fn comments_of_names_at_their_length_limits_fit_nft() {
        let namespace = "n".repeat(63);
        let long = rule_of(&namespace, &"p".repeat(253), 4_000_000);
        let comment = rule_comment(&long);
        assert!(comment.len() <= MAX_COMMENT, "{} bytes", comment.len());
        assert!(
            comment.starts_with(&format!("{namespace}/ppp")),
            "{comment}"
        );
        assert!(comment.ends_with("#4000000"), "{comment}");
        // Names that share their head stay apart.
        let other = rule_of(&namespace, &format!("{}q", "p".repeat(252)), 4_000_000);
        assert_ne!(rule_comment(&other), comment);
        // Short ones are unchanged.
        assert_eq!(rule_comment(&rule_of("x", "allow", 0)), "x/allow#0");
    }
}
